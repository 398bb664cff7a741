"""Which software produced an artefact: recorded in manifests, since float results (scores,
features) can differ in their last bits between library versions and machines."""

from __future__ import annotations

import importlib.metadata
import platform

import naitbench

#: libraries whose versions decide selection scores
LIBRARIES = ("numpy", "torch", "transformers", "peft")


def library_versions() -> dict[str, str | None]:
    """Python, naitbench and the numeric libraries (None: not installed)."""
    versions: dict[str, str | None] = {"python": platform.python_version(),
                                       "naitbench": naitbench.__version__}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions
