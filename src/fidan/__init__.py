"""fidan: grow a small ChatGPT-style assistant from raw text, stage by stage."""

__version__ = "0.1.0"

# Version of the run-directory layout. A run directory written by another layout version is
# refused with a clear message instead of being half-read.
RUN_FORMAT = 1
