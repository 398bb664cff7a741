"""What the text-based selectors (embedding kNN, BM25, DSIR) read of a record."""

from __future__ import annotations

import re

WORD = re.compile(r"\w+", re.UNICODE)


def sample_text(record: dict) -> str:
    """Instruction, input and response, newline-joined (empty parts left out)."""
    return "\n".join(p for p in (record.get("instruction", ""), record.get("input", ""),
                                 record.get("response", "")) if p)


def words(text: str) -> list[str]:
    """Lower-cased word tokens (runs of letters, digits and underscores)."""
    return WORD.findall(text.lower())
