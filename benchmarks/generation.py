"""Generation throughput: our batched path against one prompt at a time, on the real base model.

    python -m benchmarks.generation [--n 120] [--baseline-n 12] [--batch-size B] [--json out.json]

Needs models/base (``dvc repro prepare_base``) and data/instructions/train.jsonl. Builds the first N
few-shot prompts exactly as generate_sft does (params.yaml's generate section), then in one process:

- batched: stages.lib.generation.generate (slot decoding, k samples per prompt, generate.batch_size);
- one at a time: a plain loop of ``model.generate`` on a single sequence per call, as the original research
  code did, with the same sampling settings and string stopping (criteria built once, so the baseline does
  not pay their setup on every call) on the first --baseline-n of the same prompts;
- fp32 and bf16 matrix-product throughput (GFLOP/s), to express each rate as a fraction of the roofline,
  taking a forward pass as 2 x parameters FLOPs per token.

Tokens are generated tokens, padding and end-of-sequence excluded. "Counting prompt tokens" adds each
prompt's tokens once per prompt (batched) or once per sample (the loop re-reads the prompt for every sample):
the useful work done per second, whatever shortcuts (shared few-shot prefixes) were taken.

The machine is shared with other work at times, and two processes each running 2 OpenMP threads on 2 cores
slow each other down by an order of magnitude: the load average before and after is printed, and a figure far
off a previous run is worth repeating when the machine is quiet.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


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


def one_at_a_time(model, tokenizer, prompts, settings, stop_strings, num_samples) -> tuple[int, float]:
    """(generated tokens, seconds) for a loop of single-sequence ``model.generate`` calls."""
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
    tokens, start = 0, time.perf_counter()
    with torch.inference_mode():
        for prompt in prompts:
            ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"].to(model.device)
            for _ in range(num_samples):
                new = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs)[0, ids.shape[1]:]
                new = new.tolist()
                if tokenizer.eos_token_id in new:
                    new = new[: new.index(tokenizer.eos_token_id)]
                tokens += len(new)
    return tokens, time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=120, help="prompts for the batched path (the first N of generate_sft's)")
    parser.add_argument("--baseline-n", type=int, default=12, help="of those, how many the one-at-a-time loop runs")
    parser.add_argument("--batch-size", type=int, default=None, help="override generate.batch_size")
    parser.add_argument("--repeat", type=int, default=1, help="interleaved runs of both paths; the best of each is kept")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)

    from stages.generate_sft import FEWSHOT, TRAIN, build_prompts
    from stages.lib.generation import GenerationSettings, generate
    from stages.lib.model_session import open_model, precision_for
    from stages.lib.params import load_params
    from stages.lib.prompts import Shot, stop_strings
    from stages.lib.records import FewShotExample, Instruction, read_jsonl

    load_before = [round(x, 2) for x in os.getloadavg()]
    params = load_params()
    gen = params.generate
    instructions = read_jsonl(TRAIN, Instruction)[: args.n]
    shots = [Shot(s.instruction, s.response) for s in read_jsonl(FEWSHOT, FewShotExample)]
    prompts = build_prompts(instructions, shots, gen.n_shots, gen.delimiter, gen.seed)
    precision = precision_for(params.model)
    model, tokenizer, precision = open_model(params.model, precision=precision)
    settings = GenerationSettings(gen.max_new_tokens, gen.temperature, gen.top_p, gen.repetition_penalty,
                                  args.batch_size or gen.batch_size, gen.seed)
    stops = stop_strings(gen.delimiter)
    n_params = sum(p.numel() for p in model.parameters())
    prompt_tokens = [len(ids) for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]]

    # Warm up both paths (kernel selection, first-call allocations) on a short prompt.
    warm = GenerationSettings(4, gen.temperature, gen.top_p, gen.repetition_penalty, 2, gen.seed)
    generate(model, tokenizer, prompts[:1], warm, stop_strings=stops, desc="warm-up")
    one_at_a_time(model, tokenizer, prompts[:1], warm, stops, 1)

    def peaks_now() -> dict[str, float]:
        return {"float32": matmul_gflops(torch.float32), "bfloat16": matmul_gflops(torch.bfloat16)}

    peaks_start = peaks_now()
    base_prompts = prompts[: args.baseline_n]
    batched_runs, single_runs = [], []
    for _ in range(args.repeat):  # interleaved, so a burst of other work hits both paths alike
        start = time.perf_counter()
        samples = generate(model, tokenizer, prompts, settings, stop_strings=stops, num_samples=gen.k, desc="batched")
        batched_runs.append((sum(s.n_tokens for per_prompt in samples for s in per_prompt), time.perf_counter() - start))
        single_runs.append(one_at_a_time(model, tokenizer, base_prompts, settings, stops, gen.k))
    peaks_end = peaks_now()
    # Other work on the machine only ever lowers a figure: keep the best of each.
    peaks = {k: max(peaks_start[k], peaks_end[k]) for k in peaks_start}
    batched_tokens, batched_s = max(batched_runs, key=lambda r: r[0] / r[1])
    single_tokens, single_s = max(single_runs, key=lambda r: r[0] / r[1])
    peak = peaks.get(precision.dtype, peaks["float32"])
    flops_per_token = 2 * n_params

    def fraction(tokens_per_s: float) -> float:
        return tokens_per_s * flops_per_token / (peak * 1e9)

    batched_rate, single_rate = batched_tokens / batched_s, single_tokens / single_s
    # Work actually done per second, prompts included: the batched path prefills each prompt once for its
    # k samples, the loop once per sample.
    batched_all = (batched_tokens + sum(prompt_tokens)) / batched_s
    single_all = (single_tokens + gen.k * sum(prompt_tokens[: args.baseline_n])) / single_s
    figures = {
        "machine": {
            "cpu": cpu_model(), "logical_cpus": os.cpu_count(), "usable_cpus": len(os.sched_getaffinity(0)),
            "torch_threads": torch.get_num_threads(), "device": precision.device, "dtype": precision.dtype,
            "torch": torch.__version__, "load_average_before": load_before,
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
        },
        "model": {"parameters": n_params, "gflop_per_token": round(flops_per_token / 1e9, 3)},
        "workload": {
            "prompts_batched": len(prompts), "prompts_one_at_a_time": len(base_prompts), "k": gen.k,
            "max_new_tokens": gen.max_new_tokens, "batch_size": settings.batch_size,
            "temperature": gen.temperature, "mean_prompt_tokens": round(sum(prompt_tokens) / len(prompt_tokens), 1),
        },
        "matmul_gflops": {k: round(v, 1) for k, v in peaks.items()},
        "all_runs_tokens_per_s": {"batched": [round(t / d, 1) for t, d in batched_runs],
                                  "one_at_a_time": [round(t / d, 1) for t, d in single_runs]},
        "batched": {"tokens": batched_tokens, "seconds": round(batched_s, 2), "tokens_per_s": round(batched_rate, 1),
                    "roofline_fraction": round(fraction(batched_rate), 4),
                    "roofline_fraction_with_prompts": round(fraction(batched_all), 4)},
        "one_at_a_time": {"tokens": single_tokens, "seconds": round(single_s, 2), "tokens_per_s": round(single_rate, 1),
                          "roofline_fraction": round(fraction(single_rate), 4),
                          "roofline_fraction_with_prompts": round(fraction(single_all), 4)},
        "speedup": round(batched_rate / single_rate, 2) if single_rate else None,
    }
    m, b, s = figures["machine"], figures["batched"], figures["one_at_a_time"]
    print(f"machine: {m['cpu']}; {m['usable_cpus']} usable of {m['logical_cpus']} logical CPUs; "
          f"torch {m['torch']} with {m['torch_threads']} threads; {m['device']} {m['dtype']}; "
          f"load average before {m['load_average_before']}, after {m['load_average_after']}")
    print(f"model: {n_params / 1e6:.1f}M parameters, {flops_per_token / 1e9:.2f} GFLOP per token; matmul peak "
          f"fp32 {peaks['float32']:.0f} GFLOP/s, bf16 {peaks['bfloat16']:.0f} GFLOP/s (roofline uses {precision.dtype})")
    print(f"workload: k={gen.k}, max_new_tokens={gen.max_new_tokens}, batch_size={settings.batch_size}, "
          f"temperature={gen.temperature}, mean prompt {figures['workload']['mean_prompt_tokens']} tokens")
    print(f"batched        : {b['tokens']:6d} tokens in {b['seconds']:7.1f} s = {b['tokens_per_s']:7.1f} tokens/s "
          f"({b['roofline_fraction']:.1%} of roofline; {b['roofline_fraction_with_prompts']:.1%} counting prompt tokens) "
          f"[{len(prompts)} prompts]")
    print(f"one at a time  : {s['tokens']:6d} tokens in {s['seconds']:7.1f} s = {s['tokens_per_s']:7.1f} tokens/s "
          f"({s['roofline_fraction']:.1%} of roofline; {s['roofline_fraction_with_prompts']:.1%} counting prompt tokens) "
          f"[first {len(base_prompts)} prompts]")
    print(f"speedup        : {figures['speedup']}x (best of {args.repeat}; all runs: "
          f"{figures['all_runs_tokens_per_s']})")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return figures


if __name__ == "__main__":
    main()
