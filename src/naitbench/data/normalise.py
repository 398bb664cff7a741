"""Text normalisation and stable record ids."""

from __future__ import annotations

import re
import unicodedata

from naitbench.io import content_hash

_CALCULATOR = re.compile(r"<<[^<>]*>>")


def normalise_text(text: str) -> str:
    """NFC, Unix newlines, no trailing spaces, no blank lines around the text.

    Leading spaces of the first line are kept: code responses start indented.
    """
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = "\n".join(line.rstrip() for line in text.split("\n")).strip("\n")
    return text if text.strip() else ""


def record_id(instruction: str, input_text: str, output: str) -> str:
    """Content-hash id: the same normalised sample gets the same id on every machine."""
    return content_hash(instruction, input_text, output)


def strip_calculator_annotations(solution: str) -> str:
    """Drop GSM8K's `<<48/2=24>>` annotations so the reference reads as natural text."""
    return _CALCULATOR.sub("", solution)
