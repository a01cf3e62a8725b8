"""Checks of one row shared by every format (text fields, unused columns), and personal data or secrets.

Each format's own row checks live with its spec (``data/row_formats/``).

Every function returns findings and never raises, whatever the row holds.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Iterator

from tuneforge.data.findings import Finding, finding


@dataclass(frozen=True)
class Location:
    """Where a row is: builds findings that carry its file, line and row number."""

    file: str
    line: int | None
    row: int | None

    def __call__(self, code: str, message: str, field: str | None = None) -> Finding:
        return finding(code, message, self.file, self.line, None if self.line is not None else self.row, field)


def describe_type(value: Any) -> str:
    return {dict: "an object", list: "a list", bool: "true/false", type(None): "null"}.get(type(value), type(value).__name__)


def check_text_field(row: dict[str, Any], key: str, at: Location, required: bool = True) -> list[Finding]:
    """The same rules as the loader: text or a number; absent or empty only when optional."""
    value = row.get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        if required:
            return [at("missing_field", f"missing field '{key}'", key)]
        return []
    if isinstance(value, str):
        if required and not value.strip():
            return [at("empty_field", f"field '{key}' is empty", key)]
        return []
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return []
    return [at("wrong_type", f"field '{key}' must be text, got {describe_type(value)}", key)]


def check_template_row(row: dict[str, Any], fields: list[str], at: Location) -> list[Finding]:
    problems: list[Finding] = []
    for key in fields:
        problems += check_text_field(row, key, at)
    return problems


def show(value: Any) -> str:
    """A short repr for messages."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def unused_keys(row: dict[str, Any], data_format: str, template_fields: list[str] | None = None) -> list[str]:
    """Columns of ``row`` that the format (or template) ignores."""
    from tuneforge.data.row_formats import OPTIONAL_KEYS, get_format

    used = set(template_fields) if template_fields is not None else get_format(data_format).used_keys
    return [str(key) for key in row if key not in used and key not in OPTIONAL_KEYS]


# ---------------------------------------------------------------- personal data and secrets

_SECRET_PATTERNS = {
    "OpenAI API key": r"\bsk-(?:proj-|svcacct-)?[A-Za-z0-9_-]{20,}",
    "AWS access key": r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
    "GitHub token": r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})",
    "Google API key": r"\bAIza[0-9A-Za-z_-]{35}",
    "Slack token": r"\bxox[abprs]-[A-Za-z0-9-]{10,}",
    "Stripe key": r"\b[rs]k_(?:live|test)_[A-Za-z0-9]{16,}",
    "Hugging Face token": r"\bhf_[A-Za-z0-9]{30,}",
    "private key": r"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----",
    "JSON web token": r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}",
    "password or key assignment": r"\b(?i:api[_-]?key|secret[_-]?key|access[_-]?token|auth[_-]?token|password|passwd)"
    r"\b[\"']?\s*[:=]\s*[\"']?[^\s\"',;]{8,}",
}
_PERSONAL_PATTERNS = {
    "e-mail address": r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b",
    "card number": r"(?<![\d-])\d{4}(?:[ -]?\d{4}){2}[ -]?\d{1,7}(?![\d-])",
    "phone number": r"(?<![\w+.-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]\d{2,4}){1,4}(?![\w.-])"
    r"|(?<![\w+])\+\d{8,14}(?!\w)",
}
_KINDS = {**{name: "secret" for name in _SECRET_PATTERNS}, **{name: "personal_data" for name in _PERSONAL_PATTERNS}}
_COMPILED = {name: re.compile(pattern) for name, pattern in {**_SECRET_PATTERNS, **_PERSONAL_PATTERNS}.items()}
# Cheap tests that must pass before a pattern runs: most texts need no regular expression at all.
_SECRET_LITERALS = ("sk-", "AKIA", "ASIA", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "AIza", "xox",
                    "_live_", "_test_", "hf_", "PRIVATE KEY", "eyJ")
_SECRET_WORDS = ("key", "token", "passw", "secret")
_DIGIT_RUN = re.compile(r"\d[\d ().+-]{7,}\d")


def _luhn_ok(digits: str) -> bool:
    total, parity = 0, len(digits) % 2
    for index, char in enumerate(digits):
        value = int(char)
        if index % 2 == parity:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _plausible(kind: str, text: str) -> bool:
    if kind == "card number":
        digits = re.sub(r"\D", "", text)
        return 13 <= len(digits) <= 19 and len(set(digits)) > 1 and _luhn_ok(digits)
    if kind == "phone number":
        digits = re.sub(r"\D", "", text)
        looks_like_date = re.fullmatch(r"\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{2,4}", text.strip())
        if not 9 <= len(digits) <= 15 or looks_like_date or len(set(digits)) <= 2:
            return False
        plain = text.strip()
        if re.fullmatch(r"\d{1,3}(?:\.\d{1,3}){3}", plain):  # an IPv4 address
            return False
        # Lists of numbers ("10 20 30 40", "2019 2020 2021") are not phones: ask for a phone's marks.
        return plain.startswith(("+", "(", "0")) or "-" in plain or bool(re.fullmatch(r"\d{3}\.\d{3}\.\d{4}", plain))
    return True


def mask(text: str) -> str:
    """Enough of a match to find it, not enough to leak it."""
    if len(text) <= 6:
        return "*" * len(text)
    return text[:4] + "*" * min(len(text) - 4, 8)


def scan_sensitive(text: str) -> Iterator[tuple[str, str, str]]:
    """``(code, kind, masked match)`` for each likely secret or piece of personal data in ``text``."""
    kinds: list[str] = []
    if any(literal in text for literal in _SECRET_LITERALS):
        kinds += [name for name in _SECRET_PATTERNS if name != "password or key assignment"]
    lowered = text.lower()
    if any(word in lowered for word in _SECRET_WORDS):
        kinds.append("password or key assignment")
    if "@" in text:
        kinds.append("e-mail address")
    if _DIGIT_RUN.search(text):
        kinds += ["card number", "phone number"]
    for kind in kinds:
        for match in _COMPILED[kind].finditer(text):
            if _plausible(kind, match.group()):
                yield _KINDS[kind], kind, mask(match.group())
