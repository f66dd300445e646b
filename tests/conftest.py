import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))

from tiny_model import build_tiny_model, write_base_manifest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_hf_dir(tmp_path_factory) -> Path:
    """A tiny Llama saved as a plain Hugging Face directory (what a user points model.name_or_path at)."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-llama")


@pytest.fixture()
def tiny_base(tiny_hf_dir, tmp_path) -> Path:
    """The tiny model laid out like prepare_base's output (models/base), private to one test."""
    base = tmp_path / "base"
    shutil.copytree(tiny_hf_dir, base)
    write_base_manifest(base)
    return base


def run_stage(module: str, cwd: Path, *args: str, timeout: int = 600):
    """Run ``python -m stages.<module>`` in ``cwd`` as DVC would, with the project importable."""
    import os
    import subprocess

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", f"stages.{module}", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
    )


def write_params(directory: Path, **sections) -> Path:
    """params.yaml for a test: the project's defaults with ``sections`` merged in, key by key."""
    import yaml

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, values in sections.items():
        if isinstance(values, dict) and isinstance(params.get(section), dict):
            params[section].update(values)
        else:
            params[section] = values
    path = directory / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path
