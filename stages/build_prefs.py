"""Stage build_prefs: preference pairs scored by the checkers, for both DPO variants.

Recipe: sample n responses per train instruction from the SFT model, in the SFT prompt format;
score each (checkers + validity gates); pair the best with the worst when the margin is large
enough; add synthetic negatives of weighted types against the best response; write the pairs,
a manifest and metrics/prefs.json.
"""
from __future__ import annotations

import random
import statistics
from collections import Counter
from pathlib import Path

from stages.lib import checkers, negatives
from stages.lib.cleaning import clean
from stages.lib.context_window import check_prompts_fit
from stages.lib.errors import UserError, stage_main
from stages.lib.generation import GenerationSettings, generate
from stages.lib.io import remove_outputs, write_json_atomic, write_jsonl_atomic
from stages.lib.manifest import build_manifest, environment
from stages.lib.model_session import open_model
from stages.lib.params import load_params
from stages.lib.preference import ScoredResponse, score_response
from stages.lib.prompts import as_completion, stop_strings, zero_shot_prompt
from stages.lib.records import Instruction, PreferencePair, read_jsonl
from stages.lib.runinfo import measured

TRAIN = Path("data/instructions/train.jsonl")
SFT_ADAPTER = Path("models/sft")
OUT = Path("data/prefs/pairs.jsonl")
MANIFEST = Path("data/prefs/manifest.json")
METRICS = Path("metrics/prefs.json")


def make_pair(instr: Instruction, chosen: ScoredResponse, rejected: ScoredResponse, kind: str) -> dict:
    return PreferencePair(
        prompt=zero_shot_prompt(instr.prompt), chosen=as_completion(chosen.text), rejected=as_completion(rejected.text),
        chosen_score=chosen.score, rejected_score=rejected.score, margin=round(chosen.score - rejected.score, 4),
        rejected_type=kind, key=instr.key, category=instr.category,
    ).model_dump(mode="json")


def synthetic_negative(kind: str, instr: Instruction, chosen: str, pool: list[str], rng: random.Random) -> str | None:
    if kind == "refusal":
        return negatives.refusal(rng)
    if kind == "format_violation":
        broken = negatives.format_violation(chosen, instr.instruction_id_list, instr.kwargs, rng)
        return broken[0] if broken else None
    if kind == "off_topic":
        return negatives.off_topic(pool, chosen, rng)
    if kind == "verbose":
        return negatives.verbose(chosen, rng)
    return negatives.truncated(chosen, rng)


def prefs_metrics(pairs: list[dict], n_instructions: int, attempted: Counter) -> dict:
    margins = sorted(p["margin"] for p in pairs)
    kinds = Counter(p["rejected_type"] for p in pairs)
    n = len(pairs)
    return {
        "n_pairs": n,
        "n_instructions": n_instructions,
        "from_policy": kinds.get("policy", 0),
        "from_synthetic": n - kinds.get("policy", 0),
        "policy_fraction": round(kinds.get("policy", 0) / n, 4) if n else 0.0,
        "type_mix": dict(sorted(kinds.items())),
        "synthetic_attempted": dict(sorted(attempted.items())),
        "margin": {
            "min": margins[0] if n else None,
            "median": statistics.median(margins) if n else None,
            "mean": round(statistics.fmean(margins), 4) if n else None,
            "max": margins[-1] if n else None,
        },
    }


@stage_main
def main() -> None:
    params = load_params()
    prefs, delimiter = params.prefs, params.generate.delimiter
    instructions = read_jsonl(TRAIN, Instruction)
    for instr in instructions:
        for iid, kw in zip(instr.instruction_id_list, instr.kwargs):
            checkers.validate_kwargs(iid, kw)
    if not (SFT_ADAPTER / "adapter_config.json").is_file():
        raise UserError(f"{SFT_ADAPTER}: the SFT adapter is missing; run `dvc repro train_sft`")
    remove_outputs(OUT, MANIFEST, METRICS)
    rng = random.Random(prefs.seed)  # seeded before anything is drawn, so runs repeat

    with measured() as run:
        model, tokenizer, precision = open_model(params.model, adapters=[SFT_ADAPTER])
        prompts = [zero_shot_prompt(i.prompt) for i in instructions]
        check_prompts_fit(model, tokenizer, prompts, prefs.max_new_tokens, budget_key="prefs.max_new_tokens",
                          source=str(TRAIN), keys=[i.key for i in instructions])
        settings = GenerationSettings(prefs.max_new_tokens, prefs.temperature, prefs.top_p, 1.0,
                                      prefs.batch_size, prefs.seed)
        samples = generate(model, tokenizer, prompts, settings, stop_strings=stop_strings(delimiter),
                           num_samples=prefs.n_samples, desc="build_prefs")

        scored_per_instr = []
        for instr, instr_samples in zip(instructions, samples):
            scored = []
            for s in instr_samples:
                cleaned = clean(s.text, delimiter, s.hit_token_limit)
                scored.append(score_response(cleaned.text, instr.prompt, instr.instruction_id_list, instr.kwargs,
                                             delimiter, cleaned.truncated))
            scored_per_instr.append(scored)
        best_texts = [max(sc, key=lambda r: r.score).text for sc in scored_per_instr if sc]

        pairs, attempted = [], Counter()
        for instr, scored in zip(instructions, scored_per_instr):
            ranked = sorted(scored, key=lambda r: -r.score)  # stable: ties keep sampling order
            best, worst = ranked[0], ranked[-1]
            if best.score - worst.score >= prefs.min_margin and best.text != worst.text:
                pairs.append(make_pair(instr, best, worst, "policy"))
            if best.failed_gates or not best.text:
                continue  # synthetic negatives need a sound response to contrast with
            for kind in negatives.draw_types(prefs.negative_weights, prefs.synthetic_per_prompt, rng):
                attempted[kind] += 1
                text = synthetic_negative(kind, instr, best.text, best_texts, rng)
                if not text or text.strip() == best.text.strip():
                    continue
                rejected = score_response(text, instr.prompt, instr.instruction_id_list, instr.kwargs, delimiter)
                if best.score - rejected.score >= prefs.min_margin:
                    pairs.append(make_pair(instr, best, rejected, kind))

    if not pairs:
        raise UserError(f"prefs.min_margin: no pair reached a margin of {prefs.min_margin}; no pairs written "
                        "(raise prefs.n_samples or lower prefs.min_margin)")
    metrics = prefs_metrics(pairs, len(instructions), attempted) | {"wall_s": run.wall_s, "peak_rss_mb": run.peak_rss_mb,
                                                                    "environment": environment()}
    write_jsonl_atomic(OUT, pairs)
    write_json_atomic(MANIFEST, build_manifest(stage="build_prefs", adapter=str(SFT_ADAPTER),
                                               precision=precision.to_dict(), prefs=prefs.model_dump()))
    write_json_atomic(METRICS, metrics)
    print(f"build_prefs: {metrics['n_pairs']} pairs ({metrics['from_policy']} policy, "
          f"{metrics['from_synthetic']} synthetic); median margin {metrics['margin']['median']}; {run.wall_s} s")


if __name__ == "__main__":
    main()
