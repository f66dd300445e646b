"""Every benchmark, one table: `make bench` (or `python -m benchmarks.run [--full-repro]`).

Each figure is a ratio against a baseline measured in the same run, on this machine:
- generation: our batched path vs one prompt at a time (benchmarks.generation), and its roofline fraction;
- SFT training: tokens/s as a fraction of the fp32 matmul roofline, and against TRL's default
  precision and checkpointing (benchmarks.training);
- DPO training: tokens/s from the last train_dpo run (metrics/train_dpo.json) against the same roofline;
- evaluation: each evaluate stage's peak resident memory against the model's weights (metrics/eval/*.json);
- `dvc repro` with nothing to do, against (with --full-repro) a full forced `dvc repro` of the default pipeline.
Needs the default pipeline to have run once (`make repro`). Writes benchmarks/results.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import generation, training
from benchmarks.generation import cpu_model, matmul_gflops

RESULTS = Path("benchmarks/results.json")


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - start


def eval_memory() -> dict:
    out = {}
    for path in sorted(Path("metrics/eval").glob("*.json")):
        m = json.loads(path.read_text())
        fp32_mb = m["weights_mb"] * (4 / 2 if m["precision"]["dtype"] in ("bfloat16", "float16") else 1)
        out[path.stem] = {"peak_rss_mb": m["peak_rss_mb"], "fp32_weights_mb": round(fp32_mb, 1),
                          "ratio": round(m["peak_rss_mb"] / fp32_mb, 2)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full-repro", action="store_true", help="also time a forced full `dvc repro` (~15 min)")
    args = parser.parse_args()
    import torch

    dvc = [str(Path(sys.executable).parent / "dvc")]
    gen = generation.main(["--n", "48", "--baseline-n", "8"])
    roofline = matmul_gflops(torch.float32, size=2048)
    sft = training.run_sft_steps([json.loads(x) for x in open("data/sft/train.jsonl")], 6, trl_defaults=False)
    sft_defaults = training.run_sft_steps([json.loads(x) for x in open("data/sft/train.jsonl")], 2, trl_defaults=True)
    dpo = json.loads(Path("metrics/train_dpo.json").read_text())
    dpo_gflops = 4 * sft["params"] * dpo["tokens_per_s"] / 1e9
    noop = timed(dvc + ["repro"])
    full = timed(dvc + ["repro", "--force"]) if args.full_repro else None

    rows = [
        ("generation, batched vs one at a time", f"{gen['batched']['tokens_per_s']:.0f} vs "
         f"{gen['one_at_a_time']['tokens_per_s']:.0f} tokens/s", f"{gen['speedup']}x",
         f"{gen['batched']['roofline_fraction']:.0%} of {gen['machine']['dtype']} roofline"),
        ("SFT training, ours vs TRL defaults", f"{sft['tokens_per_s']:.0f} vs {sft_defaults['tokens_per_s']:.0f} tokens/s",
         f"{sft['tokens_per_s'] / sft_defaults['tokens_per_s']:.1f}x", f"{sft['gflops'] / roofline:.0%} of fp32 roofline"),
        ("DPO training (last train_dpo run)", f"{dpo['tokens_per_s']:.0f} tokens/s", "-",
         f"{dpo_gflops / roofline:.0%} of fp32 roofline"),
    ]
    for model, m in eval_memory().items():
        rows.append((f"evaluate@{model} peak memory", f"{m['peak_rss_mb']:.0f} MB vs {m['fp32_weights_mb']:.0f} MB fp32 weights",
                     f"{m['ratio']}x", "target < 2x"))
    rows.append(("dvc repro, nothing to do", f"{noop:.1f} s", f"{noop / full:.3f} of full" if full else "-",
                 f"full repro {full / 60:.1f} min" if full else "run with --full-repro"))

    machine = f"{cpu_model()}, {len(os.sched_getaffinity(0))} cores, torch {torch.__version__}, load {os.getloadavg()[0]:.1f}"
    print(f"\nmachine: {machine}; fp32 matmul roofline {roofline:.0f} GFLOP/s")
    width = max(len(r[0]) for r in rows)
    for name, figure, ratio, note in rows:
        print(f"{name:<{width}}  {figure:<40} {ratio:<16} {note}")
    RESULTS.write_text(json.dumps({"machine": machine, "fp32_roofline_gflops": roofline, "generation": gen,
                                   "sft": sft, "sft_trl_defaults": sft_defaults, "dpo_tokens_per_s": dpo["tokens_per_s"],
                                   "eval_memory": eval_memory(), "noop_repro_s": noop, "full_repro_s": full},
                                  indent=2) + "\n")


if __name__ == "__main__":
    main()
