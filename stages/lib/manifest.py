"""Manifests: what produced an artifact (model identity, params, seed, precision, package versions).

DVC's lock file already holds file hashes; a manifest records what DVC cannot see.
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
    return {**fields, "packages": package_versions()}
