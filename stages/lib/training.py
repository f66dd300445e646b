"""What SFT and DPO training share: trainer arguments from params and hardware, LoRA, DVCLive, adapters.

Precision and gradient checkpointing are always set here, from the hardware, never left to TRL's
defaults (bf16 + checkpointing): on a CPU without native bf16 those made training 11x slower. Training
uses the precision every other stage uses (hardware.resolve_precision): bf16 where the hardware runs it
natively (1.45x fp32's rate on an AMX CPU: BENCHMARKS.md), fp32 elsewhere.
"""
from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path

from .errors import UserError
from .hardware import Precision, use_gradient_checkpointing
from .params import LoraParams, TrainParams
from .paths import DVCLIVE_CURVES


def lora_config(lora: LoraParams):
    from peft import LoraConfig

    return LoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
        target_modules=lora.target_modules, bias="none", task_type="CAUSAL_LM",
    )


def world_size() -> int:
    """Processes training together: set by `accelerate launch` / torchrun, 1 otherwise."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def batch_layout(global_batch: int, micro_batch: int, processes: int) -> tuple[int, int]:
    """(per-device batch, accumulation steps) so that per-device x accumulation x processes == global batch.

    The global batch is what the params fix, so a run on 1 CPU and one on 8 GPUs take the same
    optimizer steps; only how each step is split across devices and micro-batches changes.
    """
    # micro_batch caps a device's share: DPO's default 4 pairs still splits 8 over 8 processes as 1 each
    per_device = min(micro_batch or global_batch, max(1, global_batch // processes))
    accumulation, remainder = divmod(global_batch, per_device * processes)
    if remainder or accumulation < 1:
        raise UserError(
            f"batch_size={global_batch} cannot be split into micro_batch_size={per_device} x {processes} "
            f"process(es) x an integer number of accumulation steps; choose values that divide evenly"
        )
    return per_device, accumulation


def micro_batch(train: TrainParams, precision: Precision) -> int:
    """Sequences a forward pass: the param, or for "auto" the stage's AUTO_MICRO_BATCH, halved in fp32.

    A sequence's activations take twice the bytes in fp32, so half the sequences a pass keep the peak near the
    16-bit default's: measured on an Intel host that trains in fp32, train_sft's stage peak 3.1 -> 2.2 GB and
    train_dpo's 4.3 -> 2.8 GB, each at 0.92x the rate and with the same greedy answers on dev (BENCHMARKS.md)."""
    if train.micro_batch_size != "auto":
        return train.micro_batch_size
    return max(1, train.AUTO_MICRO_BATCH // 2) if precision.dtype == "float32" else train.AUTO_MICRO_BATCH


def common_args(train: TrainParams, precision: Precision, output_dir: str, has_eval: bool) -> dict:
    """Keyword arguments shared by SFTConfig and DPOConfig: identical for every run of a stage."""
    per_device, accumulation = batch_layout(train.batch_size, micro_batch(train, precision), world_size())
    return dict(
        output_dir=output_dir,
        learning_rate=train.learning_rate,
        num_train_epochs=train.epochs,
        max_steps=train.max_steps,
        per_device_train_batch_size=per_device,
        per_device_eval_batch_size=per_device,
        gradient_accumulation_steps=accumulation,
        max_length=train.max_length,
        warmup_steps=train.warmup_ratio,  # a float below 1 is a ratio of the total steps
        lr_scheduler_type=train.scheduler,
        seed=train.seed,
        data_seed=train.seed,
        bf16=precision.dtype == "bfloat16",
        fp16=precision.dtype == "float16",
        use_cpu=precision.device == "cpu",
        # transformers 5 renamed gradient_checkpointing (still TRL's default: True) to activation_checkpointing
        activation_checkpointing=use_gradient_checkpointing(train.gradient_checkpointing, precision),
        logging_steps=train.logging_steps,
        # The trainer's default hides a NaN or infinite step loss behind the window's average; we want to see it.
        logging_nan_inf_filter=False,
        eval_strategy="epoch" if has_eval else "no",
        save_strategy="no",
        report_to="none",
        dataloader_num_workers=0,
        ddp_backend="gloo" if precision.device == "cpu" and world_size() > 1 else None,
        disable_tqdm=False,
    )


def sft_config(sft: TrainParams, precision: Precision, output_dir: str, has_eval: bool):
    """TRL's SFTConfig for train_sft (and its benchmark): loss on the completion only, no packing, and
    batches of similar lengths (less padding: 1.17x the real tokens/s of random batches, BENCHMARKS.md)."""
    from trl import SFTConfig

    return SFTConfig(**common_args(sft, precision, output_dir, has_eval),
                     completion_only_loss=True, packing=False, train_sampling_strategy="group_by_length")


def dvclive_callback(directory: str | Path):
    """Training curves for `dvc plots`, written under ``directory`` without touching dvc.yaml."""
    from dvclive import Live
    from transformers.integrations import DVCLiveCallback

    return DVCLiveCallback(live=Live(dir=str(directory), dvcyaml=None, save_dvc_exp=False, report=None))


def publish_curves(trainer, staged: str | Path, live: Path) -> None:
    """Move the curves DVCLive wrote into ``staged`` (a scratch folder) to ``live``, where dvc.yaml's plots
    point, once training has succeeded: a run that fails or is killed leaves no partial curves behind."""
    from .io import atomic_dir, write_text_atomic

    if not is_main_process(trainer):
        return
    staged = Path(staged)
    with atomic_dir(live / DVCLIVE_CURVES) as tmp:
        if (staged / DVCLIVE_CURVES).is_dir():
            shutil.copytree(staged / DVCLIVE_CURVES, tmp, dirs_exist_ok=True)
    for name in ("metrics.json", "params.yaml"):
        if (staged / name).is_file():
            write_text_atomic(live / name, (staged / name).read_text(encoding="utf-8"))


def finite_loss_guard():
    """A trainer callback that stops training at the first logged loss that is NaN or infinite (every later
    step would only spread it through the weights); ``check_finite`` then refuses to save anything."""
    from transformers import TrainerCallback

    class FiniteLossGuard(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            loss = (logs or {}).get("loss")
            if loss is not None and not math.isfinite(loss):
                control.should_training_stop = True
            return control

    return FiniteLossGuard()


def check_finite(trainer, section: str) -> None:
    """Refuse a run whose logged loss or trained weights are not finite, before any adapter is written."""
    import torch

    for entry in trainer.state.log_history:
        loss = entry.get("loss")
        if loss is not None and not math.isfinite(loss):
            raise UserError(
                f"{section}: the training loss became {loss} at step {entry.get('step')}; training stopped and no "
                f"adapter was saved (lower {section}.learning_rate, or check models/base for NaN weights)")
    for name, param in trainer.model.named_parameters():
        if param.requires_grad and _is_whole(param) and not torch.isfinite(param.detach()).all():
            raise UserError(f"{section}: the trained weight {name} holds NaN or infinite values; no adapter was saved "
                            f"(lower {section}.learning_rate)")


def _is_whole(param) -> bool:
    """A parameter held in full by this process (not an FSDP shard or a ZeRO-3 placeholder)."""
    return not hasattr(param, "to_local") and not hasattr(param, "ds_id")


def gather_adapter(trainer) -> dict | None:
    """The trained weights in full, for the adapter. Every process must call this: under FSDP or DeepSpeed
    ZeRO-3 each one holds a shard of the weights, and gathering them is a collective operation (a
    process that skipped it would leave the others waiting forever). Returns None where the weights are
    whole in every process (one process, DDP), and then PEFT reads them from the model itself.
    """
    model = trainer.model
    if any(hasattr(p, "to_local") for p in model.parameters()):  # FSDP2 (DTensor shards)
        return full_state_dict(model)
    from accelerate.utils import DistributedType

    kind = trainer.accelerator.distributed_type
    if kind == DistributedType.FSDP:  # FSDP1: the wrapper gathers into a full state dict on rank 0
        return trainer.accelerator.get_state_dict(trainer.model_wrapped)
    if kind == DistributedType.DEEPSPEED:  # ZeRO-3 gathers 16-bit weights (zero3_save_16bit_model: true)
        return trainer.accelerator.get_state_dict(trainer.model_wrapped)
    return None


def full_state_dict(model) -> dict:
    """A DTensor-sharded (FSDP2) model's state dict, gathered whole onto the main process (CPU tensors);
    the other processes get an empty dict."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def save_adapter(model, directory: Path, state_dict: dict | None = None) -> None:
    """The LoRA adapter as safetensors, byte-identical whenever the weights are, then checked whole.

    PEFT keeps the adapted module names as a set and writes them in the set's order, which changes
    from process to process (string hashing is salted); sorted, an unchanged adapter keeps its DVC
    hash, so the stages after a rerun that trained the same adapter are not rerun. ``state_dict`` is
    what ``gather_adapter`` returned (the full weights when they were sharded).
    """
    for config in model.peft_config.values():
        if isinstance(config.target_modules, (set, frozenset)):
            config.target_modules = sorted(config.target_modules)
    kwargs = {"state_dict": state_dict} if state_dict is not None else {}
    model.save_pretrained(directory, safe_serialization=True, **kwargs)
    check_adapter(directory, model)


def check_adapter(directory: Path, model) -> None:
    """Every LoRA matrix saved at its full rank, finite: a shard saved by mistake (or an empty file) fails."""
    from safetensors import safe_open

    path = Path(directory) / "adapter_model.safetensors"
    ranks = {name: cfg.r for name, cfg in model.peft_config.items()}
    rank = next(iter(ranks.values()))
    with safe_open(path, "pt") as fh:
        names = list(fh.keys())
        if not names:
            raise UserError(f"{path}: the saved adapter holds no weights")
        for name in names:
            tensor = fh.get_tensor(name)
            expected = {"lora_A": 0, "lora_B": 1}
            for part, axis in expected.items():
                if f".{part}." in name and tensor.shape[axis] != rank:
                    raise UserError(f"{path}: {name} has shape {tuple(tensor.shape)}, not rank {rank}: "
                                    "a shard of the weights was saved, not the whole")
            if not tensor.isfinite().all():
                raise UserError(f"{path}: {name} holds NaN or infinite values")


class ScratchDir:
    """A private folder for the trainer's own files; removed whatever happens."""

    def __enter__(self) -> str:
        self.path = tempfile.mkdtemp(prefix="trainer-")
        return self.path

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def is_main_process(trainer) -> bool:
    """Under `accelerate launch` every process trains; only the main one writes outputs."""
    return trainer.accelerator.is_main_process


def summarize_training(trainer, train_set: list[dict], run) -> dict:
    """Losses at the first and last logged step, real tokens seen (no padding) and throughput."""
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    steps = trainer.state.global_step
    world = trainer.accelerator.num_processes
    per_step = trainer.args.per_device_train_batch_size * trainer.args.gradient_accumulation_steps * world
    # Real tokens: every example's length, over the examples the steps actually consumed.
    lengths = [len(e["input_ids"]) for e in train_set]
    seen_examples = steps * per_step
    full, rest = divmod(seen_examples, len(lengths))
    tokens = full * sum(lengths) + sum(lengths[:rest])
    train_s = next((h["train_runtime"] for h in reversed(trainer.state.log_history) if "train_runtime" in h), run.wall_s)
    return {
        "steps": steps,
        "global_batch_size": per_step,
        "processes": world,
        "per_device_batch_size": trainer.args.per_device_train_batch_size,
        "gradient_accumulation_steps": trainer.args.gradient_accumulation_steps,
        "train_loss_first": losses[0] if losses else None,
        "train_loss_last": losses[-1] if losses else None,
        "tokens_seen": tokens,
        "train_runtime_s": round(train_s, 2),
        "tokens_per_s": round(tokens / train_s, 1) if train_s else 0.0,
        "wall_s": run.wall_s,
        "peak_rss_mb": run.peak_rss_mb,
    }
