"""What the spec (issue 2) and the contract say the filter does, as small helpers for tests."""

from __future__ import annotations

from . import names

REJECT_REASONS = names.REJECT_REASONS
OUTCOME_WORDS = ("accept", "reject", "shadow")


def reject_body(reason: str) -> bytes:
    return f"trustip: rejected ({reason})\n".encode()


def decisions(delta: dict[str, int]) -> dict[str, int]:
    """The decision counters (accept_*, reject_*, shadow_*) of a counter delta."""
    return {
        name: change
        for name, change in delta.items()
        if name.startswith("trustip.") and name.split(".")[-1].split("_")[0] in OUTCOME_WORDS
    }


def chain(value: str | None) -> list[str]:
    """An X-Forwarded-For or Forwarded value as its comma-separated elements, trimmed."""
    if value is None:
        return []
    return [element.strip() for element in value.split(",")]
