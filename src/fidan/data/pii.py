"""Personal data scrubbing: emails, phone numbers, IP addresses, IBANs and Turkish identity numbers
are replaced by placeholders (``<EMAIL>``, ``<PHONE>``, ``<IP>``, ``<IBAN>``, ``<TCKN>``).

Numbers are only taken for personal data when they have the right shape and, where one exists,
a valid checksum (the IBAN's mod-97, the identity number's two check digits), so prices, years and
populations in ordinary text are left alone. Identity numbers are matched before phone numbers,
because an 11-digit identity number also looks like a phone number.
"""
from __future__ import annotations

import re
from collections import Counter

EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[a-zA-Z]{2,}\b")
IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b")
TCKN = re.compile(r"(?<![\d.+-])[1-9]\d{10}(?![\d])")
IPV4 = re.compile(r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)(?![\d.]\d)")
PHONE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?)?\d{2,4}(?:[ .-]?\d{2,4}){2,4}(?!\w)")


def iban_valid(raw: str) -> bool:
    s = raw.replace(" ", "")
    if not 15 <= len(s) <= 34:
        return False
    digits = "".join(str(int(c, 36)) for c in s[4:] + s[:4])
    return int(digits) % 97 == 1


def tckn_valid(s: str) -> bool:
    d = [int(c) for c in s]
    if len(d) != 11 or d[0] == 0:
        return False
    return (d[9] == ((d[0] + d[2] + d[4] + d[6] + d[8]) * 7 - (d[1] + d[3] + d[5] + d[7])) % 10
            and d[10] == sum(d[:10]) % 10)


def _phone_like(s: str) -> bool:
    digits = sum(c.isdigit() for c in s)
    return 10 <= digits <= 15 and (s.startswith(("+", "(", "0")) or any(c in s for c in " -.()"))


def scrub(text: str) -> tuple[str, Counter]:
    """Text with personal data replaced, and how many of each kind were replaced."""
    found: Counter = Counter()

    def sub(pattern: re.Pattern, tag: str, valid=lambda s: True) -> None:
        nonlocal text

        def repl(m: re.Match) -> str:
            if not valid(m.group(0)):
                return m.group(0)
            found[tag] += 1
            return f"<{tag}>"
        text = pattern.sub(repl, text)

    sub(EMAIL, "EMAIL")
    sub(IBAN, "IBAN", iban_valid)
    sub(TCKN, "TCKN", tckn_valid)
    sub(IPV4, "IP")
    sub(PHONE, "PHONE", _phone_like)
    return text, found
