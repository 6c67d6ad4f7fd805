"""Unicode and whitespace normalisation, the first cleaning step.

NFC composition (so "ü" typed as u + combining diaeresis equals the precomposed letter), Windows
and old-Mac line ends to ``\\n``, non-breaking and other exotic spaces to a plain space, control
and zero-width characters removed, runs of spaces collapsed, trailing spaces stripped, and at most
one blank line between paragraphs. NFKC is not used: it would rewrite ligatures, superscripts and
full-width forms that can carry meaning.
"""
from __future__ import annotations

import re
import unicodedata

# Runs of two or more spaces, or one space that is not a plain one: a lone " " is left alone
# (replacing it with itself would cost a match per word).
_ODD = r"\t\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000"
_SPACES = re.compile(f"[ {_ODD}]{{2,}}|[{_ODD}]")
_INVISIBLE = re.compile(r"[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f\u200b-\u200d\u2060\ufeff]")
_BLANK_LINES = re.compile(r"\n{3,}")


def normalize(text: str) -> str:
    text = unicodedata.normalize("NFC", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\u2028", "\n").replace("\u2029", "\n\n")
    text = _INVISIBLE.sub("", text)
    text = _SPACES.sub(" ", text)
    text = "\n".join(line.strip() for line in text.split("\n"))
    return _BLANK_LINES.sub("\n\n", text).strip()
