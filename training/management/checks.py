"""Checks of command-line input, made before a command writes anything.

Each raises CommandError with one line saying what is wrong, so that bad input never reaches the
database half-way (or as a traceback).
"""

from __future__ import annotations

import re

from django.core.management.base import CommandError

from registry.api.serializers import MAX_INT32, SYMBOL_PATTERN

_SYMBOL = re.compile(SYMBOL_PATTERN)


def symbol_checked(text: str, *, option: str = "--symbol") -> str:
    """The symbol upper-cased, if the API would accept it (so its models can be trained)."""
    symbol = text.strip()
    if not _SYMBOL.match(symbol):
        raise CommandError(
            f"{option} {text!r}: use 1-32 letters, digits, '-' or '_' (e.g. BTCUSDT)"
        )
    return symbol.upper()


def seed_checked(seed: int, *, option: str = "--seed") -> int:
    if not 0 <= seed <= MAX_INT32:
        raise CommandError(f"{option} {seed}: must be between 0 and {MAX_INT32}")
    return seed


def text_checked(text: str, *, option: str) -> str:
    """Text PostgreSQL can store (argv may carry bytes that are not UTF-8)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise CommandError(f"{option} {text!r}: not UTF-8 text") from None
    return text
