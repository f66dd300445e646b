"""Every benchmark, one table: `make bench` (or `python -m benchmarks.run [--full-repro]`).

Each figure is a ratio against a baseline measured in the same run, on this machine:
- generation: our batched path vs one prompt at a time (benchmarks.generation), and its roofline fraction;
- SFT training: train_sft's configuration as a fraction of the fp32 matmul roofline, and against fp32,
  LoRA dropout, random batches and TRL's default precision and checkpointing (benchmarks.training);
- DPO training: tokens/s of the last train_dpo run (metrics/train_dpo.json) against the same roofline;
- evaluation: each evaluate stage's peak resident memory against the model's fp32 weights, and that peak
  less the runtime's own (a process that imports the same libraries and loads the tokenizer, no model);
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
from benchmarks.generation import cpu_model

RESULTS = Path("benchmarks/results.json")

# The runtime an evaluate stage carries before any model: its imports and the tokenizer (+ peft for adapters).
RUNTIME_PROBE = """
import sys
sys.path.insert(0, ".")
import stages.evaluate
from stages.lib.loader import load_tokenizer
from stages.lib.runinfo import peak_rss_mb
load_tokenizer("models/base")
if sys.argv[1] == "peft":
    import peft
print(peak_rss_mb())
"""


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - start


def runtime_rss_mb(with_peft: bool) -> float:
    out = subprocess.run([sys.executable, "-c", RUNTIME_PROBE, "peft" if with_peft else "-"],
                         check=True, capture_output=True, text=True).stdout
    return float(out.split()[-1])


def eval_memory() -> dict:
    runtime = {False: runtime_rss_mb(False), True: runtime_rss_mb(True)}
    out = {}
    for path in sorted(Path("metrics/eval").glob("*.json")):
        m = json.loads(path.read_text())
        fp32_mb = m["weights_mb"] * (4 / 2 if m["precision"]["dtype"] in ("bfloat16", "float16") else 1)
        base_mb = runtime[path.stem != "base"]
        out[path.stem] = {"peak_rss_mb": m["peak_rss_mb"], "fp32_weights_mb": round(fp32_mb, 1),
                          "ratio": round(m["peak_rss_mb"] / fp32_mb, 2), "runtime_rss_mb": round(base_mb, 1),
                          "model_ratio": round((m["peak_rss_mb"] - base_mb) / fp32_mb, 2)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full-repro", action="store_true", help="also time a forced full `dvc repro` (~15 min)")
    args = parser.parse_args()
    import torch

    dvc = [str(Path(sys.executable).parent / "dvc")]
    gen = generation.main(["--n", "48", "--baseline-n", "8", "--repeat", "2"])
    sft = training.main(["--repeat", "2"])
    roofline = sft["fp32_matmul_gflops"]
    ours, trl, fp32 = sft["runs"]["ours"], sft["runs"]["TRL defaults"], sft["runs"]["fp32"]
    dpo = json.loads(Path("metrics/train_dpo.json").read_text())
    # DPO a token: policy forward and backward (4N) and the reference's forward (2N, the adapter disabled).
    dpo_gflops = 6 * ours["params"] * dpo["tokens_per_s"] / 1e9
    memory = eval_memory()
    noop = timed(dvc + ["repro"])
    full = timed(dvc + ["repro", "--force"]) if args.full_repro else None

    rows = [
        ("generation, batched vs one at a time", f"{gen['batched']['tokens_per_s']:.0f} vs "
         f"{gen['one_at_a_time']['tokens_per_s']:.0f} tokens/s", f"{gen['speedup']}x",
         f"{gen['batched']['roofline_fraction']:.0%} of {gen['machine']['dtype']} roofline"),
        ("SFT training, ours vs TRL defaults", f"{ours['tokens_per_s']:.0f} vs {trl['tokens_per_s']:.0f} tokens/s",
         f"{ours['tokens_per_s'] / trl['tokens_per_s']:.2f}x", f"{sft['roofline_fraction']:.0%} of fp32 roofline"),
        ("SFT training, ours vs fp32", f"{ours['tokens_per_s']:.0f} vs {fp32['tokens_per_s']:.0f} tokens/s",
         f"{ours['tokens_per_s'] / fp32['tokens_per_s']:.2f}x", f"bf16={ours['bf16']}"),
        ("DPO training (last train_dpo run)", f"{dpo['tokens_per_s']:.0f} tokens/s", "-",
         f"{dpo_gflops / roofline:.0%} of fp32 roofline at 6N FLOPs/token"),
    ]
    for model, m in memory.items():
        rows.append((f"evaluate@{model} peak memory", f"{m['peak_rss_mb']:.0f} MB vs {m['fp32_weights_mb']:.0f} MB fp32",
                     f"{m['ratio']}x", f"{m['model_ratio']}x without the {m['runtime_rss_mb']:.0f} MB runtime"))
    rows.append(("dvc repro, nothing to do", f"{noop:.1f} s", f"{noop / full:.3f} of full" if full else "-",
                 f"full repro {full / 60:.1f} min" if full else "run with --full-repro"))

    machine = f"{cpu_model()}, {len(os.sched_getaffinity(0))} cores, torch {torch.__version__}, load {os.getloadavg()[0]:.1f}"
    print(f"\nmachine: {machine}; fp32 matmul roofline {roofline:.0f} GFLOP/s")
    width = max(len(r[0]) for r in rows)
    for name, figure, ratio, note in rows:
        print(f"{name:<{width}}  {figure:<40} {ratio:<10} {note}")
    RESULTS.write_text(json.dumps({"machine": machine, "fp32_roofline_gflops": roofline, "generation": gen,
                                   "sft": sft, "dpo_tokens_per_s": dpo["tokens_per_s"],
                                   "dpo_roofline_fraction": round(dpo_gflops / roofline, 3),
                                   "eval_memory": memory, "noop_repro_s": noop, "full_repro_s": full},
                                  indent=2) + "\n")


if __name__ == "__main__":
    main()
