"""Commands that run several stages or several variants of one (``fidan methods``,
``fidan rlhf-compare``); they sit above the stage table and call stages through it."""
