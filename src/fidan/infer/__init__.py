"""Inference every later layer shares: the decoding engine (KV cache, batched rows, per-row
sampling, stop strings), log-likelihood scoring and greedy completion, and chat-form answers to
held-out questions. Fine-tuning, evaluation, alignment and serving all generate through here."""
