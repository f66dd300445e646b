"""Stage build_prefs: preference pairs that differ on the constraints, for both DPO variants.

Recipe: for every verified SFT record (data/sft), sample n responses from the SFT model in the SFT prompt
format and check each against the record's constraints. Chosen passes every constraint: an on-policy
sample when one passes, else the record's own verified response. Rejected fails at least one: the policy's
closest miss (most constraints met), plus synthetic negatives of weighted types, first of all the chosen
response with exactly one constraint broken by a minimal edit. Write the pairs, a manifest and
metrics/build_prefs.json.
"""
from __future__ import annotations

import random
import statistics
from collections import Counter

from stages.lib import negatives
from stages.lib.adapters import require_adapter
from stages.lib.context_window import check_prompts_fit
from stages.lib.errors import UserError, stage_main
from stages.lib.generation import GenerationSettings, generate
from stages.lib.io import remove_outputs, write_json_atomic, write_jsonl_atomic
from stages.lib.manifest import build_manifest, environment
from stages.lib.model_session import open_model
from stages.lib.params import load_params
from stages.lib.paths import PREF_PAIRS, PREFS_MANIFEST, SFT_ADAPTER, SFT_DATA, metrics_path
from stages.lib.preference import score_response
from stages.lib.prompts import as_completion, stop_strings
from stages.lib.records import Instruction, PreferencePair, SftExample, read_jsonl
from stages.lib.runinfo import measured
from stages.lib.sft_routes import Attempt, check, rank_key

METRICS = metrics_path("build_prefs")


def as_instruction(record: SftExample) -> Instruction:
    return Instruction(key=record.key, prompt=record.instruction, instruction_id_list=record.instruction_id_list,
                       kwargs=record.kwargs, category=record.category, task_id=record.task_id)


def make_pair(record: SftExample, chosen: str, rejected: str, kind: str, chosen_source: str, delimiter: str) -> dict:
    def score(text: str) -> float:
        return score_response(text, record.instruction, record.instruction_id_list, record.kwargs, delimiter).score

    chosen_score, rejected_score = score(chosen), score(rejected)
    return PreferencePair(
        prompt=record.prompt, chosen=as_completion(chosen), rejected=as_completion(rejected),
        chosen_score=chosen_score, rejected_score=rejected_score, margin=round(chosen_score - rejected_score, 4),
        rejected_type=kind, chosen_source=chosen_source, key=record.key, category=record.category,
    ).model_dump(mode="json")


def synthetic_negative(kind: str, instr: Instruction, chosen: str, pool: list[str], rng: random.Random) -> str | None:
    if kind == "minimal_edit":
        broken = negatives.format_violation(chosen, instr.instruction_id_list, instr.kwargs, rng)
        return broken[0] if broken else None
    if kind == "refusal":
        return negatives.refusal(rng)
    if kind == "off_topic":
        return negatives.off_topic(pool, chosen, rng)
    if kind == "verbose":
        return negatives.verbose(chosen, rng)
    return negatives.truncated(chosen, rng)


def pair_metrics(pairs: list[dict], n_records: int, policy_pass_rate: float, attempted: Counter) -> dict:
    margins = sorted(p["margin"] for p in pairs)
    kinds = Counter(p["rejected_type"] for p in pairs)
    n = len(pairs)
    return {
        "n_pairs": n,
        "n_prompts": n_records,
        "from_policy": kinds.get("policy", 0),
        "from_synthetic": n - kinds.get("policy", 0),
        "policy_fraction": round(kinds.get("policy", 0) / n, 4) if n else 0.0,
        "policy_sample_pass_rate": round(policy_pass_rate, 4),
        "chosen_source": dict(sorted(Counter(p["chosen_source"] for p in pairs).items())),
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
    prefs, delimiter = params.build_prefs, params.generate_sft.delimiter
    records = [r for r in read_jsonl(SFT_DATA, SftExample) if r.source != "placeholder"]
    if not records:
        raise UserError(f"{SFT_DATA}: no verified record to build pairs from (only placeholders)")
    require_adapter("sft")
    remove_outputs(PREF_PAIRS, PREFS_MANIFEST, METRICS)
    rng = random.Random(prefs.seed)  # seeded before anything is drawn, so runs repeat

    with measured() as run:
        model, tokenizer, precision = open_model(params.model, adapters=[SFT_ADAPTER])
        instructions = [as_instruction(r) for r in records]
        check_prompts_fit(model, tokenizer, [r.prompt for r in records], prefs.max_new_tokens,
                          budget_key="build_prefs.max_new_tokens", source=str(SFT_DATA), keys=[r.key for r in records])
        settings = GenerationSettings(prefs.max_new_tokens, prefs.temperature, prefs.top_p, 1.0,
                                      prefs.batch_size, prefs.seed)
        samples = generate(model, tokenizer, [r.prompt for r in records], settings,
                           stop_strings=stop_strings(delimiter), samples_per_prompt=prefs.samples_per_prompt,
                           desc="build_prefs")
        attempts: list[list[Attempt]] = [
            [check(s, instr, rec.prompt, prefs.seed, j, delimiter) for j, s in enumerate(drawn)]
            for rec, instr, drawn in zip(records, instructions, samples)]
        pool = [r.completion.strip() for r in records]

        pairs, attempted = [], Counter()
        for rec, instr, tried in zip(records, instructions, attempts):
            passing = [a for a in tried if a.passes]
            chosen, chosen_source = (passing[0].cleaned.text, "policy") if passing else (rec.completion.strip(), "sft_data")
            missed = sorted((a for a in tried if not a.passes and a.cleaned.text.strip()), key=rank_key)
            if missed and missed[0].cleaned.text.strip() != chosen:
                pairs.append(make_pair(rec, chosen, missed[0].cleaned.text, "policy", chosen_source, delimiter))
            for kind in negatives.draw_types(prefs.negative_weights, prefs.synthetic_per_prompt, rng):
                attempted[kind] += 1
                text = synthetic_negative(kind, instr, chosen, pool, rng)
                if text and text.strip() != chosen:
                    pairs.append(make_pair(rec, chosen, text, kind, chosen_source, delimiter))
        # The checked margin decides: chosen passes every constraint, so a rejected response scores lower only
        # by failing a constraint or a quality gate (refusal, off topic, truncated, padded).
        pairs = [p for p in pairs if p["margin"] > 0 and p["margin"] >= prefs.min_margin]
        all_attempts = [a for tried in attempts for a in tried]
        pass_rate = sum(a.passes for a in all_attempts) / len(all_attempts) if all_attempts else 0.0

    if not pairs:
        raise UserError(f"build_prefs.min_margin: no pair reached a margin of {prefs.min_margin}; no pairs written "
                        "(raise build_prefs.samples_per_prompt or lower build_prefs.min_margin)")
    metrics = pair_metrics(pairs, len(records), pass_rate, attempted) | {"wall_s": run.wall_s,
                                                                          "peak_rss_mb": run.peak_rss_mb,
                                                                          "environment": environment()}
    write_jsonl_atomic(PREF_PAIRS, pairs)
    write_json_atomic(PREFS_MANIFEST, build_manifest(stage="build_prefs", adapter=str(SFT_ADAPTER),
                                                     precision=precision.to_dict(), prefs=prefs.model_dump()))
    write_json_atomic(METRICS, metrics)
    print(f"build_prefs: {metrics['n_pairs']} pairs ({metrics['type_mix']}) from {len(records)} prompts; "
          f"on-policy samples passing: {pass_rate:.1%}; chosen from {metrics['chosen_source']}; {run.wall_s} s")


if __name__ == "__main__":
    main()
