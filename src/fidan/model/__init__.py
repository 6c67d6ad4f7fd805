"""The GPT decoder (gpt.py), its shape (config.py, no torch needed) and its key/value cache."""
