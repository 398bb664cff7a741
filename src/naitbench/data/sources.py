"""Where raw records come from: a local mirror file or, for users with internet, the HF hub.

Both paths end in the same validation, so hub rows and local lines obey the same rules.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from naitbench.data.records import BadRecordLog, DataError, FieldRule, OnBad, read_records, validate


def load_source(spec: Mapping[str, Any], rules: dict[str, FieldRule], *, on_bad: OnBad,
                log: BadRecordLog, max_chars: int, local_key: str = "local_path",
                records_key: str | None = None) -> list[tuple[int | str, dict]]:
    """Read validated (location, record) pairs from `spec.source` ('local' or 'hub')."""
    source = spec.get("source", "local")
    if source == "local":
        path = spec.get(local_key)
        if not path:
            raise ValueError(f"no local file configured ('{local_key}') for source {spec}")
        return read_records(path, rules, on_bad=on_bad, log=log, max_chars=max_chars,
                            records_key=records_key)
    if source == "hub":
        return load_hub(spec["hub"], rules, on_bad=on_bad, log=log, max_chars=max_chars)
    raise ValueError(f"unknown data source {source!r}: use 'local' or 'hub'")


def load_hub(hub: Mapping[str, Any], rules: dict[str, FieldRule], *, on_bad: OnBad,
             log: BadRecordLog, max_chars: int) -> list[tuple[int | str, dict]]:
    """Load a split with `datasets.load_dataset` and validate every row like a local line."""
    import datasets

    kwargs = {k: v for k, v in hub.items() if k not in ("path", "name", "split") and v is not None}
    dataset = datasets.load_dataset(hub["path"], hub.get("name"), split=hub["split"], **kwargs)
    where = f"hub:{hub['path']}/{hub.get('name') or ''}/{hub['split']}"
    good = []
    for index, row in enumerate(dataset):
        try:
            good.append((index, validate(where, f"row {index}", dict(row), rules, max_chars)))
        except DataError as error:
            if on_bad == "error":
                raise
            log.add(error)
    return good
