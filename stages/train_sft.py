"""Stage train_sft: LoRA SFT on generate_sft's prompt/completion records, loss on the completion only.

Recipe: read the SFT records; tokenise prompt and completion separately (exact completion mask);
split off an eval set; train a LoRA adapter with TRL's SFTTrainer, precision and checkpointing chosen
from the hardware; save the adapter with a manifest, the curves through DVCLive, and the metrics.
"""
from __future__ import annotations

import random
from pathlib import Path

from stages.lib.errors import stage_main
from stages.lib.io import atomic_dir, remove_outputs, write_json_atomic
from stages.lib.loader import load_base_model, load_tokenizer
from stages.lib.manifest import build_manifest, environment
from stages.lib.model_session import precision_for
from stages.lib.params import load_params
from stages.lib.paths import BASE_MODEL, SFT_ADAPTER, SFT_DATA, curves_dir, metrics_path, stage_files
from stages.lib.records import SftExample, dump, read_jsonl
from stages.lib.runinfo import measured
from stages.lib.sft_tokenize import tokenize_records
from stages.lib.training_attention import train_attention_in_fp32
from stages.lib.training import (
    ScratchDir, check_finite, dvclive_callback, finite_loss_guard, gather_adapter, is_main_process, lora_config,
    publish_curves, save_adapter, sft_config, summarize_training,
)

METRICS = metrics_path("train_sft")
LIVE = stage_files("train_sft")  # DVCLive's folder; dvc.yaml declares its curves (curves_dir) as plots


def split(examples: list[dict], eval_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_eval = int(round(len(examples) * eval_fraction)) if len(examples) > 1 else 0
    eval_ids = set(order[:n_eval])
    return ([e for i, e in enumerate(examples) if i not in eval_ids], [e for i, e in enumerate(examples) if i in eval_ids])


@stage_main
def main() -> None:
    from datasets import Dataset

    from stages.lib.trainers import LeanSFTTrainer

    params = load_params()
    sft = params.train_sft
    records = dump(read_jsonl(SFT_DATA, SftExample))
    remove_outputs(SFT_ADAPTER, METRICS, curves_dir("train_sft"))

    precision = precision_for(params.model)
    tokenizer = load_tokenizer(BASE_MODEL, trust_remote_code=params.model.trust_remote_code)
    train_set, eval_set = split(tokenize_records(tokenizer, records, sft.max_length), sft.eval_fraction, sft.seed)
    model = load_base_model(BASE_MODEL, precision,
                            trust_remote_code=params.model.trust_remote_code,
                            attn_implementation=params.model.attn_implementation)
    train_attention_in_fp32(model, params.model.attn_implementation)
    with ScratchDir() as scratch, measured() as run:
        args = sft_config(sft, precision, scratch, has_eval=bool(eval_set))
        trainer = LeanSFTTrainer(
            model=model, args=args, processing_class=tokenizer, peft_config=lora_config(sft.lora),
            train_dataset=Dataset.from_list(train_set), eval_dataset=Dataset.from_list(eval_set) if eval_set else None,
            callbacks=[dvclive_callback(Path(scratch) / "live"), finite_loss_guard()],
        )
        eval_before = trainer.evaluate()["eval_loss"] if eval_set else None
        trainer.train()
        eval_after = trainer.evaluate()["eval_loss"] if eval_set else None
        check_finite(trainer, "train_sft")
        weights = gather_adapter(trainer)  # every process: under FSDP / ZeRO-3 each holds only a shard
        publish_curves(trainer, Path(scratch) / "live", LIVE)  # only now: a failed run leaves no partial curves

    if not is_main_process(trainer):
        return
    metrics = summarize_training(trainer, train_set, run) | {"eval_loss_before": eval_before, "eval_loss_after": eval_after,
                                                             "n_train": len(train_set), "n_eval": len(eval_set),
                                                             "environment": environment()}
    with atomic_dir(SFT_ADAPTER) as tmp:
        save_adapter(trainer.model, tmp, weights)
        write_json_atomic(tmp / "manifest.json", build_manifest(
            stage="train_sft", base=str(BASE_MODEL), precision=precision.to_dict(), sft=sft.model_dump(),
            gradient_checkpointing=args.activation_checkpointing))
    write_json_atomic(METRICS, metrics)
    print(f"train_sft: loss {metrics['train_loss_first']:.3f} -> {metrics['train_loss_last']:.3f}, "
          f"eval loss {eval_before} -> {eval_after}; {metrics['tokens_per_s']:.0f} tokens/s; {run.wall_s} s")


if __name__ == "__main__":
    main()
