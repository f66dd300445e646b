"""The clean loader: the one way every stage loads the tokenizer and the model.

- the chat template is removed and no special tokens are added to completion prompts;
- a pad token is set and padding is on the left, as batched generation needs;
- dtype and quantization come from hardware.resolve_precision (8bit means 8-bit);
- trust_remote_code stays off unless a param turns it on;
- adapters are applied to a freshly loaded base, so a base model that is used again is never mutated.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Sequence

from .adapters import ADAPTER_CONFIG, has_adapter
from .base_model import read_base_manifest
from .errors import UserError
from .hardware import Precision


def load_tokenizer(base_dir: str | Path, *, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    base_dir = Path(base_dir)
    read_base_manifest(base_dir)  # fails clearly when prepare_base has not run
    tokenizer = AutoTokenizer.from_pretrained(base_dir, trust_remote_code=trust_remote_code)
    # Completion-style prompts only: a chat template or an automatic BOS would change the text the
    # model sees between data generation, training and evaluation.
    tokenizer.chat_template = None
    for attr in ("add_bos_token", "add_eos_token"):
        if hasattr(tokenizer, attr):
            setattr(tokenizer, attr, False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def encode(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of plain text, never with special tokens."""
    return tokenizer(list(texts), add_special_tokens=False)["input_ids"]


def choose_attn_implementation(requested: str, precision: Precision, flash_attn_installed: bool | None = None) -> str:
    if requested != "auto":
        return requested
    if flash_attn_installed is None:
        flash_attn_installed = importlib.util.find_spec("flash_attn") is not None
    if precision.device == "cuda" and precision.dtype in ("bfloat16", "float16") and flash_attn_installed:
        return "flash_attention_2"
    return "sdpa"


def quantization_config(precision: Precision):
    if precision.quantization == "none":
        return None
    from transformers import BitsAndBytesConfig

    if precision.quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    if precision.quantization == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=precision.torch_dtype,
        )
    raise ValueError(f"unknown quantization {precision.quantization!r}")


def load_base_model(
    base_dir: str | Path,
    precision: Precision,
    *,
    trust_remote_code: bool = False,
    attn_implementation: str = "auto",
):
    from transformers import AutoModelForCausalLM

    base_dir = Path(base_dir)
    manifest = read_base_manifest(base_dir)
    if manifest["weights"] == "hub":
        source, revision = manifest["name_or_path"], manifest["revision"]
    else:
        source, revision = base_dir, None
    model = AutoModelForCausalLM.from_pretrained(
        source,
        revision=revision,
        dtype=precision.torch_dtype,
        quantization_config=quantization_config(precision),
        attn_implementation=choose_attn_implementation(attn_implementation, precision),
        trust_remote_code=trust_remote_code,
        device_map={"": precision.device} if precision.quantization != "none" else None,
    )
    if precision.quantization == "none":
        model.to(precision.device)
    model.generation_config.pad_token_id = model.generation_config.pad_token_id or model.config.eos_token_id
    return model


def apply_adapters(model, adapter_dirs: Sequence[str | Path], *, merge_all: bool = False):
    """Stack adapters on a base loaded for this purpose alone.

    All but the last adapter are merged in (SFT under a DPO adapter); the last stays a PEFT adapter
    unless ``merge_all``. The caller must not reuse ``model`` afterwards as the plain base.
    """
    if not adapter_dirs:
        return model
    from peft import PeftModel  # imported only when there is an adapter to apply (it pulls in bitsandbytes)

    for i, adapter_dir in enumerate(adapter_dirs):
        if not has_adapter(adapter_dir):
            raise UserError(f"{adapter_dir}: no LoRA adapter here ({ADAPTER_CONFIG} missing); run its training stage")
        model = PeftModel.from_pretrained(model, adapter_dir, is_trainable=False)
        if merge_all or i < len(adapter_dirs) - 1:
            model = model.merge_and_unload()
    return model


def load_model(
    base_dir: str | Path,
    precision: Precision,
    adapters: Sequence[str | Path] = (),
    *,
    trust_remote_code: bool = False,
    attn_implementation: str = "auto",
    merge_all: bool = False,
):
    """A fresh base from disk with ``adapters`` applied, in eval mode."""
    model = load_base_model(
        base_dir, precision, trust_remote_code=trust_remote_code, attn_implementation=attn_implementation
    )
    model = apply_adapters(model, adapters, merge_all=merge_all)
    model.eval()
    return model
