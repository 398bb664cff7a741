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

from naitbench.errors import ConfigError, UserError

OnBad = Literal["error", "skip"]
RECORD = "<record>"


class DataError(UserError, ValueError):
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
    cut_off: list[dict] = field(default_factory=list)

    def add(self, error: DataError) -> None:
        self.entries.append(
            {"file": error.file, "line": error.line, "field": error.field, "reason": error.reason}
        )

    def reject(self, error: DataError, on_bad: OnBad) -> None:
        """Raise `error` (on_bad='error') or log it as a skipped record (on_bad='skip')."""
        if on_bad == "error":
            raise error
        self.add(error)

    def summary(self) -> dict:
        by_reason = Counter(_reason_kind(e["reason"]) for e in self.entries)
        return {"skipped": len(self.entries), "by_reason": dict(sorted(by_reason.items())),
                "records": self.entries, "cut_off": self.cut_off}


@dataclass(frozen=True)
class CutOff:
    """Where a JSON array file ends inside a record (a file cut short): the records before it
    are complete, the one it starts is incomplete and is never passed on."""

    file: str
    line: int


def _reason_kind(reason: str) -> str:
    return reason.split(":", 1)[0]


def _decode(raw: bytes) -> str:
    # surrogateescape keeps invalid bytes visible as lone surrogates, so the record that holds
    # them can be named (and skipped) instead of failing the whole file.
    return raw.decode("utf-8", "surrogateescape")


def _read_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if path.suffix == ".gz" else data


def iter_raw(path: str | Path, records_key: str | None = None, *,
             cut_off_ok: bool = False) -> Iterator[tuple[int, Any]]:
    """Yield (line number, parsed value or DataError) for every record in a file.

    JSONL yields per line (a malformed line becomes a DataError value so callers may skip it);
    a JSON array is decoded element by element so each record keeps its line number; a
    malformed array element is always fatal because the decoder cannot resynchronise. A JSON
    array that ends inside a record is an error too, unless `cut_off_ok`: then the complete
    records come out and a final `CutOff` value says where the file stops.
    """
    path = Path(path)
    suffixes = "".join(path.suffixes[-2:]) if path.suffix == ".gz" else path.suffix
    if not path.exists():
        raise FileNotFoundError(f"input file not found: {path}")
    text = _decode(_read_bytes(path))
    if suffixes in (".jsonl", ".jsonl.gz"):
        yield from _iter_jsonl(path, text)
    elif suffixes == ".json":
        yield from _iter_json(path, text, records_key, cut_off_ok)
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


def _iter_json(path: Path, text: str, records_key: str | None,
               cut_off_ok: bool = False) -> Iterator[tuple[int, Any]]:
    decoder, lines = json.JSONDecoder(), _Lines(text)
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
        raise DataError(path, lines.at(pos), RECORD, "expected a JSON array of records")
    pos = _skip_ws(text, pos + 1)
    if text.startswith("]", pos):
        return
    index, previous_end = 0, None
    while True:
        try:
            value, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            if cut_off_ok and _ends_inside(text, exc):
                yield lines.at(pos), CutOff(str(path), lines.at(pos))
                return
            raise DataError(path, exc.lineno, RECORD, f"malformed JSON: {exc.msg}") from exc
        start, last = lines.at(pos), lines.at(end - 1)
        pos = _skip_ws(text, end)
        following = _skip_ws(text, pos + 1) if text.startswith(",", pos) else None
        # a record sharing its line with another (a one-line array) is named by its index
        shared = start == previous_end or (
            following is not None and following < len(text)
            and not text.startswith("]", following) and lines.at(following) == last)
        yield (f"record {index}" if shared else start), value
        index, previous_end = index + 1, last
        if following is not None:
            pos = following
        elif text.startswith("]", pos):
            return
        elif cut_off_ok and pos == len(text):
            yield lines.at(pos), CutOff(str(path), lines.at(pos))
            return
        else:
            raise DataError(path, lines.at(pos), RECORD,
                            "malformed JSON: expected ',' or ']' after a record")


def _ends_inside(text: str, exc: json.JSONDecodeError) -> bool:
    """Whether a decode error comes from the text ending, not from a malformed value: an
    unterminated string runs to the end by definition; any other error must sit at the end."""
    return exc.msg == "Unterminated string starting at" or _skip_ws(text, exc.pos) == len(text)


def _iter_csv(text: str) -> Iterator[tuple[int, Any]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    for row in reader:
        yield reader.line_num, row


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


class _Lines:
    """Line numbers of increasing positions in one text, counted incrementally: a file of
    thousands of records would make counting from the start each time quadratic."""

    def __init__(self, text: str):
        self.text, self.pos, self.line = text, 0, 1

    def at(self, pos: int) -> int:
        if pos < self.pos:
            self.pos, self.line = 0, 1
        self.line += self.text.count("\n", self.pos, pos)
        self.pos = pos
        return self.line


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
                 log: BadRecordLog, max_chars: int, records_key: str | None = None,
                 cut_off_ok: bool = False) -> list[tuple[int | str, dict]]:
    """Read and validate every record of a file, as (line, record) pairs.

    In `error` mode the first bad record raises; in `skip` mode it is logged and left out.
    With `cut_off_ok`, a JSON array cut short ends the read cleanly at its last complete
    record, and the cut goes into `log.cut_off`.
    """
    if on_bad not in ("error", "skip"):
        raise ConfigError(f"on_bad_record must be 'error' or 'skip', got {on_bad!r}")
    good: list[tuple[int | str, dict]] = []
    for decoded, (line, value) in enumerate(iter_raw(path, records_key, cut_off_ok=cut_off_ok)):
        if isinstance(value, CutOff):
            log.cut_off.append({"file": value.file, "line": value.line,
                                "records_recovered": decoded})
            break
        try:
            if isinstance(value, DataError):
                raise value
            good.append((line, validate(path, line, value, rules, max_chars)))
        except DataError as error:
            log.reject(error, on_bad)
    return good
