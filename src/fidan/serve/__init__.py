"""Using a model: sampling, streaming generation, the chat REPL."""
