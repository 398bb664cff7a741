"""A source's own key names mapped onto the fields the suite reads (`fields:` of a pool or
target config), so a user's file or hub dataset is read as it is, not rewritten first.

Validation runs on the source's keys, so a bad record is reported under the name the user's
file uses (`question`, not `instruction`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from naitbench.data.records import FieldRule
from naitbench.errors import ConfigError


@dataclass(frozen=True)
class FieldMap:
    """Field the suite reads -> key of the source that holds it."""

    keys: Mapping[str, str]

    @classmethod
    def from_config(cls, rules: Mapping[str, FieldRule], fields: Mapping[str, Any] | None,
                    setting: str) -> FieldMap:
        """Every field of `rules` under its own name unless `fields` renames it; `setting`
        names the config key in errors (e.g. `pool.fields`)."""
        fields = dict(fields or {})
        unknown = sorted(set(fields) - set(rules))
        if unknown:
            raise ConfigError(f"{setting} renames {unknown}, which it does not read; it "
                              f"renames {sorted(rules)}")
        bad = sorted(k for k, v in fields.items() if v is not None and not isinstance(v, str))
        if bad:
            raise ConfigError(f"{setting}.{bad[0]} must be a key name (a string), got "
                              f"{fields[bad[0]]!r}")
        return cls({name: fields.get(name) or name for name in rules})

    def rules(self, rules: Mapping[str, FieldRule]) -> dict[str, FieldRule]:
        """`rules` keyed by the source's names."""
        return {self.keys[name]: rule for name, rule in rules.items()}

    def read(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """The row under the suite's names (a field the row lacks is None)."""
        return {name: row.get(key) for name, key in self.keys.items()}
