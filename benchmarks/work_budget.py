"""How fast could the default `dvc repro` run on this host? Its weight products against the host's product rate.

    python -m benchmarks.work_budget [--json out.json]

Reads what the default run left (metrics/*.json, data/sft, data/prefs, data/eval; run `make repro` first) and,
for each model stage, counts the arithmetic of its weight products: every token each stage runs through the
decoder's linear layers (a forward pass, the backward pass's input gradients, the DPO reference pass) and
every position whose next-token logits it computes (the output layer). It then measures this host's rate for
those products (the model's weight shapes, the dtype and thread count models/base/base.json records, the best
of several row counts) and prints, per stage, the time those products alone would take at that rate beside
the time the stage took (its metrics' wall_s).

The counts are lower bounds, so the times are too: attention, LoRA's own small products, normalisation and
sampling are left out; prefill counts each generation prompt's tokens once, and prompts that share a prefix
(few-shot examples) share it; build_prefs' generated tokens are only the on-policy texts its pairs kept; and
evaluation's are the responses as scored (cut at the stop string). A stage can not run faster than its bound
on this host without doing less arithmetic.
"""
from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoConfig

from benchmarks.host import describe, gflops_rate, host_kind
from stages.lib.base_model import read_base_manifest
from stages.lib.loader import encode, load_tokenizer
from stages.lib.paths import BASE_MODEL, OUTCOMES_DIR, PREF_PAIRS, SFT_DATA, eval_metrics_path, metrics_path
from stages.lib.prompts import zero_shot_prompt
from stages.lib.records import EvalOutcome, PreferencePair, SftExample, read_jsonl

ROWS = (64, 256, 512)  # a decoding step's batch, a micro-batch, a long prefill


@dataclass(frozen=True)
class Shapes:
    """The weight products of one token through a Llama-style decoder."""
    layer_weights: tuple[tuple[int, int], ...]  # (in, out) of each linear layer in one decoder layer
    layers: int
    head: tuple[int, int]  # hidden -> vocabulary

    @classmethod
    def of(cls, config: dict) -> "Shapes":
        hidden, inter = config["hidden_size"], config["intermediate_size"]
        kv = hidden // config["num_attention_heads"] * config.get("num_key_value_heads", config["num_attention_heads"])
        return cls(((hidden, hidden), (hidden, kv), (hidden, kv), (hidden, hidden),
                    (hidden, inter), (hidden, inter), (inter, hidden)), config["num_hidden_layers"],
                   (hidden, config["vocab_size"]))

    @property
    def layer_flops(self) -> int:
        """Multiply-adds of one token through every decoder layer's linear products, as FLOPs."""
        return 2 * self.layers * sum(i * o for i, o in self.layer_weights)

    @property
    def head_flops(self) -> int:
        return 2 * self.head[0] * self.head[1]


@dataclass(frozen=True)
class Work:
    layer_tokens: int  # token passes through the decoder layers (forward, backward's input gradients, reference)
    head_positions: int  # positions whose logits are computed, counted per pass as above

    def flops(self, shapes: Shapes) -> int:
        return self.layer_tokens * shapes.layer_flops + self.head_positions * shapes.head_flops


def product_rate(shapes: Shapes, dtype: torch.dtype, seconds: float = 1.0) -> dict[int, float]:
    """GFLOP/s of one token-batch of ``rows`` through all of the model's weight shapes, for each row count."""
    rates = {}
    with torch.no_grad():
        for rows in ROWS:
            pairs = [(torch.randn(rows, i, dtype=dtype), torch.randn(o, i, dtype=dtype))
                     for i, o in (*shapes.layer_weights, shapes.head)]
            flops = sum(2 * rows * x.shape[1] * w.shape[0] for x, w in pairs)
            rates[rows] = round(gflops_rate(lambda: [F.linear(x, w) for x, w in pairs], flops, seconds), 1)
    return rates


def unique_prefix_tokens(sequences: list[list[int]]) -> int:
    """Tokens in the trie of ``sequences``: each shared prefix counted once (the best a prefix cache can do)."""
    total, previous = 0, ()
    for seq in sorted(set(map(tuple, sequences))):  # in sorted order, a sequence shares most with the one before
        total += len(seq) - len(os.path.commonprefix([seq, previous]))
        previous = seq
    return total


def lengths(tokenizer, texts: list[str]) -> list[int]:
    return [len(ids) for ids in encode(tokenizer, texts)] if texts else []


def metrics(stage: str) -> dict:
    path = metrics_path(stage)
    if not path.is_file():
        raise SystemExit(f"{path}: missing; run the default pipeline first (`make repro`)")
    return json.loads(path.read_text())


