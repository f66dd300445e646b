"""LoRA adapters on disk: whether a folder holds one, and the stack of adapters that makes each model.

A model's folder holds its whole stack: models/dpo keeps the adapter DPO started from (start/, when
train_dpo.init is sft) beside its own. So a model is the base plus what its own folder holds, and evaluating
it depends on models/base and models/<model> only.
"""
from __future__ import annotations

from pathlib import Path

from .errors import UserError
from .paths import START_ADAPTER, model_dir

ADAPTER_CONFIG = "adapter_config.json"  # PEFT writes it beside the weights; its presence marks an adapter


def has_adapter(folder: str | Path) -> bool:
    return (Path(folder) / ADAPTER_CONFIG).is_file()


def require_adapter(model: str, why: str = "") -> Path:
    """models/<model>, once it is known to hold an adapter; otherwise a UserError naming the stage that makes it."""
    folder = model_dir(model)
    if not has_adapter(folder):
        raise UserError(f"{folder}: the {model.upper()} adapter is missing{f' ({why})' if why else ''}; "
                        f"run `dvc repro train_{model}`")
    return folder


def adapter_stack(model: str) -> list[Path]:
    """The adapters that make ``model`` on top of the base, in the order they are applied."""
    if model == "base":
        return []
    folder = require_adapter(model)
    start = folder / START_ADAPTER
    return ([start] if has_adapter(start) else []) + [folder]
