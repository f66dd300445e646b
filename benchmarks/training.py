"""SFT training throughput and peak memory on the default model: train_sft's configuration against others.

    python -m benchmarks.training [--steps 13] [--repeat 2] [--variants "ours;before"] [--dtype float32]

Needs models/base and data/sft/train.jsonl (``dvc repro generate_sft``). Each variant runs in a fresh process
(its peak resident memory is its own), the same number of LoRA steps on the same records:
- ours: exactly train_sft's configuration (stages.lib.trainers.LeanSFTTrainer, training.sft_config);
- before: the configuration before issue 11: TRL's SFTTrainer with its CPU log-probability head, 8 records
  a forward pass;
- ours with 8 records a forward pass, or with glibc's mmap threshold fixed: to attribute the memory;
- fp32 / bf16: ours in that precision whatever `auto` picks (fp32: the path of a host without native bf16);
- lora dropout 0.05 / random batches / TRL defaults (precision, checkpointing and sampler left to TRL): the
  choices made earlier, kept measurable.
Tokens are real tokens (padding excluded). LoRA training is taken to cost 4 x parameters FLOPs a token
(forward 2N, backward through the frozen weights 2N). The first step pays one-off costs and is left out
of the rate (not of the memory).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import replace

import torch

from benchmarks.generation import matmul_gflops
from benchmarks.host import MALLOC_VARIANTS, benchmark_precision, describe, host_kind, split_batch
from stages.lib.paths import SFT_DATA


def trl_defaults() -> dict:
    """What SFTConfig uses for precision, checkpointing and sampler when nobody sets them."""
    from trl import SFTConfig

    fields = SFTConfig.__dataclass_fields__
    defaults = {k: fields[k].default for k in ("bf16", "fp16", "gradient_checkpointing", "train_sampling_strategy")}
    return defaults | {"activation_checkpointing": None}  # unset, so the older name's default decides


VARIANTS = {
    "ours": {},
    "before": {"trainer": "trl", "overrides": split_batch(8)},
    **MALLOC_VARIANTS,
    # every micro-batch padded to a multiple of 64 positions: fewer distinct product shapes for oneDNN to build and keep
    "ours, padded to a multiple of 64": {"overrides": {"pad_to_multiple_of": 64}},
    **{f"ours, micro-batch {n}": {"overrides": split_batch(n)} for n in (8, 4, 2)},
    "fp32": {"dtype": "float32"},
    "bf16": {"dtype": "bfloat16"},  # ours in bf16 whatever `auto` picks (an Intel CPU with AVX512-BF16 but no AMX)
    "lora dropout 0.05": {"lora_dropout": 0.05},
    "random batches": {"overrides": {"train_sampling_strategy": "random"}},
    "TRL defaults": {"trainer": "trl", "overrides": "trl_defaults"},
    # PEFT's default: every adapted layer's input cast to the adapter's fp32 (autocast casts it straight back)
    "ours, LoRA input cast": {"lora_input_cast": True},
    # attention in the model's bf16 (torch's flash kernel), as before stages.lib.training_attention
    "ours, bf16 attention": {"half_attention": True},
}


def run_sft_steps(records: list[dict], steps: int, *, dtype: str | None = None, lora_dropout: float | None = None,
                  overrides: dict | str | None = None, trainer: str = "ours",
                  threads: int | None = None, env: dict | None = None, lora_input_cast: bool = False,
                  half_attention: bool = False) -> dict:
    """``steps`` + 1 optimizer steps of train_sft's trainer; figures for all but the first. ``dtype``
    replaces the hardware's precision, ``overrides`` replaces fields of train_sft's SFTConfig."""
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import SFTTrainer

    from stages.lib.loader import load_base_model, load_tokenizer
    from stages.lib.params import load_params
    from stages.lib.paths import BASE_MODEL
    from stages.lib.runinfo import peak_rss_mb
    from stages.lib.sft_tokenize import tokenize_records
    from benchmarks.dpo import restore_peft_input_cast
    from stages.lib.trainers import LeanSFTTrainer
    from stages.lib.training_attention import train_attention_in_fp32
    from stages.lib.training import ScratchDir, lora_config, sft_config

    params = load_params()
    if threads:
        params = params.model_copy(update={"model": params.model.model_copy(update={"threads": threads})})
    sft = params.train_sft.model_copy(update={"max_steps": steps + 1, "logging_steps": 1})
    lora = sft.lora if lora_dropout is None else sft.lora.model_copy(update={"dropout": lora_dropout})
    precision = benchmark_precision(params.model)
    if dtype:
        precision = replace(precision, dtype=dtype)
    tokenizer = load_tokenizer(BASE_MODEL)
    examples = tokenize_records(tokenizer, records, sft.max_length)
    model = load_base_model(BASE_MODEL, precision)
    if trainer == "ours" and not half_attention:
        train_attention_in_fp32(model, params.model.attn_implementation)
    n_params = sum(p.numel() for p in model.parameters())
    step_times, step_cpu, step_tokens = [], [], []

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t, self.cpu = time.perf_counter(), time.process_time()

        def on_step_end(self, *a, **k):
            step_times.append(time.perf_counter() - self.t)
            step_cpu.append(time.process_time() - self.cpu)

    with ScratchDir() as scratch:
        args = sft_config(sft, precision, scratch, has_eval=False)
        if overrides:
            args = replace(args, **(trl_defaults() if overrides == "trl_defaults" else overrides))
        trainer_class = LeanSFTTrainer if trainer == "ours" else SFTTrainer
        run = trainer_class(model=model, args=args, processing_class=tokenizer, peft_config=lora_config(lora),
                            train_dataset=Dataset.from_list(examples), callbacks=[Timer()])
        if lora_input_cast:
            restore_peft_input_cast(run.model)
        original = run.compute_loss

        def counting_loss(model, inputs, *a, **k):
            step_tokens.append(int(inputs["attention_mask"].sum()))
            return original(model, inputs, *a, **k)

        run.compute_loss = counting_loss
        run.train()
    # Tokens per optimizer step: the micro-batches of a step add up.
    per_step = len(step_tokens) // len(step_times)
    tokens = sum(step_tokens[per_step:])
    seconds, cpu_s = sum(step_times[1:]), sum(step_cpu[1:])
    return {"trainer": trainer, "bf16": args.bf16, "gradient_checkpointing": args.activation_checkpointing,
            "sampler": args.train_sampling_strategy, "lora_dropout": lora.dropout,
            "micro_batch": args.per_device_train_batch_size, "accumulation": args.gradient_accumulation_steps,
            "steps": len(step_times) - 1, "seconds": round(seconds, 2), "tokens": tokens,
            "tokens_per_s": round(tokens / seconds, 1), "cpu_s": round(cpu_s, 1),
            "tokens_per_cpu_s": round(tokens / cpu_s, 2), "threads": torch.get_num_threads(), "gflops": round(4 * n_params * tokens / seconds / 1e9, 1),
            "params": n_params, "peak_rss_mb": round(peak_rss_mb(), 1)}


def run_in_child(name: str, steps: int, dtype: str | None, threads: int | None) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.training", "--child", name, "--steps", str(steps)]
    if dtype:
        cmd += ["--dtype", dtype]
    if threads:
        cmd += ["--threads", str(threads)]
    env = dict(os.environ, **VARIANTS[name].get("env", {}))
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=13, help="timed steps per variant, after one untimed (13 = an epoch of the default data)")
    parser.add_argument("--repeat", type=int, default=2, help="rounds of all variants; the best of each is kept")
    parser.add_argument("--variants", default="ours;before", help=f"separated by ';', of: {'; '.join(VARIANTS)}")
    parser.add_argument("--dtype", default=None, help="float32 for every variant (the path of a host without bf16)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: model.threads)")
    parser.add_argument("--json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        records = [json.loads(line) for line in open(SFT_DATA)]
        variant = dict(VARIANTS[args.child])
        if args.dtype:
            variant["dtype"] = args.dtype
        variant["threads"] = args.threads
        print(json.dumps(run_sft_steps(records, args.steps, **variant)))
        return {}

    names = [v.strip() for v in args.variants.split(";") if v.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; known: {list(VARIANTS)}")
    host = host_kind()
    roofline_start = matmul_gflops(torch.float32, size=2048)
    all_runs: dict[str, list[dict]] = {name: [] for name in names}
    for _ in range(args.repeat):  # rounds of every variant, so a burst of other work hits them alike
        for name in names:
            all_runs[name].append(run_in_child(name, args.steps, args.dtype, args.threads))
    # Other work on this shared machine only ever lowers a figure: keep each one's best reading.
    roofline = max(roofline_start, matmul_gflops(torch.float32, size=2048))
    runs = {name: max(found, key=lambda r: r["tokens_per_cpu_s"]) for name, found in all_runs.items()}
    ours = runs.get("ours") or next(iter(runs.values()))
    result = {"host": host, "host_after": host_kind()["load_average"], "fp32_matmul_gflops": round(roofline, 1),
              "runs": runs, "all_runs": {n: [(r["tokens_per_s"], r["tokens_per_cpu_s"], r["peak_rss_mb"]) for r in f]
                                         for n, f in all_runs.items()},
              "roofline_fraction": round(ours["gflops"] / roofline, 3)}
    print(f"host: {describe(host)}")
    print(f"fp32 matmul roofline: {roofline:.0f} GFLOP/s")
    for name, run in runs.items():
        ratio = "" if run is ours else (f"; ours is {ours['tokens_per_s'] / run['tokens_per_s']:.2f}x this (wall), "
                                        f"{ours['tokens_per_cpu_s'] / run['tokens_per_cpu_s']:.2f}x (CPU time)")
        print(f"SFT {name:<18} ({run['trainer']} trainer, bf16={run['bf16']}, checkpointing={run['gradient_checkpointing']}, "
              f"sampler={run['sampler']}, dropout={run['lora_dropout']}, micro-batch {run['micro_batch']} x "
              f"{run['accumulation']}, {run['threads']} threads): {run['tokens_per_s']} tokens/s = {run['gflops']} GFLOP/s, "
              f"{run['tokens_per_cpu_s']} per CPU-second "
              f"({run['gflops'] / roofline:.0%} of fp32 roofline), peak RSS {run['peak_rss_mb']:.0f} MB{ratio}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
    return result


if __name__ == "__main__":
    main()