def stage_work(tokenizer) -> dict[str, tuple[Work, float]]:
    """(arithmetic, measured wall seconds) for every model stage of the default run."""
    sft = read_jsonl(SFT_DATA, SftExample)
    pairs = read_jsonl(PREF_PAIRS, PreferencePair)
    work = {}

    gen = metrics("generate_sft")
    prompts = encode(tokenizer, sorted({r.generation_prompt for r in sft}))
    work["generate_sft"] = (Work(unique_prefix_tokens(prompts) + gen["generated_tokens"], gen["generated_tokens"]),
                            gen["wall_s"])

    # SFT: tokens_seen counts every real token of every step (both epochs); the head runs on the labelled
    # (completion) positions only, in the forward and the backward pass.
    train = metrics("train_sft")
    completion_share = sum(lengths(tokenizer, [r.completion for r in sft])) / sum(
        lengths(tokenizer, [r.prompt + r.completion for r in sft]))
    labelled = int(train["tokens_seen"] * completion_share)
    work["train_sft"] = (Work(2 * train["tokens_seen"], 2 * labelled), train["wall_s"])

    prefs = metrics("build_prefs")
    policy_texts = sorted({p.chosen for p in pairs if p.chosen_source == "policy"}
                          | {p.rejected for p in pairs if p.rejected_type == "policy"})
    generated = sum(lengths(tokenizer, policy_texts))
    prompt_tokens = unique_prefix_tokens(encode(tokenizer, sorted({r.prompt for r in sft})))
    work["build_prefs"] = (Work(prompt_tokens + generated, generated), prefs["wall_s"])

    # DPO: tokens_seen counts both rows of every pair (prompt + chosen, prompt + rejected), but a pair's prompt runs
    # through the model once for both (stages.lib.shared_prompt); each token goes through the reference pass, the
    # policy's forward and its backward, the head through the answers' positions only.
    dpo = metrics("train_dpo")
    completions = sum(lengths(tokenizer, [p.chosen for p in pairs] + [p.rejected for p in pairs]))
    rows = sum(lengths(tokenizer, [p.prompt + p.chosen for p in pairs] + [p.prompt + p.rejected for p in pairs]))
    through_model = dpo["tokens_seen"] - sum(lengths(tokenizer, [p.prompt for p in pairs]))
    work["train_dpo"] = (Work(3 * through_model, int(3 * dpo["tokens_seen"] * completions / rows)), dpo["wall_s"])

    for path in sorted(OUTCOMES_DIR.glob("*.jsonl")):
        name = path.stem  # <model>-<suite>
        model, suite = name.split("-", 1)
        outcomes = read_jsonl(path, EvalOutcome)
        prompt_tokens = sum(lengths(tokenizer, [zero_shot_prompt(o.prompt) for o in outcomes]))
        generated = sum(lengths(tokenizer, [o.response for o in outcomes if o.response]))
        wall = json.loads(eval_metrics_path(model, suite).read_text())["wall_s"]
        work[f"evaluate@{name}"] = (Work(prompt_tokens + generated, generated), wall)
    return work


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)

    runtime = read_base_manifest(BASE_MODEL)["runtime"]
    torch.set_num_threads(runtime.get("threads") or torch.get_num_threads())
    dtype = getattr(torch, runtime["dtype"])
    shapes = Shapes.of(AutoConfig.from_pretrained(BASE_MODEL).to_dict())
    work = stage_work(load_tokenizer(BASE_MODEL))

    host = host_kind()
    rates = product_rate(shapes, dtype)
    best = max(rates.values())
    print(f"host: {describe(host)}")
    print(f"weight products in {runtime['dtype']}, {torch.get_num_threads()} threads, GFLOP/s by rows: "
          + ", ".join(f"{r}: {g}" for r, g in rates.items()) + f" (bound at the best, {best})")
    print(f"{'stage':<28}{'TFLOP':>8}{'bound s':>10}{'measured s':>12}{'share':>8}")
    rows, total_bound, total_wall = [], 0.0, 0.0
    for stage, (w, wall) in work.items():
        tflop = w.flops(shapes) / 1e12
        bound = tflop * 1e3 / best
        total_bound, total_wall = total_bound + bound, total_wall + wall
        rows.append({"stage": stage, "layer_tokens": w.layer_tokens, "head_positions": w.head_positions,
                     "tflop": round(tflop, 2), "bound_s": round(bound, 1), "measured_s": wall})
        print(f"{stage:<28}{tflop:>8.2f}{bound:>10.1f}{wall:>12.1f}{bound / wall:>8.0%}")
    print(f"{'model stages':<28}{'':>8}{total_bound:>10.1f}{total_wall:>12.1f}{total_bound / total_wall:>8.0%}")
    print(f"the default run's weight products alone, at this host's best rate: {total_bound / 60:.1f} min "
          f"(the stages took {total_wall / 60:.1f} min)")
    if args.json:
        args.json.write_text(json.dumps({"host": host, "dtype": runtime["dtype"], "threads": torch.get_num_threads(),
                                         "product_gflops_by_rows": rates, "stages": rows,
                                         "bound_s": round(total_bound, 1), "measured_s": round(total_wall, 1)},
                                        indent=2) + "\n")


if __name__ == "__main__":
    main()
