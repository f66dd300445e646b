"""SFT training throughput on the default model, against this CPU's fp32 matrix-product roofline.

    python -m benchmarks.training [--steps 6] [--skip-defaults]

Needs models/base and data/sft/train.jsonl (``dvc repro generate_sft``). In one process:
- our setup (stages.lib.training: fp32 on a CPU, no gradient checkpointing), ``--steps`` LoRA steps;
- the same steps with TRL's defaults for precision and checkpointing (bf16 autocast, checkpointing on);
- fp32 matmul GFLOP/s, the roofline.
Tokens are real tokens (padding excluded). LoRA training is taken to cost 4 x parameters FLOPs a token
(forward 2N, backward through the frozen weights 2N; the adapters' own cost is negligible).
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch

from benchmarks.generation import cpu_model, matmul_gflops


def run_sft_steps(records: list[dict], steps: int, trl_defaults: bool, group_by_length: bool = True) -> dict:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from stages.lib.hardware import resolve_precision
    from stages.lib.loader import load_base_model, load_tokenizer
    from stages.lib.params import load_params
    from stages.lib.sft_tokenize import tokenize_records
    from stages.lib.training import ScratchDir, common_args, lora_config, training_precision

    sft = load_params().sft.model_copy(update={"max_steps": steps, "logging_steps": 1})
    precision = training_precision(resolve_precision())
    tokenizer = load_tokenizer("models/base")
    examples = tokenize_records(tokenizer, records, sft.max_length)
    model = load_base_model("models/base", precision)
    n_params = sum(p.numel() for p in model.parameters())
    with ScratchDir() as scratch:
        kwargs = common_args(sft, precision, scratch, has_eval=False) | {"group_by_length": group_by_length}
        if trl_defaults:  # what TRL does when nobody sets these
            kwargs.pop("bf16"), kwargs.pop("fp16"), kwargs.pop("gradient_checkpointing")
        args = SFTConfig(**kwargs, completion_only_loss=True, packing=False)
        trainer = SFTTrainer(model=model, args=args, processing_class=tokenizer, peft_config=lora_config(sft.lora),
                             train_dataset=Dataset.from_list(examples))
        step_times, step_tokens = [], []

        from transformers import TrainerCallback

        class Timer(TrainerCallback):
            def on_step_begin(self, *a, **k):
                self.t = time.perf_counter()

            def on_step_end(self, *a, **k):
                step_times.append(time.perf_counter() - self.t)

        trainer.add_callback(Timer())
        original = trainer.compute_loss

        def counting_loss(model, inputs, *a, **k):
            step_tokens.append(int(inputs["attention_mask"].sum()))
            return original(model, inputs, *a, **k)

        trainer.compute_loss = counting_loss
        trainer.train()
    # The first step pays one-off costs (allocations, autocast caches): leave it out.
    seconds, tokens = sum(step_times[1:]), sum(step_tokens[1:])
    return {"bf16": args.bf16, "gradient_checkpointing": args.gradient_checkpointing, "steps": len(step_times) - 1,
            "seconds": round(seconds, 2), "tokens": tokens, "tokens_per_s": round(tokens / seconds, 1),
            "gflops": round(4 * n_params * tokens / seconds / 1e9, 1), "params": n_params}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--skip-defaults", action="store_true", help="skip the slow TRL-defaults run")
    parser.add_argument("--json")
    args = parser.parse_args()
    from stages.lib.hardware import set_threads

    threads = set_threads(0)
    records = [json.loads(line) for line in open("data/sft/train.jsonl")]
    roofline = matmul_gflops(torch.float32, size=2048)
    ours = run_sft_steps(records, args.steps, trl_defaults=False)
    defaults = None if args.skip_defaults else run_sft_steps(records, max(2, args.steps // 3), trl_defaults=True)
    result = {"machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": threads,
                          "load_avg": os.getloadavg()},
              "fp32_matmul_gflops": round(roofline, 1), "ours": ours, "trl_defaults": defaults}
    print(f"machine: {result['machine']}")
    print(f"fp32 matmul roofline: {roofline:.0f} GFLOP/s")
    print(f"SFT ours (fp32, no checkpointing): {ours['tokens_per_s']} tokens/s = {ours['gflops']} GFLOP/s "
          f"= {ours['gflops'] / roofline:.0%} of roofline")
    if defaults:
        print(f"SFT with TRL defaults (bf16={defaults['bf16']}, checkpointing={defaults['gradient_checkpointing']}): "
              f"{defaults['tokens_per_s']} tokens/s; ours is {ours['tokens_per_s'] / defaults['tokens_per_s']:.1f}x faster")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
