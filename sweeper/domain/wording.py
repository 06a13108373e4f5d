"""Words shared by every message: counts with the right plural."""

from __future__ import annotations


def plural(n: int, noun: str, many: str | None = None) -> str:
    """`1 trial`, `3 trials`, `1 epoch`; `many` for an irregular plural."""
    return f"{n} {noun if n == 1 else many or noun + 's'}"
