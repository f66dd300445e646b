"""Stage train_dpo: DPO with a LoRA adapter, from the SFT model (train_dpo.init=sft) or the base (init=base).

Recipe: read the preference pairs; load a fresh base and merge the starting adapter into it if
there is one; train a new LoRA adapter with TRL's DPOTrainer (stages.lib.trainers: its output layer
scores only completion tokens), the reference being the same weights with the adapter switched off,
its log-probabilities computed once per pair before training; save the adapter, with the adapter it
started from under start/ (so models/dpo holds the whole model on top of the base), a manifest naming
its init, curves, metrics.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from stages.lib.adapters import require_adapter
from stages.lib.dpo_setup import dpo_setup
from stages.lib.errors import stage_main
from stages.lib.io import atomic_dir, remove_outputs, write_json_atomic
from stages.lib.loader import apply_adapters, load_base_model, load_tokenizer
from stages.lib.manifest import build_manifest, environment
from stages.lib.model_session import precision_for
from stages.lib.params import load_params
from stages.lib.paths import BASE_MODEL, DPO_ADAPTER, PREF_PAIRS, START_ADAPTER, curves_dir, metrics_path, stage_files
from stages.lib.records import PreferencePair, read_jsonl
from stages.lib.runinfo import measured
from stages.lib.training_attention import train_attention_in_fp32
from stages.lib.training import (
    ScratchDir, check_finite, dvclive_callback, finite_loss_guard, gather_adapter, is_main_process, publish_curves,
    save_adapter, summarize_training,
)

METRICS = metrics_path("train_dpo")
LIVE = stage_files("train_dpo")  # DVCLive's folder; dvc.yaml declares its curves (curves_dir) as plots
CURVES = ("loss", "rewards/margins", "rewards/accuracies", "rewards/chosen", "rewards/rejected")


def curve_ends(log_history: list[dict]) -> dict:
    """First and last logged value of each DPO curve."""
    out = {}
    for key in CURVES:
        values = [h[key] for h in log_history if key in h]
        if values:
            name = key.replace("/", "_")
            out[f"{name}_first"], out[f"{name}_last"] = values[0], values[-1]
    return out


@stage_main
def main() -> None:
    from datasets import Dataset
    from trl import DPOConfig

    from stages.lib.trainers import LeanDPOTrainer

    params = load_params()
    pairs = [{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected}
             for p in read_jsonl(PREF_PAIRS, PreferencePair)]
    precision = precision_for(params.model)
    remove_outputs(DPO_ADAPTER, METRICS, curves_dir("train_dpo"))
    tokenizer = load_tokenizer(BASE_MODEL, trust_remote_code=params.model.trust_remote_code)

    with ScratchDir() as scratch, measured() as run:
        setup = dpo_setup(params.train_dpo, precision, scratch)
        if setup.init != "base":
            require_adapter(setup.init, why=f"train_dpo.init={setup.init}")
        model = load_base_model(BASE_MODEL, precision, trust_remote_code=params.model.trust_remote_code,
                                attn_implementation=params.model.attn_implementation)
        model = apply_adapters(model, setup.start_adapters, merge_all=True)
        train_attention_in_fp32(model, params.model.attn_implementation)
        trainer = LeanDPOTrainer(
            model=model, ref_model=None, args=DPOConfig(**setup.config_kwargs), train_dataset=Dataset.from_list(pairs),
            processing_class=tokenizer, peft_config=setup.lora,
            callbacks=[dvclive_callback(Path(scratch) / "live"), finite_loss_guard()],
        )
        trainer.train()
        check_finite(trainer, "train_dpo")
        weights = gather_adapter(trainer)  # every process: under FSDP / ZeRO-3 each holds only a shard
        publish_curves(trainer, Path(scratch) / "live", LIVE)  # only now: a failed run leaves no partial curves

    if not is_main_process(trainer):
        return
    token_counts = [{"input_ids": [0] * n} for n in _pair_lengths(tokenizer, pairs, params.train_dpo.max_length)]
    metrics = (summarize_training(trainer, token_counts, run) | curve_ends(trainer.state.log_history)
               | {"init": setup.init, "n_pairs": len(pairs), "environment": environment()})
    with atomic_dir(DPO_ADAPTER) as tmp:
        save_adapter(trainer.model, tmp, weights)
        for adapter in setup.start_adapters:  # the whole stack in one folder: evaluation reads models/dpo alone
            shutil.copytree(adapter, tmp / START_ADAPTER, ignore=shutil.ignore_patterns("manifest.json"))
        write_json_atomic(tmp / "manifest.json", build_manifest(
            stage="train_dpo", init=setup.init, start_adapters=[str(a) for a in setup.start_adapters],
            reference=f"{setup.init} model (policy with the DPO adapter disabled)",
            precision=precision.to_dict(), dpo=params.train_dpo.model_dump()))
    write_json_atomic(METRICS, metrics)
    print(f"train_dpo (init={setup.init}): loss {metrics.get('loss_first')} -> {metrics.get('loss_last')}, "
          f"reward margin {metrics.get('rewards_margins_last')}, accuracy {metrics.get('rewards_accuracies_last')}; "
          f"{run.wall_s} s")


def _pair_lengths(tokenizer, pairs: list[dict], max_length: int) -> list[int]:
    """Real tokens per pair (prompt + chosen, prompt + rejected), for the throughput figure."""
    from stages.lib.loader import encode

    out = []
    for p in pairs:
        prompt = len(encode(tokenizer, [p["prompt"]])[0])
        out.append(min(prompt + len(encode(tokenizer, [p["chosen"]])[0]) + 1, max_length)
                   + min(prompt + len(encode(tokenizer, [p["rejected"]])[0]) + 1, max_length))
    return out


if __name__ == "__main__":
    main()
