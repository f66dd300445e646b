"""Manifests: what produced an artifact (model identity, params, seed, precision).

DVC's lock file already holds file hashes; a manifest records what DVC cannot see. A manifest is part
of a DVC-tracked output, so it holds only what determines the output's content: no package versions,
timings, absolute paths or thread counts, which change with the machine and would invalidate every
later stage for nothing. Those go to the stage's metrics file (``environment``), which no stage reads.
"""
from __future__ import annotations

import platform
from importlib import metadata

PACKAGES = ("torch", "transformers", "peft", "trl", "datasets", "accelerate", "bitsandbytes", "dvc")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def build_manifest(**fields) -> dict:
    return dict(fields)


def environment() -> dict:
    """Where a stage ran, for its metrics file: package versions and torch's thread count."""
    import torch

    return {"packages": package_versions(), "threads": torch.get_num_threads()}
