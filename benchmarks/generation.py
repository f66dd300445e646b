"""Generation throughput: stages.lib.generation now against the slot decoder before issue 11, on the real model.

    python -m benchmarks.generation [--workloads eval,sft,sft-long] [--variants ours,before] [--n 48]
                                    [--repeat 2] [--dtype float32] [--threads N] [--profile] [--json out.json]

Needs models/base, data/instructions and data/fewshot.jsonl (models/sft for --adapter). Workloads, built as
the stages build them:

- eval: evaluate's zero-shot prompts (the test suite), greedy, evaluate.max_new_tokens, evaluate.batch_size
  (the first --n; `--n 0`: all of them, as the stage runs them: 48 prompts do not fill a batch of 192);
- sft: generate_sft's few-shot prompts (generate_sft.n_shots examples each), generate_sft.samples_per_prompt
  samples at generate_sft.temperature / top_p, generate_sft.batch_size;
- prefs: build_prefs' zero-shot prompts, build_prefs.samples_per_prompt samples each (with --adapter models/sft,
  as there);
- sft-long: issue 10's coming SFT workload: 6 examples a prompt (about 470 tokens, examples drawn per
  instruction so few prompts share a prefix), 4 samples each at temperature 0.8.

Variants, run in one process on one loaded model, in interleaved rounds (each keeps its best round):

- ours: ``stages.lib.generation.generate``;
- before: the same function from the commit before issue 11 (BASELINE_COMMIT), read with ``git show``, with
  that commit's batch sizes (BASELINE_BATCH);
- "ours, batch B": ours with batch_size B (to choose the defaults);
- "one at a time": a loop of single-sequence ``model.generate`` calls (the original research code's way).

Tokens are generated tokens (end-of-sequence and padding excluded). Besides wall-clock tokens/s, tokens per
CPU-second (this process's user + system time) are printed: on a machine shared with other work a process's
wall time stretches while its CPU time stays close to the work done (with 1 thread; with 2, one thread's
waiting for the other at a barrier counts too).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from benchmarks.host import benchmark_precision, describe, host_kind

BASELINE_COMMIT = "d669c26"  # the slot decoder as it was when issue 11 was filed
BASELINE_BATCH = {"eval": 16, "prefs": 16}  # eval.batch_size and prefs.batch_size then (64 since)


def cpu_model() -> str:
    return host_kind()["cpu"] if Path("/proc/cpuinfo").exists() else platform.processor() or "unknown"


def matmul_gflops(dtype: torch.dtype, size: int = 1024, seconds: float = 1.0) -> float:
    """Sustained GFLOP/s of a square matrix product in ``dtype`` with the current torch threads."""
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    for _ in range(3):
        a @ b
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        runs += 1
    return 2 * size**3 * runs / (time.perf_counter() - start) / 1e9


def baseline_generation_module():
    """stages/lib/generation.py as of BASELINE_COMMIT, imported under another name."""
    source = subprocess.run(["git", "show", f"{BASELINE_COMMIT}:stages/lib/generation.py"], check=True,
                            capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp(prefix="gen-baseline-")) / "generation_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("generation_before", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def one_at_a_time(model, tokenizer, prompts, settings, stop_strings, samples_per_prompt, desc=""):
    """A loop of single-sequence ``model.generate`` calls; returns (token counts per sample, as lists)."""
    from transformers import StoppingCriteriaList
    from transformers.generation.stopping_criteria import StopStringCriteria

    criteria = StoppingCriteriaList([StopStringCriteria(tokenizer, list(stop_strings))])
    sampling = settings.temperature > 0
    kwargs = dict(max_new_tokens=settings.max_new_tokens, do_sample=sampling,
                  repetition_penalty=settings.repetition_penalty, pad_token_id=tokenizer.pad_token_id,
                  eos_token_id=tokenizer.eos_token_id, stopping_criteria=criteria)
    kwargs.update(dict(temperature=settings.temperature, top_p=settings.top_p, top_k=0) if sampling
                  else dict(temperature=None, top_p=None, top_k=None))
    torch.manual_seed(settings.seed)
    out = []
    with torch.inference_mode():
        for prompt in prompts:
            ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"].to(model.device)
            counts = []
            for _ in range(samples_per_prompt):
                new = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs)[0, ids.shape[1]:]
                new = new.tolist()
                counts.append(new.index(tokenizer.eos_token_id) if tokenizer.eos_token_id in new else len(new))
            out.append(counts)
    return out


def workload(name: str, n: int, params):
    """(prompts, settings, stop strings, samples per prompt) as the stage that runs ``name`` builds them, for its
    first ``n`` prompts (0: all)."""
    from stages.generate_sft import as_shots, build_prompts
    from stages.lib.generation import GenerationSettings, greedy
    from stages.lib.paths import FEWSHOT, TRAIN_INSTRUCTIONS, suite_path
    from stages.lib.prompts import stop_strings, zero_shot_prompt
    from stages.lib.records import FewShotExample, Instruction, read_jsonl

    gen = params.generate_sft
    stops = stop_strings(gen.delimiter)
    if name == "eval":
        prompts = [zero_shot_prompt(p.prompt) for p in read_jsonl(suite_path("test"), Instruction)[:n or None]]
        return prompts, greedy(params.evaluate.max_new_tokens, params.evaluate.batch_size), stops, 1
    shots = as_shots(read_jsonl(FEWSHOT, FewShotExample))
    instructions = read_jsonl(TRAIN_INSTRUCTIONS, Instruction)[:n or None]
    settings = GenerationSettings(gen.max_new_tokens, gen.temperature, gen.top_p, gen.repetition_penalty,
                                  gen.batch_size, gen.seed)
    if name == "sft":
        return (build_prompts(instructions, shots, gen.n_shots, gen.delimiter, gen.seed), settings, stops,
                gen.samples_per_prompt)
    if name == "prefs":  # build_prefs: zero-shot prompts, several samples each (run it with --adapter models/sft)
        prefs = params.build_prefs
        prompts = [zero_shot_prompt(i.prompt) for i in instructions]
        return prompts, GenerationSettings(prefs.max_new_tokens, prefs.temperature, prefs.top_p, 1.0,
                                           prefs.batch_size, prefs.seed), stops, prefs.samples_per_prompt
    if name == "sft-long":
        return (build_prompts(instructions, shots, 6, gen.delimiter, gen.seed), replace(settings, temperature=0.8),
                stops, 4)
    raise ValueError(f"unknown workload {name!r}")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", default="eval,sft,sft-long")
    parser.add_argument("--variants", default="ours;before",
                        help="separated by ';': ours, before, 'ours, batch B', 'one at a time'")
    parser.add_argument("--n", type=int, default=48, help="prompts per workload (the first N; 0: all)")
    parser.add_argument("--repeat", type=int, default=2, help="interleaved rounds; each variant keeps its best")
    parser.add_argument("--dtype", default=None, help="float32: the path of a host without native bf16")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: model.threads)")
    parser.add_argument("--adapter", default=None,
                        help="a LoRA adapter on the base, loaded as the stages load it (merged unless quantized)")
    parser.add_argument("--profile", action="store_true",
                        help="then run ours once more on each workload under torch.profiler: its ops' shares of CPU time")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    from stages.lib import generation
    from stages.lib.model_session import open_model
    from stages.lib.params import load_params

    params = load_params()
    model_params = params.model.model_copy(update={k: v for k, v in (("dtype", args.dtype), ("threads", args.threads))
                                                   if v is not None})
    precision = benchmark_precision(model_params)
    model, tokenizer, precision = open_model(model_params, [args.adapter] if args.adapter else [], precision=precision)
    before = baseline_generation_module()
    variants = [v.strip() for v in args.variants.split(";") if v.strip()]
    host = host_kind()

    def run(variant: str, name: str, prompts, settings, stops, k) -> tuple[int, float, float]:
        if variant == "before" and name in BASELINE_BATCH:
            settings = replace(settings, batch_size=BASELINE_BATCH[name])
        start, cpu = time.perf_counter(), time.process_time()
        if variant == "one at a time":
            tokens = sum(sum(c) for c in one_at_a_time(model, tokenizer, prompts, settings, stops, k))
        else:
            module = before if variant == "before" else generation
            if variant.startswith("ours, batch "):
                settings = replace(settings, batch_size=int(variant.rsplit(" ", 1)[1]))
            # the baseline commit still called the samples per prompt num_samples
            per_prompt = {"num_samples" if variant == "before" else "samples_per_prompt": k}
            samples = module.generate(model, tokenizer, prompts, settings, stop_strings=stops, desc=variant,
                                      **per_prompt)
            tokens = sum(s.n_tokens for per in samples for s in per)
        return tokens, time.perf_counter() - start, time.process_time() - cpu

    loads = {name: workload(name, args.n, params) for name in args.workloads.split(",")}
    for name, (prompts, settings, stops, k) in loads.items():  # warm-up: kernel choice and first allocations
        for variant in variants:
            if variant != "one at a time":
                run(variant, name, prompts[:2], replace(settings, max_new_tokens=4), stops, k)
    all_runs: dict[str, dict[str, list]] = {w: {v: [] for v in variants} for w in loads}
    for _ in range(args.repeat):
        for name, (prompts, settings, stops, k) in loads.items():
            for variant in variants:
                all_runs[name][variant].append(run(variant, name, prompts, settings, stops, k))
    figures = {"host": host, "host_after": host_kind()["load_average"], "dtype": precision.dtype,
               "threads": torch.get_num_threads(), "adapter": args.adapter, "workloads": {}}
    print(f"host: {describe(host)}; generation in {precision.dtype} with {torch.get_num_threads()} threads"
          + (f"; adapter {args.adapter}" if args.adapter else ""))
    for name, runs in all_runs.items():
        prompts, settings, _, k = loads[name]
        lengths = [len(ids) for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]]
        best = {v: max(r, key=lambda x: x[0] / x[1]) for v, r in runs.items()}
        best_cpu = {v: max(x[0] / x[2] for x in r) for v, r in runs.items()}
        entry = {"prompts": len(prompts), "samples_per_prompt": k, "mean_prompt_tokens": round(sum(lengths) / len(lengths), 1),
                 "settings": settings.__dict__, "variants": {}}
        for v in runs:
            tokens, wall, cpu = best[v]
            entry["variants"][v] = {"tokens": tokens, "seconds": round(wall, 2), "tokens_per_s": round(tokens / wall, 1),
                                    "tokens_per_cpu_s": round(best_cpu[v], 1),
                                    "all_rounds_tokens_per_s": [round(t / w, 1) for t, w, _ in runs[v]]}
        figures["workloads"][name] = entry
        base = entry["variants"].get("before")
        print(f"{name}: {len(prompts)} prompts x {k}, mean prompt {entry['mean_prompt_tokens']} tokens, "
              f"{settings.max_new_tokens} new tokens max, temperature {settings.temperature}, batch {settings.batch_size}")
        for v, e in entry["variants"].items():
            ratio = ""
            if base and v != "before":
                ratio = (f"  {e['tokens_per_s'] / base['tokens_per_s']:.2f}x before (wall), "
                         f"{e['tokens_per_cpu_s'] / base['tokens_per_cpu_s']:.2f}x (CPU time)")
            print(f"  {v:<18} {e['tokens']:6d} tokens, {e['tokens_per_s']:7.1f} tokens/s, "
                  f"{e['tokens_per_cpu_s']:7.1f} per CPU-second{ratio}  rounds {e['all_rounds_tokens_per_s']}")
    if args.profile:
        for name, (prompts, settings, stops, k) in loads.items():
            shares = op_shares(lambda: run("ours", name, prompts, settings, stops, k))
            figures["workloads"][name]["profile_ours"] = shares
            print(f"{name}, ours, share of CPU time by op: " + ", ".join(f"{op} {share:.1%}" for op, share in shares.items()))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return figures


def op_shares(work, top: int = 8) -> dict[str, float]:
    """The ``top`` torch ops by their own CPU time while ``work()`` runs, as shares of all ops' time."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as recorded:
        work()
    events = recorded.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    ranked = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    return {e.key: round(e.self_cpu_time_total / total, 3) for e in ranked}


if __name__ == "__main__":
    main()
