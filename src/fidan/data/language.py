"""Language identification with py3langid (its model ships inside the wheel; nothing is downloaded).

Probabilities are normalised over all 97 languages the model knows, so the confidence threshold
means the same thing whatever the keep-list is.
"""
from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def _identifier():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier
    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def identify(text: str) -> tuple[str, float]:
    """(ISO 639-1 code, probability) of the most likely language of ``text``."""
    lang, prob = _identifier().classify(text[:20_000])
    return lang, float(prob)
