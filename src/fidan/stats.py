"""Confidence intervals for the shares fidan reports: the Wilson score interval (scipy's), which
stays inside [0, 1] and behaves at 0% and 100% where the normal approximation does not."""
from __future__ import annotations

from scipy.stats import binomtest


def wilson(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The ``confidence`` Wilson interval of ``successes / n`` (``(0, 1)`` when ``n`` is 0)."""
    if n <= 0:
        return 0.0, 1.0
    ci = binomtest(int(successes), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return round(float(ci.low), 4), round(float(ci.high), 4)


def share(flags: list[bool], extra: dict | None = None) -> dict:
    """``{"share", "lo", "hi", "n"}`` for a list of yes/no outcomes."""
    n, k = len(flags), sum(bool(f) for f in flags)
    lo, hi = wilson(k, n)
    return {"share": round(k / n, 4) if n else 0.0, "lo": lo, "hi": hi, "n": n, **(extra or {})}


def wilson_difference(a: int, b: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Newcombe's interval (his method 10) for ``b/n - a/n``, made from the two Wilson intervals;
    for two models answering the same ``n`` items it is conservative (it ignores the pairing)."""
    (la, ha), (lb, hb) = wilson(a, n, confidence), wilson(b, n, confidence)
    pa, pb = a / max(n, 1), b / max(n, 1)
    d = pb - pa
    return (round(d - ((pb - lb) ** 2 + (ha - pa) ** 2) ** 0.5, 4),
            round(d + ((hb - pb) ** 2 + (pa - la) ** 2) ** 0.5, 4))
