"""DPO training throughput and peak memory: train_dpo's configuration against the one before (issue 11).

    python -m benchmarks.dpo [--pairs 48] [--repeat 2] [--dtype float32] [--variants "ours;before"] [--json out]

Needs models/base, models/sft (train_dpo.init=sft, the default) and data/prefs/pairs.jsonl. Each variant runs in a
fresh process (so its peak resident memory is its own) on the first --pairs preference pairs, one epoch, exactly
as train_dpo builds its trainer apart from the variant's changes:

- ours: train_dpo now (stages.lib.trainers.LeanDPOTrainer, dpo_setup's configuration);
- before: the configuration before issue 11: TRL's DPOTrainer and its CPU log-probability head, the reference
  forward on every step, random batches, 8 pairs a forward pass (the baseline);
- ours without one change each (TRL's head / reference every step / random batches / 8 pairs a forward
  pass / each prompt computed twice), or with glibc's mmap threshold fixed, to attribute the gain and the memory.

Tokens are real tokens (prompt + chosen and prompt + rejected, no padding), the figure train_dpo reports. The
time is the trainer's construction (TRL tokenises there, and precomputes the reference there when asked)
plus training: everything but loading the model, as wall time and as this process's CPU time (on a machine
shared with other work the wall time stretches while the CPU time stays close to the work done; exact with
--threads 1). Variants run in interleaved rounds; each keeps its best (by CPU time).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.host import MALLOC_VARIANTS, benchmark_precision, describe, host_kind, split_batch
from stages.lib.paths import PREF_PAIRS

PAIRS = PREF_PAIRS

VARIANTS = {
    "ours": {},
    "before": {"head": "trl", "precompute_ref_log_probs": False, "train_sampling_strategy": "random",
               "half_attention": True, **split_batch(8)},
    **MALLOC_VARIANTS,
    **{f"ours, micro-batch {n}": split_batch(n) for n in (8, 4, 2, 1)},

    "ours, TRL's head": {"head": "trl"},
    "ours, reference every step": {"precompute_ref_log_probs": False},
    "ours, random batches": {"train_sampling_strategy": "random"},
    # PEFT's default: every adapted layer's input cast to the adapter's fp32 (autocast casts it straight back)
    "ours, LoRA input cast": {"lora_input_cast": True},
    # TRL's reference pass: the pairs in the dataset's order, 2 a batch (padded to the longer pair)
    "ours, reference pass in dataset order": {"reference_order": "dataset"},
    "ours, reference pass 8 pairs a batch": {"precompute_ref_batch_size": 8},
    # attention in the model's bf16 (torch's flash kernel), as before stages.lib.training_attention
    "ours, bf16 attention": {"half_attention": True},
    # TRL's stacked batch as it comes: each prompt twice, the shorter answer padded (stages.lib.shared_prompt)
    "ours, prompts twice": {"share_prompts": False},
}


def restore_peft_input_cast(model, enabled: bool = True) -> None:
    """PEFT's cast of each LoRA layer's input to the adapter's fp32, back on (the baseline the lean trainers'
    ``keep_lora_inputs_in_compute_dtype`` is measured against) or off."""
    for module in model.modules():
        if hasattr(module, "cast_input_dtype_enabled"):
            module.cast_input_dtype_enabled = enabled


def reset_peak_rss() -> None:
    """Start VmHWM afresh (Linux: writing 5 to clear_refs), so the next reading is this phase's peak."""
    Path("/proc/self/clear_refs").write_text("5")


