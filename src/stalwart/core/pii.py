"""Finding personal data and secrets in what is about to be logged or audited, and hiding them.

Two ways a value is recognised:

- by the **key** it is under: names of secrets (password, token, cookie, ...) and of personal
  data (email, phone, iban, and the columns that models mark ``PII``/``SECRET``);
- by its **content**, in any free text: e-mail addresses, phone numbers (international
  ``+CC ...``, national numbers with a trunk ``0`` or ``00`` prefix, North American
  ``(555) 123-4567``; at least 9 digits) and IBANs (country length and mod-97 checksum
  checked, so random upper-case strings are left alone).

A found value becomes a fixed marker (``[email]``, ``[phone]``, ``[iban]``, ``[redacted]``) in
``mask`` mode, or a keyed pseudonym (``email:<12 hex of HMAC-SHA256>``) in ``hash`` mode, so
that equal values can be matched across lines without being shown. Secrets are never
pseudonymised: a digest of a password is something to guess against.

The detector is pure (no I/O, no globals that change) and cheap on text that holds nothing:
strings without an ``@`` and without a digit are returned untouched after one scan.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from string import ascii_uppercase
from typing import Any, Final, Literal

Mode = Literal["mask", "hash"]
MODES: Final = ("mask", "hash")
REDACTED: Final = "[redacted]"
MARKERS: Final = {
    "email": "[email]",
    "phone": "[phone]",
    "iban": "[iban]",
    "pii": REDACTED,
    "secret": REDACTED,
}

#: substrings of a key (lower-cased, without ``_``/``-``) that name a secret
SECRET_WORDS: Final = (
    "password",
    "passwd",
    "secret",
    "token",
    "authorization",
    "cookie",
    "apikey",
)
#: substrings of a key that name personal data, with the kind their values are
PII_WORDS: Final = (("email", "email"), ("phone", "phone"), ("iban", "iban"))

# Lists nest only so deep in a log line; deeper values are shown as masked text.
_MAX_DEPTH: Final = 12

_EMAIL: Final = re.compile(
    # A local part starting at the beginning of a token (bounded, so scanning stays linear;
    # not a URL's user@host), an @ (or its URL encoding), labels and a top-level domain.
    r"(?<![\w.%+\-])(?<!//)[\w.%+\-]{1,64}(?:@|%40)"
    r"(?:[^\W_](?:[\w\-]{0,61}[^\W_])?\.)+[^\W\d_]{2,24}(?![\w\-])"
)
_IBAN: Final = re.compile(
    # Country, check digits, then groups of four (with or without single spaces) and a short
    # tail. What follows may be a word: ``_valid_end`` cuts the candidate to its country's length.
    r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?:\ ?[A-Z0-9]{4}){2,7}(?:\ ?[A-Z0-9]{1,4})?"
)
_PHONE: Final = re.compile(
    # Not inside a word, number, path, address or time (``12:00:00.123456789``); digits with
    # single separators (space, dot, dash, parentheses); not followed by more of a number.
    r"(?<![\w+.\-/@%])(?<!\d:)(?:\+|\(\+?)?\d"
    r"(?:(?:[ .\-]|\)\ ?|\ ?\()?\d){8,19}\)?"
    r"(?![\w@]|[.\-/]\d)"
)
_SECRET_ASSIGNMENT: Final = re.compile(
    # ``password=...``, ``"api_key": "..."``, ``Authorization: Bearer ...`` inside text (a
    # repr of a dict, JSON, a query string, a header): the value, quoted or up to the next
    # delimiter. Not ``==``, and not a type annotation in a traceback's source line.
    r"(?i)(?:password|passwd|secret|token|authorization|cookie|api[_\-]?key)[\w\-]*"
    r"\\?[\"']?\s{0,3}+[:=](?!=)\s{0,3}+"
    r"(?!(?:str|bytes|int|bool|None|SecretStr|Optional)\b|\[redacted\])"
    r"(?P<value>\\?\"(?:[^\"\\]|\\[^\"])*\\?\"|'(?:[^'\\]|\\.)*'"
    r"|[^\s,;&}\])\"'][^,;&}\])\"'\n]*)"
)
_SECRET_HINTS: Final = (*SECRET_WORDS[:-1], "api_key", "api-key", "apikey")
_DIGITS: Final = "0123456789"
_DIGIT: Final = re.compile(r"\d")
_MIN_DIGITS_TEXT: Final = 9  # shorter text holds no phone number (9 digits) nor IBAN (15)
_NON_DIGIT: Final = re.compile(r"\D")
_NANP: Final = re.compile(r"(?:1[ .\-])?\(?[2-9]\d{2}\)?[ .\-]?\d{3}[ .\-]\d{4}")
# Dates inside a digit run are dates, not phone numbers (01.05.2024 1234).
_DATE: Final = re.compile(
    r"(?<!\d)(?:\d{1,2}[.\-/]\d{1,2}[.\-/](?:19|20)\d{2}|(?:19|20)\d{2}[.\-/]\d{1,2}[.\-/]\d{1,2})(?!\d)"
)
_GROUP_END: Final = re.compile(r"(?<=\d)\)?(?= )")

#: IBAN length per country (SWIFT IBAN registry); an unknown country is not an IBAN
IBAN_LENGTHS: Final[Mapping[str, int]] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22,
    "BH": 22, "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24,
    "DE": 22, "DJ": 27, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18,
    "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27,
    "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27,
    "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20,
    "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20, "MR": 27,
    "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24, "PL": 28,
    "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31,
    "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip


# ISO 13616's letters-to-digits: A=10 ... Z=35
_IBAN_LETTERS: Final = str.maketrans({c: str(ord(c) - 55) for c in ascii_uppercase})


def valid_iban(text: str) -> bool:
    """True if ``text`` (spaces allowed) has its country's length and a valid mod-97 checksum."""
    compact = text.replace(" ", "").upper()
    if IBAN_LENGTHS.get(compact[:2]) != len(compact) or not compact.isascii():
        return False
    if not compact.isalnum():
        return False
    if not compact[2:4].isdigit() or not 2 <= int(compact[2:4]) <= 98:
        return False
    moved = compact[4:] + compact[:4]
    return int(moved.translate(_IBAN_LETTERS)) % 97 == 1


