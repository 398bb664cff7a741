"""Reading raw records from JSON, JSONL(.gz) and CSV files with strict validation.

Every bad record is either a `DataError` naming file, line and field, or (in `skip` mode) an
entry in a `BadRecordLog` that is written to a report: nothing is dropped silently.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

OnBad = Literal["error", "skip"]
RECORD = "<record>"


class DataError(ValueError):
    """A bad input record, located by file, line and field."""

    def __init__(self, file: str | Path, line: int | str, field_name: str, reason: str):
        self.file, self.line, self.field, self.reason = str(file), line, field_name, reason
        super().__init__(f"{self.file}:{line}: field '{field_name}': {reason}")


@dataclass(frozen=True)
class FieldRule:
    """What one field of a raw record must be."""

    types: tuple[type, ...] = (str,)
    required: bool = True
    allow_empty: bool = False


@dataclass
class BadRecordLog:
    """Skipped records, kept for the preparation report."""

    entries: list[dict] = field(default_factory=list)

    def add(self, error: DataError) -> None:
        self.entries.append(
            {"file": error.file, "line": error.line, "field": error.field, "reason": error.reason}
        )

    def summary(self) -> dict:
        by_reason = Counter(_reason_kind(e["reason"]) for e in self.entries)
        return {"skipped": len(self.entries), "by_reason": dict(sorted(by_reason.items())),
                "records": self.entries}


def _reason_kind(reason: str) -> str:
    return reason.split(":", 1)[0]


def _decode(raw: bytes) -> str:
    # surrogateescape keeps invalid bytes visible as lone surrogates, so the record that holds
    # them can be named (and skipped) instead of failing the whole file.
    return raw.decode("utf-8", "surrogateescape")


def _read_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if path.suffix == ".gz" else data


def iter_raw(path: str | Path, records_key: str | None = None) -> Iterator[tuple[int, Any]]:
    """Yield (line number, parsed value or DataError) for every record in a file.

    JSONL yields per line (a malformed line becomes a DataError value so callers may skip it);
    a JSON array is decoded element by element so each record keeps its line number; a
    malformed array element is always fatal because the decoder cannot resynchronise.
    """
    path = Path(path)
    suffixes = "".join(path.suffixes[-2:]) if path.suffix == ".gz" else path.suffix
    if not path.exists():
        raise FileNotFoundError(f"input file not found: {path}")
    text = _decode(_read_bytes(path))
    if suffixes in (".jsonl", ".jsonl.gz"):
        yield from _iter_jsonl(path, text)
    elif suffixes == ".json":
        yield from _iter_json(path, text, records_key)
    elif suffixes == ".csv":
        yield from _iter_csv(text)
    else:
        raise DataError(path, 0, RECORD, f"unsupported file type '{suffixes}'")


def _iter_jsonl(path: Path, text: str) -> Iterator[tuple[int, Any]]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as exc:
            yield number, DataError(path, number, RECORD, f"malformed JSON: {exc.msg}")


def _iter_json(path: Path, text: str, records_key: str | None) -> Iterator[tuple[int, Any]]:
    decoder = json.JSONDecoder()
    pos = _skip_ws(text, 0)
    if records_key is not None:
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(path, exc.lineno, RECORD, f"malformed JSON: {exc.msg}") from exc
        if not isinstance(document, dict) or not isinstance(document.get(records_key), list):
            raise DataError(path, 1, records_key, "expected an object holding a list here")
        for index, value in enumerate(document[records_key]):
            yield f"record {index}", value
        return
    if not text.startswith("[", pos):
        raise DataError(path, _line_of(text, pos), RECORD, "expected a JSON array of records")
    pos = _skip_ws(text, pos + 1)
    if text.startswith("]", pos):
        return
    while True:
        try:
            value, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise DataError(path, exc.lineno, RECORD, f"malformed JSON: {exc.msg}") from exc
        yield _line_of(text, pos), value
        pos = _skip_ws(text, end)
        if text.startswith(",", pos):
            pos = _skip_ws(text, pos + 1)
        elif text.startswith("]", pos):
            return
        else:
            raise DataError(path, _line_of(text, pos), RECORD,
                            "malformed JSON: expected ',' or ']' after a record")


def _iter_csv(text: str) -> Iterator[tuple[int, Any]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    for row in reader:
        yield reader.line_num, row


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _has_invalid_utf8(value: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in value)


def validate(path: str | Path, line: int | str, record: Any, rules: dict[str, FieldRule],
             max_chars: int) -> dict:
    """Check one parsed record against `rules`; raise DataError naming the first bad field."""
    if not isinstance(record, dict):
        raise DataError(path, line, RECORD, f"wrong type: expected an object, got "
                        f"{type(record).__name__}")
    for name, rule in rules.items():
        if name not in record or record[name] is None:
            if rule.required:
                raise DataError(path, line, name, "missing: required field is absent")
            continue
        value = record[name]
        if isinstance(value, bool) or not isinstance(value, rule.types):
            expected = " or ".join(t.__name__ for t in rule.types)
            raise DataError(path, line, name,
                            f"wrong type: expected {expected}, got {type(value).__name__}")
        if isinstance(value, str):
            if _has_invalid_utf8(value):
                raise DataError(path, line, name, "not valid UTF-8: undecodable bytes")
            if not rule.allow_empty and not value.strip():
                raise DataError(path, line, name, "empty: field holds no text")
            if len(value) > max_chars:
                raise DataError(path, line, name,
                                f"absurd length: {len(value)} characters > max_chars={max_chars}")
    return record


def read_records(path: str | Path, rules: dict[str, FieldRule], *, on_bad: OnBad,
                 log: BadRecordLog, max_chars: int,
                 records_key: str | None = None) -> list[tuple[int | str, dict]]:
    """Read and validate every record of a file, as (line, record) pairs.

    In `error` mode the first bad record raises; in `skip` mode it is logged and left out.
    """
    if on_bad not in ("error", "skip"):
        raise ValueError(f"on_bad_record must be 'error' or 'skip', got {on_bad!r}")
    good: list[tuple[int | str, dict]] = []
    for line, value in iter_raw(path, records_key):
        try:
            if isinstance(value, DataError):
                raise value
            good.append((line, validate(path, line, value, rules, max_chars)))
        except DataError as error:
            if on_bad == "error":
                raise
            log.add(error)
    return good