def run_variant(name: str, n_pairs: int, dtype: str | None, threads: int | None = None) -> dict:
    """One variant, in this process: the figures of a DPO epoch over the first ``n_pairs`` pairs."""
    from dataclasses import replace

    import torch
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from stages.lib.dpo_setup import dpo_setup
    from stages.lib.trainers import LeanDPOTrainer
    from stages.lib.loader import apply_adapters, load_base_model, load_tokenizer
    from stages.lib.params import load_params
    from stages.lib.paths import BASE_MODEL
    from stages.lib.records import PreferencePair, read_jsonl
    from stages.lib.runinfo import peak_rss_mb
    from stages.lib.training import ScratchDir
    from stages.lib.training_attention import train_attention_in_fp32
    from stages.train_dpo import _pair_lengths

    variant = dict(VARIANTS[name])
    variant.pop("env", None)
    head = variant.pop("head", "ours")
    lora_input_cast = variant.pop("lora_input_cast", False)
    reference_order = variant.pop("reference_order", "length")
    half_attention = variant.pop("half_attention", False)
    share_prompts = variant.pop("share_prompts", True)
    params = load_params()
    precision = benchmark_precision(params.model if threads is None else params.model.model_copy(update={"threads": threads}))
    if dtype:
        precision = replace(precision, dtype=dtype)
    pairs = [{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected}
             for p in read_jsonl(PAIRS, PreferencePair)[:n_pairs]]
    tokenizer = load_tokenizer(BASE_MODEL)
    tokens = sum(_pair_lengths(tokenizer, pairs, params.train_dpo.max_length))
    with ScratchDir() as scratch:
        setup = dpo_setup(params.train_dpo, precision, scratch)
        model = apply_adapters(load_base_model(BASE_MODEL, precision), setup.start_adapters, merge_all=True)
        if not half_attention:
            train_attention_in_fp32(model, params.model.attn_implementation)
        loaded_mb = peak_rss_mb()
        reset_peak_rss()
        start, cpu = time.perf_counter(), time.process_time()
        trainer_class = LeanDPOTrainer if head == "ours" else DPOTrainer
        if reference_order == "dataset":
            trainer_class = type("DatasetOrderDPOTrainer", (LeanDPOTrainer,),
                                 {"_precompute_ref_logps": DPOTrainer._precompute_ref_logps})
        if not share_prompts:
            trainer_class = type("StackedPairsDPOTrainer", (trainer_class,), {"share_prompts": False})
        config = DPOConfig(**(setup.config_kwargs | variant | {"disable_tqdm": True}))
        trainer = trainer_class(model=model, ref_model=None, args=config, train_dataset=Dataset.from_list(pairs),
                                processing_class=tokenizer, peft_config=setup.lora)
        if lora_input_cast:
            restore_peft_input_cast(trainer.model)
        init_s, init_mb = time.perf_counter() - start, peak_rss_mb()
        reset_peak_rss()
        start = time.perf_counter()
        trainer.train()
        train_s, train_mb = time.perf_counter() - start, peak_rss_mb()
        cpu_s = time.process_time() - cpu
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    seconds = init_s + train_s
    return {"variant": name, "dtype": precision.dtype, "pairs": len(pairs), "steps": trainer.state.global_step,
            "tokens": tokens, "init_s": round(init_s, 2), "train_s": round(train_s, 2),
            "tokens_per_s": round(tokens / seconds, 1), "cpu_s": round(cpu_s, 1),
            "tokens_per_cpu_s": round(tokens / cpu_s, 2), "threads": torch.get_num_threads(),
            "peak_rss_mb": round(max(loaded_mb, init_mb, train_mb), 1),
            "rss_phases_mb": {"model loaded": round(loaded_mb, 1), "trainer built": round(init_mb, 1),
                              "training": round(train_mb, 1)},
            "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None,
            "precompute_ref_log_probs": config.precompute_ref_log_probs,
            "sampler": config.train_sampling_strategy, "head": head,
            "micro_batch": config.per_device_train_batch_size, "accumulation": config.gradient_accumulation_steps}


def run_in_child(name: str, n_pairs: int, dtype: str | None, threads: int | None) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.dpo", "--child", name, "--pairs", str(n_pairs)]
    if dtype:
        cmd += ["--dtype", dtype]
    if threads:
        cmd += ["--threads", str(threads)]
    env = dict(os.environ, **VARIANTS[name].get("env", {}))
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=48, help="the first N preference pairs (8 a step)")
    parser.add_argument("--repeat", type=int, default=2, help="interleaved rounds of every variant; the best is kept")
    parser.add_argument("--dtype", default=None, help="float32 to measure the path of a host without native bf16")
    parser.add_argument("--variants", default="ours;before", help=f"separated by ';', of: {'; '.join(VARIANTS)}")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: model.threads)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(run_variant(args.child, args.pairs, args.dtype, args.threads)))
        return {}

    names = [v.strip() for v in args.variants.split(";") if v.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; known: {list(VARIANTS)}")
    host = host_kind()
    all_runs: dict[str, list[dict]] = {n: [] for n in names}
    for _ in range(args.repeat):
        for name in names:
            all_runs[name].append(run_in_child(name, args.pairs, args.dtype, args.threads))
    runs = {n: max(r, key=lambda x: x["tokens_per_cpu_s"]) for n, r in all_runs.items()}
    result = {"host": host, "host_after": host_kind()["load_average"], "pairs": args.pairs, "runs": runs,
              "all_runs": {n: [(r["tokens_per_s"], r["tokens_per_cpu_s"], r["peak_rss_mb"]) for r in rs]
                           for n, rs in all_runs.items()}}
    print(f"host: {describe(host)}")
    base = runs.get("before")
    for name, run in runs.items():
        ratio = (f"; {run['tokens_per_s'] / base['tokens_per_s']:.2f}x before (wall), "
                 f"{run['tokens_per_cpu_s'] / base['tokens_per_cpu_s']:.2f}x (CPU time)") if base and name != "before" else ""
        print(f"DPO {name:<28} [{run['dtype']}, {run['threads']} threads] {run['tokens_per_s']:7.1f} tokens/s "
              f"(build {run['init_s']} s + train {run['train_s']} s), {run['tokens_per_cpu_s']:.2f} tokens per "
              f"CPU-second, peak RSS {run['peak_rss_mb']:.0f} MB {run['rss_phases_mb']}{ratio}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
