"""Every benchmark, one table: `make bench` (or `python -m benchmarks.run [--full-repro] [--dtype float32]`).

Each figure is a ratio against a baseline measured in the same run, on this machine, and carries the host's
kind (CPU family and the flags that choose the fast paths, benchmarks.host):
- generation: stages.lib.generation now against the slot decoder before issue 11, on the eval workload (the
  whole test suite, as the evaluate stage runs it), and 48 prompts of the SFT, build_prefs and issue 10's longer
  SFT workloads (benchmarks.generation);
- SFT training: train_sft's configuration against the one before issue 11, with peak memory (benchmarks.training);
- DPO training: train_dpo's configuration against the one before issue 11, with peak memory (benchmarks.dpo);
- evaluation: each evaluate stage's peak resident memory against the model's fp32 weights, and that peak
  less the runtime's own (a process that imports the same libraries and loads the tokenizer, no model);
- `dvc repro` with nothing to do, against (with --full-repro) a full forced `dvc repro` of the default pipeline.
Needs the default pipeline to have run once (`make repro`). Writes benchmarks/results.json (or --out).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import dpo, generation, training
from benchmarks.host import describe, gemm_gflops, host_kind
from stages.lib.paths import SFT_ADAPTER, stage_files

RESULTS = Path("benchmarks/results.json")

# The runtime an evaluate stage carries before any model: its imports and the tokenizer (+ peft for adapters).
RUNTIME_PROBE = """
import sys
sys.path.insert(0, ".")
import stages.evaluate
from stages.lib.loader import load_tokenizer
from stages.lib.paths import BASE_MODEL
from stages.lib.runinfo import peak_rss_mb
load_tokenizer(BASE_MODEL)
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
    for path in sorted(stage_files("evaluate").glob("*.json")):  # metrics/evaluate/<model>-<suite>.json
        m = json.loads(path.read_text())
        fp32_mb = m["weights_mb"] * (4 / 2 if m["precision"]["dtype"] in ("bfloat16", "float16") else 1)
        base_mb = runtime[m["model"] != "base"]  # a model with adapters also imports peft
        out[path.stem] = {"peak_rss_mb": m["peak_rss_mb"], "fp32_weights_mb": round(fp32_mb, 1),
                          "ratio": round(m["peak_rss_mb"] / fp32_mb, 2), "runtime_rss_mb": round(base_mb, 1),
                          "model_ratio": round((m["peak_rss_mb"] - base_mb) / fp32_mb, 2)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full-repro", action="store_true", help="also time a forced full `dvc repro` (~15 min)")
    parser.add_argument("--dtype", default=None, help="float32: measure the path of a host without native bf16")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    dtype = ["--dtype", args.dtype] if args.dtype else []

    host = host_kind()
    kind = f"{host['kind']}, {args.dtype or host['auto_dtype']}"
    gemm = gemm_gflops()
    dvc = [str(Path(sys.executable).parent / "dvc")]
    # eval as the evaluate stage runs it: the whole test suite, which fills its batch of 192 rows (48 prompts do not)
    gen = generation.main(["--workloads", "eval", "--n", "0", "--repeat", "2", *dtype])
    gen["workloads"] |= generation.main(["--workloads", "sft,sft-long", "--n", "48", "--repeat", "2", *dtype])["workloads"]
    prefs = generation.main(["--workloads", "prefs", "--n", "48", "--repeat", "2", "--adapter", str(SFT_ADAPTER),
                             *dtype])
    gen["workloads"] |= prefs["workloads"]
    sft = training.main(["--repeat", "2", *dtype])
    pref = dpo.main(["--pairs", "48", "--repeat", "2", *dtype])
    memory = eval_memory()
    noop = timed(dvc + ["repro"])
    full = timed(dvc + ["repro", "--force"]) if args.full_repro else None

    rows = []
    for name, w in gen["workloads"].items():
        ours, before = w["variants"]["ours"], w["variants"]["before"]
        rows.append((f"generation, {name} ({w['prompts']} prompts x {w['samples_per_prompt']}, "
                     f"~{w['mean_prompt_tokens']:.0f}-token prompts)",
                     f"{ours['tokens_per_s']:.0f} vs {before['tokens_per_s']:.0f} tokens/s",
                     f"{ours['tokens_per_s'] / before['tokens_per_s']:.2f}x",
                     f"{ours['tokens_per_cpu_s'] / before['tokens_per_cpu_s']:.2f}x per CPU-second; ours vs before"))
    for label, result in (("SFT", sft), ("DPO", pref)):
        ours, before = result["runs"]["ours"], result["runs"]["before"]
        rows.append((f"{label} training, ours vs before issue 11",
                     f"{ours['tokens_per_s']:.0f} vs {before['tokens_per_s']:.0f} tokens/s",
                     f"{ours['tokens_per_s'] / before['tokens_per_s']:.2f}x",
                     f"{ours['tokens_per_cpu_s'] / before['tokens_per_cpu_s']:.2f}x per CPU-second; "
                     f"peak RSS {ours['peak_rss_mb']:.0f} vs {before['peak_rss_mb']:.0f} MB"))
    for model, m in memory.items():
        rows.append((f"evaluate@{model} peak memory (last stage run)", f"{m['peak_rss_mb']:.0f} MB vs "
                     f"{m['fp32_weights_mb']:.0f} MB fp32", f"{m['ratio']}x",
                     f"{m['model_ratio']}x without the {m['runtime_rss_mb']:.0f} MB runtime"))
    rows.append(("dvc repro, nothing to do", f"{noop:.1f} s", f"{noop / full:.3f} of full" if full else "-",
                 f"full repro {full / 60:.1f} min" if full else "run with --full-repro"))

    print(f"\nhost: {describe(host)}")
    print(f"256 x 576 by 576 x 1536 product, GFLOP/s: {gemm}")
    width = max(len(r[0]) for r in rows)
    for name, figure, ratio, note in rows:
        print(f"{name:<{width}}  {figure:<28} {ratio:<8} {note}  [{kind}]")
    args.out.write_text(json.dumps({"host": host, "dtype": args.dtype or host["auto_dtype"], "gemm_gflops": gemm,
                                    "generation": gen,
                                    "sft": sft, "dpo": pref, "eval_memory": memory, "noop_repro_s": noop,
                                    "full_repro_s": full}, indent=2) + "\n")


if __name__ == "__main__":
    main()
