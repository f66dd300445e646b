"""SFT training throughput on the default model, against this CPU's fp32 matrix-product roofline.

    python -m benchmarks.training [--steps 13] [--repeat 2] [--skip-baselines]

Needs models/base and data/sft/train.jsonl (``dvc repro generate_sft``). In one process, the same
number of LoRA steps on the same records, each variant on a freshly loaded model:
- ours: exactly train_sft's configuration (stages.lib.training.sft_config, the params' LoRA);
- fp32: ours, but in fp32 whatever the hardware offers;
- lora dropout 0.05: ours with LoRA dropout on (its Bernoulli masks are slow on a CPU);
- random batches: ours without grouping batches by length (more padding);
- TRL defaults: precision, gradient checkpointing and sampler left to TRL (bf16, checkpointing, random);
- fp32 matmul GFLOP/s, the roofline.
Tokens are real tokens (padding excluded). LoRA training is taken to cost 4 x parameters FLOPs a token
(forward 2N, backward through the frozen weights 2N; the adapters' own cost is negligible). The first
step of each run pays one-off costs and is left out.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace

import torch

from benchmarks.generation import cpu_model, matmul_gflops


def trl_defaults() -> dict:
    """What SFTConfig uses for precision, checkpointing and sampler when nobody sets them."""
    from trl import SFTConfig

    fields = SFTConfig.__dataclass_fields__
    defaults = {k: fields[k].default for k in ("bf16", "fp16", "gradient_checkpointing", "train_sampling_strategy")}
    return defaults | {"activation_checkpointing": None}  # unset, so the older name's default decides


def run_sft_steps(records: list[dict], steps: int, *, dtype: str | None = None, lora_dropout: float | None = None,
                  overrides: dict | None = None) -> dict:
    """``steps`` + 1 optimizer steps of train_sft's trainer; figures for all but the first. ``dtype``
    replaces the hardware's precision, ``overrides`` replaces fields of train_sft's SFTConfig."""
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import SFTTrainer

    from stages.lib.loader import load_base_model, load_tokenizer
    from stages.lib.model_session import precision_for
    from stages.lib.params import load_params
    from stages.lib.sft_tokenize import tokenize_records
    from stages.lib.training import ScratchDir, lora_config, sft_config

    params = load_params()
    sft = params.sft.model_copy(update={"max_steps": steps + 1, "logging_steps": 1})
    lora = sft.lora if lora_dropout is None else sft.lora.model_copy(update={"dropout": lora_dropout})
    precision = precision_for(params.model)
    if dtype:
        precision = replace(precision, dtype=dtype)
    tokenizer = load_tokenizer("models/base")
    examples = tokenize_records(tokenizer, records, sft.max_length)
    model = load_base_model("models/base", precision)
    n_params = sum(p.numel() for p in model.parameters())
    step_times, step_tokens = [], []

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t = time.perf_counter()

        def on_step_end(self, *a, **k):
            step_times.append(time.perf_counter() - self.t)

    with ScratchDir() as scratch:
        args = sft_config(sft, precision, scratch, has_eval=False)
        if overrides:
            args = replace(args, **overrides)
        trainer = SFTTrainer(model=model, args=args, processing_class=tokenizer, peft_config=lora_config(lora),
                             train_dataset=Dataset.from_list(examples), callbacks=[Timer()])
        original = trainer.compute_loss

        def counting_loss(model, inputs, *a, **k):
            step_tokens.append(int(inputs["attention_mask"].sum()))
            return original(model, inputs, *a, **k)

        trainer.compute_loss = counting_loss
        trainer.train()
    seconds, tokens = sum(step_times[1:]), sum(step_tokens[1:])
    return {"bf16": args.bf16, "gradient_checkpointing": args.activation_checkpointing,
            "sampler": args.train_sampling_strategy, "lora_dropout": lora.dropout, "steps": len(step_times) - 1,
            "seconds": round(seconds, 2), "tokens": tokens, "tokens_per_s": round(tokens / seconds, 1),
            "gflops": round(4 * n_params * tokens / seconds / 1e9, 1), "params": n_params}


def baselines() -> dict[str, dict]:
    """The variants train_sft's configuration is compared with: run_sft_steps arguments by name."""
    return {
        "fp32": {"dtype": "float32"},
        "lora dropout 0.05": {"lora_dropout": 0.05},
        "random batches": {"overrides": {"train_sampling_strategy": "random"}},
        "TRL defaults": {"overrides": trl_defaults()},
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=13, help="timed steps per variant, after one untimed (14 = an epoch of the default data)")
    parser.add_argument("--repeat", type=int, default=2, help="rounds of all variants; the best of each is kept")
    parser.add_argument("--skip-baselines", action="store_true", help="measure only train_sft's own configuration")
    parser.add_argument("--json")
    args = parser.parse_args(argv)

    records = [json.loads(line) for line in open("data/sft/train.jsonl")]
    variants = {"ours": {}} | ({} if args.skip_baselines else baselines())
    roofline_start = matmul_gflops(torch.float32, size=2048)
    all_runs: dict[str, list[dict]] = {name: [] for name in variants}
    for _ in range(args.repeat):  # rounds of every variant, so a burst of other work hits them alike
        for name, variant in variants.items():
            all_runs[name].append(run_sft_steps(records, args.steps, **variant))
    # Other work on this shared machine only ever lowers a figure: keep each one's best reading.
    roofline = max(roofline_start, matmul_gflops(torch.float32, size=2048))
    runs = {name: max(found, key=lambda r: r["tokens_per_s"]) for name, found in all_runs.items()}
    ours = runs["ours"]
    result = {"machine": {"cpu": cpu_model(), "cores": len(os.sched_getaffinity(0)),
                          "torch_threads": torch.get_num_threads(), "load_avg": os.getloadavg()},
              "fp32_matmul_gflops": round(roofline, 1), "runs": runs,
              "all_runs_tokens_per_s": {name: [r["tokens_per_s"] for r in found] for name, found in all_runs.items()},
              "roofline_fraction": round(ours["gflops"] / roofline, 3)}
    print(f"machine: {result['machine']}")
    print(f"fp32 matmul roofline: {roofline:.0f} GFLOP/s")
    for name, run in runs.items():
        ratio = "" if name == "ours" else f"; ours is {ours['tokens_per_s'] / run['tokens_per_s']:.2f}x this"
        print(f"SFT {name:<18} (bf16={run['bf16']}, checkpointing={run['gradient_checkpointing']}, "
              f"sampler={run['sampler']}, lora dropout={run['lora_dropout']}): {run['tokens_per_s']} tokens/s "
              f"= {run['gflops']} GFLOP/s = {run['gflops'] / roofline:.0%} of the fp32 roofline{ratio}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
    return result


if __name__ == "__main__":
    main()
