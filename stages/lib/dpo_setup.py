"""The DPO training setup, built from params so that SFT->DPO and DPO-only differ only in the start.

``train_dpo.init: sft`` merges the SFT adapter into a fresh base and trains a new adapter on top; the
reference is that merged model with the new adapter disabled. ``train_dpo.init: base`` trains the adapter
on the base; the reference is the base. In both the reference is the policy's own frozen weights
(PEFT's adapter switched off), so there is never a second full copy of the model.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .hardware import Precision
from .params import TrainDpoParams
from .paths import model_dir
from .training import common_args, lora_config


@dataclass
class DpoSetup:
    init: str
    start_adapters: list[Path]  # merged into the base before training: the starting point
    config_kwargs: dict  # DPOConfig arguments
    lora: object  # peft.LoraConfig


def dpo_setup(dpo: TrainDpoParams, precision: Precision, output_dir: str) -> DpoSetup:
    config_kwargs = common_args(dpo, precision, output_dir, has_eval=False) | dict(
        beta=dpo.beta,
        loss_type=[dpo.loss_type],
        precompute_ref_log_probs=dpo.precompute_ref_log_probs,
        # Forward only, nothing kept for a backward pass: a whole optimizer batch at a time, in length order
        # (stages.lib.trainers), not TRL's default of one micro-batch
        precompute_ref_batch_size=dpo.batch_size,
        # Pairs of similar length share a batch: less padding (stages.lib.dpo_trainer supplies the lengths)
        train_sampling_strategy="group_by_length",
    )
    return DpoSetup(
        init=dpo.init,
        start_adapters=[] if dpo.init == "base" else [model_dir(dpo.init)],  # the model init names
        config_kwargs=config_kwargs,
        lora=lora_config(dpo.lora),
    )