def phone_digits(candidate: str) -> str | None:
    """The digits of ``candidate`` if it reads as a phone number, else None."""
    digits = _NON_DIGIT.sub("", candidate)
    if not 9 <= len(digits) <= 16 or _DATE.search(candidate):
        return None
    separators = [c for c in candidate if c in " .-"]
    if separators == ["."]:
        return None  # one dot: a decimal number (+1234567.89), not a phone number
    start = candidate.lstrip("(")
    if start.startswith("+"):
        return digits if len(digits) <= 15 else None
    if start[:1] == "0" and start[1:2].isdigit():
        return digits  # a trunk prefix: national (0...) or international (00...) dialling
    return digits if _NANP.fullmatch(candidate) else None


class PIIMasker:
    """Hides personal data and secrets in values, mappings and free text (see module doc)."""

    def __init__(
        self,
        mode: Mode = "mask",
        key: str | bytes | None = None,
        *,
        pii_keys: Iterable[str] = (),
        secret_keys: Iterable[str] = (),
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown PII mode {mode!r}; use one of {', '.join(MODES)}")
        if mode == "hash" and not key:
            raise ValueError("the hash mode of PII masking needs a secret key")
        self.mode: Mode = mode
        self._key = key.encode() if isinstance(key, str) else (key or b"")
        self._pii_keys = frozenset(_normal_key(k) for k in pii_keys)
        self._secret_keys = frozenset(_normal_key(k) for k in secret_keys)
        self.key_kind = lru_cache(maxsize=4096)(self._key_kind)

    # -- what a key says ----------------------------------------------------------------------

    def _key_kind(self, key: str) -> str | None:
        """``"secret"``, a PII kind (email, phone, iban, pii) or None for an ordinary key."""
        normal = _normal_key(key)
        squashed = normal.replace("_", "")
        if normal in self._secret_keys or any(w in squashed for w in SECRET_WORDS):
            return "secret"
        for word, kind in PII_WORDS:
            if word in squashed:
                return kind
        return "pii" if normal in self._pii_keys else None

    # -- hiding -------------------------------------------------------------------------------

    def field(self, key: str, value: Any) -> Any:
        """``value`` as it may be shown under ``key``."""
        kind = self.key_kind(key)
        return self.value(value) if kind is None else self.hide(kind, value)

    def value(self, value: Any, depth: int = 0) -> Any:
        """``value`` with PII hidden: strings scanned, containers walked, other objects'
        ``repr`` scanned (that is what a renderer would print)."""
        if isinstance(value, str):
            return self.text(value)
        if value is None or isinstance(value, int | float):  # booleans are ints
            return value
        if depth < _MAX_DEPTH:
            if isinstance(value, Mapping):
                return {k: self._item(k, v, depth) for k, v in value.items()}
            if isinstance(value, list | tuple):
                return [self.value(v, depth + 1) for v in value]
        shown = repr(value)
        masked = self.text(shown)
        return value if masked == shown else masked

    def _item(self, key: Any, value: Any, depth: int) -> Any:
        kind = self.key_kind(key) if isinstance(key, str) else None
        return self.value(value, depth + 1) if kind is None else self.hide(kind, value)

    def hide(self, kind: str, value: Any) -> Any:
        """``value`` under a key of ``kind``: every leaf replaced (None and booleans kept)."""
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, Mapping):
            return {k: self.hide(kind, v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.hide(kind, v) for v in value]
        if kind == "secret" or self.mode == "mask":
            return REDACTED
        return self.pseudonym(kind, str(value))

    def text(self, text: str) -> str:
        """``text`` with every e-mail address, phone number and IBAN in it hidden."""
        # Most log text holds no @, no digit and no "key=": quick looks, and it is returned.
        has_at = "@" in text or "%40" in text
        has_digit = len(text) >= _MIN_DIGITS_TEXT and _DIGIT.search(text) is not None
        has_secret = ("=" in text or ":" in text) and _names_a_secret(text)
        if not (has_at or has_digit or has_secret):
            return text
        digits = sum(map(text.count, _DIGITS)) if has_digit else 0
        found: list[tuple[int, int, str]] = []
        # Each detector runs on the original text (so its look-arounds see the real
        # neighbours); the first to claim a span keeps it.
        if has_secret:
            self._find_secrets(text, found)
        if has_at:
            self._find(_EMAIL, "email", text, found)
        if digits >= 2:  # an IBAN has its check digits at least
            self._find(_IBAN, "iban", text, found)
        if digits >= 9:
            self._find(_PHONE, "phone", text, found)
        if not found:
            return text
        parts: list[str] = []
        done = 0
        for start, end, kind in sorted(found):
            parts.append(text[done:start])
            parts.append(self._replacement(kind, text[start:end]))
            done = end
        parts.append(text[done:])
        return "".join(parts)

    def _find(
        self, pattern: re.Pattern[str], kind: str, text: str, found: list[tuple[int, int, str]]
    ) -> None:
        """Add to ``found`` the spans of ``kind`` in ``text`` that no earlier kind claimed."""
        pos = 0
        while (match := pattern.search(text, pos)) is not None:
            start = match.start()
            inside = [e for s, e, _ in found if s <= start < e]
            if inside:  # claimed already: go on after the claim
                pos = inside[0]
                continue
            span = self._span(kind, match)
            if span is None or any(s < span[1] and span[0] < e for s, e, _ in found):
                pos = start + 1  # not one: look again from inside it (a phone number in a
                continue  # failed IBAN candidate, say)
            found.append((*span, kind))
            pos = span[1]

    def _find_secrets(self, text: str, found: list[tuple[int, int, str]]) -> None:
        for match in _SECRET_ASSIGNMENT.finditer(text):
            start, end = match.span("value")
            value = match.group("value")
            quote = 2 if value.startswith('\\"') else 1 if value[0] in "'\"" else 0
            if quote:  # the quotes stay, so the text still reads as what it was
                start, end = start + quote, end - quote
            else:
                end -= len(value) - len(value.rstrip())
            found.append((start, end, "secret"))

    def pseudonym(self, kind: str, value: str) -> str:
        """``kind:<12 hex>``: HMAC-SHA256 of the normalised value with the secret key."""
        digest = hmac.new(self._key, _normal_value(kind, value).encode(), hashlib.sha256)
        return f"{kind}:{digest.hexdigest()[:12]}"

    def _replacement(self, kind: str, found: str) -> str:
        if kind == "secret" or self.mode == "mask":
            return MARKERS[kind]
        return self.pseudonym(kind, found)

    def _span(self, kind: str, found: re.Match[str]) -> tuple[int, int] | None:
        """Where the PII found at ``found`` is, or None if it is not PII after all."""
        start, end = found.span()
        if kind == "email":
            return start, end
        candidate = found.group()
        if kind == "iban":
            # Cut to the country's length: the candidate may have swallowed a following word.
            cut = _cut_alnum(candidate, IBAN_LENGTHS.get(candidate[:2], 0))
            if cut is None or (cut < len(candidate) and candidate[cut] != " "):
                return None
            return (start, start + cut) if valid_iban(candidate[:cut]) else None
        # A phone number: parentheses around all of it are the text's, not the number's.
        if candidate.startswith("(") and candidate.find(")") == len(candidate) - 1:
            candidate, start, end = candidate[1:-1], start + 1, end - 1
        elif candidate.endswith(")") and candidate.count(")") > candidate.count("("):
            candidate, end = candidate[:-1], end - 1
        if phone_digits(candidate) is not None:
            return start, end
        # Else the longest run of its groups that reads as one ("0612345678 0698765432" is
        # two numbers, not one of 20 digits).
        for cut in reversed([m.end() for m in _GROUP_END.finditer(candidate)]):
            if phone_digits(candidate[:cut]) is not None:
                return start, start + cut
        return None


def _names_a_secret(text: str) -> bool:
    lowered = text.lower()
    return any(word in lowered for word in _SECRET_HINTS)


def _cut_alnum(text: str, count: int) -> int | None:
    """The index just after the ``count``-th alphanumeric character of ``text``, or None."""
    if count <= 0:
        return None
    seen = 0
    for i, c in enumerate(text):
        if c != " ":
            seen += 1
            if seen == count:
                return i + 1
    return None


def _normal_key(key: str) -> str:
    return key.strip().lower().replace("-", "_")


def _normal_value(kind: str, value: str) -> str:
    """The form of ``value`` whose pseudonym is taken, so that spellings of it match."""
    if kind == "email":
        return value.strip().replace("%40", "@").lower()
    if kind == "phone":
        return ("+" if value.lstrip("( ").startswith("+") else "") + _NON_DIGIT.sub("", value)
    if kind == "iban":
        return value.replace(" ", "").upper()
    return value
