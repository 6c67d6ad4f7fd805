"""The one exception type users see.

Anything raised as :class:`FidanError` is printed by the CLI as a single line (no traceback):
it names the input that is wrong and says what to do. Everything else is a bug and keeps its
traceback.
"""


class FidanError(Exception):
    """A problem with the user's input, files or environment, explained in one line."""
