"""Stage generate_sft: the base model writes its own SFT data, and only verified responses are kept.

Recipe: read the train instructions (each carries its task's text), the constraints and our few-shot examples; build a
few-shot completion prompt per instruction, its examples chosen to show the constraints asked for; then
the three routes of stages/lib/sft_routes.py, each used only where the one before found nothing that
passes: adaptive best-of-k sampling, critique and revise, constraint back-translation. Every record says
which route made it (``source``). Gate on the QC figures; write prompt/completion JSONL for TRL, a
manifest and metrics/generate_sft.json.
"""
from __future__ import annotations

import random

from stages.lib import checkers
from stages.lib.context_window import check_prompts_fit
from stages.lib.curated import read_constraints
from stages.lib.errors import UserError, stage_main
from stages.lib.generation import GenerationSettings, generate
from stages.lib.io import atomic_dir, remove_outputs, write_json_atomic, write_jsonl_atomic
from stages.lib.manifest import build_manifest, environment
from stages.lib.model_session import open_model, precision_for
from stages.lib.params import GenerateSftParams, load_params
from stages.lib.paths import (
    BASE_MODEL, CONSTRAINTS, FEWSHOT, SFT_DATA, SFT_DATA_DIR, SFT_DATA_MANIFEST, TRAIN_INSTRUCTIONS, metrics_path,
)
from stages.lib.prompts import Shot, as_completion, few_shot_prompt, pick_shots, revision_stop_strings, stop_strings, zero_shot_prompt
from stages.lib.records import FewShotExample, Instruction, SftExample, read_jsonl
from stages.lib.revision import revision_shots
from stages.lib.runinfo import measured
from stages.lib.sft_data import PLACEHOLDER_TEXT, qc_metrics
from stages.lib.sft_routes import (
    Attempt, backtranslate_failures, best, passing_by_samples, revise_failures, sample_until_pass,
)

METRICS = metrics_path("generate_sft")
# How a sample's randomness is drawn (stages/lib/sampling.py). With it a float32 run's sample can be regenerated
# from its record alone; a bfloat16 run reproduces as a whole (batch-dependent rounding), not sample by sample.
SAMPLING_SCHEME = "per-row generator seeded by sha256(sample_seed, sample_index, generation_prompt)"


def as_shots(examples: list[FewShotExample]) -> list[Shot]:
    """The few-shot pool, each example with the constraint ids it shows (pick_shots matches them)."""
    return [Shot(e.instruction, e.response, tuple(e.instruction_id_list)) for e in examples]


def build_prompts(instructions: list[Instruction], shots: list[Shot], n_shots: int, delimiter: str, seed: int) -> list[str]:
    rng = random.Random(seed)  # drawn once, before generation; the stored prompt is this prompt
    return [few_shot_prompt(i.prompt, pick_shots(shots, n_shots, i.prompt, rng, i.instruction_id_list), delimiter)
            for i in instructions]


def to_example(instr: Instruction, attempt: Attempt, source: str, original: Instruction | None = None) -> dict:
    return SftExample(
        prompt=zero_shot_prompt(instr.prompt), completion=as_completion(attempt.cleaned.text),
        generation_prompt=attempt.prompt, key=instr.key, instruction=instr.prompt,
        instruction_id_list=instr.instruction_id_list, kwargs=instr.kwargs, category=instr.category, source=source,
        strict_score=attempt.score.strict_fraction, truncated=attempt.cleaned.truncated, sample_seed=attempt.seed,
        sample_index=attempt.index, task_id=instr.task_id,
        original_instruction=original.prompt if original is not None else None,
    ).model_dump(mode="json")


def placeholder_example(instr: Instruction, prompt: str) -> dict:
    return SftExample(
        prompt=zero_shot_prompt(instr.prompt), completion=as_completion(PLACEHOLDER_TEXT), generation_prompt=prompt,
        key=instr.key, instruction=instr.prompt, instruction_id_list=instr.instruction_id_list, kwargs=instr.kwargs,
        category=instr.category, source="placeholder", strict_score=0.0, truncated=False, sample_seed=-1,
        sample_index=-1, task_id=instr.task_id,
    ).model_dump(mode="json")


def check_instructions(instructions: list[Instruction]) -> None:
    for instr in instructions:
        try:
            checkers.validate_instruction(instr.instruction_id_list, instr.kwargs)
        except UserError as err:
            raise UserError(f"{TRAIN_INSTRUCTIONS}: instruction key {instr.key}: {err}") from None


def make_sampler(model, tokenizer, gen: GenerateSftParams, stops: list[str], desc: str):
    def sampler(prompts: list[str], seed: int, n: int):
        settings = GenerationSettings(gen.max_new_tokens, gen.temperature, gen.top_p, gen.repetition_penalty,
                                      gen.batch_size, seed)
        return generate(model, tokenizer, prompts, settings, stop_strings=stops, samples_per_prompt=n, desc=desc)
    return sampler


def check_gates(qc: dict, gen: GenerateSftParams, n_records: int) -> None:
    if qc["failed_rate"] > gen.max_failed_rate:
        raise UserError(
            f"generate_sft.max_failed_rate: {qc['failed_rate']:.0%} of instructions got no passing response "
            f"({qc['placeholder_rate']:.0%} placeholders, {qc['n_dropped']} dropped), above the allowed "
            f"{gen.max_failed_rate:.0%}; no data written")
    if qc["kept"]["prompt_strict"] < gen.min_kept_pass_rate:
        raise UserError(
            f"generate_sft.min_kept_pass_rate: only {qc['kept']['prompt_strict']:.1%} of kept records pass every "
            f"constraint of their instruction strictly, below the required {gen.min_kept_pass_rate:.0%}; "
            "no data written")
    if not n_records:
        raise UserError(f"{TRAIN_INSTRUCTIONS}: no instruction produced a passing response; no data written "
                        "(raise generate_sft.max_samples_per_prompt or generate_sft.max_new_tokens, or enable "
                        "generate_sft.placeholder_fallback)")


@stage_main
def main() -> None:
    remove_outputs(SFT_DATA_DIR, METRICS)  # a failed run must not leave an earlier run's data looking current
    params = load_params()
    gen = params.generate_sft
    instructions = read_jsonl(TRAIN_INSTRUCTIONS, Instruction)
    config = read_constraints(CONSTRAINTS)
    examples = read_jsonl(FEWSHOT, FewShotExample)
    shots = as_shots(examples)
    check_instructions(instructions)

    with measured() as run:
        prompts = build_prompts(instructions, shots, gen.n_shots, gen.delimiter, gen.seed)
        precision = precision_for(params.model)
        try:
            model, tokenizer, precision = open_model(params.model, precision=precision)
        except UserError as exc:
            if not gen.placeholder_fallback:
                raise
            print(f"generate_sft: model unavailable ({exc}); every record falls back to a placeholder")
            model = None
        if model is not None:
            check_prompts_fit(model, tokenizer, prompts, gen.max_new_tokens, budget_key="generate_sft.max_new_tokens",
                              source=f"{TRAIN_INSTRUCTIONS} (as few-shot prompts)", keys=[i.key for i in instructions])

        sampled = [[] for _ in instructions]
        revised = [[] for _ in instructions]
        translated = [None for _ in instructions]
        if model is not None:
            sampler = make_sampler(model, tokenizer, gen, stop_strings(gen.delimiter), "generate_sft: sample")
            sampled = sample_until_pass(sampler, instructions, prompts, gen.samples_per_prompt,
                                        gen.max_samples_per_prompt, gen.seed, gen.delimiter)
            drafts = [best(a) for a in sampled]
            if gen.revise_rounds:
                reviser = make_sampler(model, tokenizer, gen, revision_stop_strings(gen.delimiter), "generate_sft: revise")
                pool = revision_shots(shots, {e.instruction: e.kwargs for e in examples}, gen.seed)
                revised = revise_failures(reviser, instructions, drafts, pool, gen.n_shots, gen.revise_samples,
                                          gen.revise_rounds, gen.seed, gen.delimiter)
            if gen.backtranslate:
                unresolved = [d if not any(a.passes for a in r) else None for d, r in zip(drafts, revised)]
                translated = backtranslate_failures(instructions, unresolved, config,
                                                    params.make_instructions.max_constraints, gen.seed)

        records, sources = [], []
        for instr, prompt, s, r, t in zip(instructions, prompts, sampled, revised, translated):
            for source, attempts in (("model", s), ("revised", r)):
                chosen = best(attempts)
                if chosen is not None and chosen.passes:
                    records.append(to_example(instr, chosen, source))
                    break
            else:
                if t is not None:
                    records.append(to_example(t.instruction, t.attempt, "backtranslated", original=instr))
                elif gen.placeholder_fallback:
                    records.append(placeholder_example(instr, prompt))
                else:
                    continue
            sources.append(records[-1]["source"])
        qc = qc_metrics(sampled, revised, records, gen.delimiter)
        qc["passing_by_samples"] = (passing_by_samples(sampled, gen.samples_per_prompt, gen.max_samples_per_prompt)
                                    if model is not None else {})

    check_gates(qc, gen, len(records))
    qc |= {"wall_s": run.wall_s, "peak_rss_mb": run.peak_rss_mb, "environment": environment(),
           "tokens_per_s": round(qc["generated_tokens"] / run.wall_s, 1) if run.wall_s else 0.0}
    manifest = build_manifest(model=_model_identity(), precision=precision.to_dict(), generation=gen.model_dump(),
                              sampling=SAMPLING_SCHEME, n_records=len(records))
    with atomic_dir(SFT_DATA_DIR) as tmp:
        write_jsonl_atomic(tmp / SFT_DATA.name, records)
        write_json_atomic(tmp / SFT_DATA_MANIFEST.name, manifest)
    write_json_atomic(METRICS, qc)
    by_source = ", ".join(f"{k} {v['n']}" for k, v in qc["by_source"].items())
    print(f"generate_sft: kept {qc['n_kept']}/{qc['n_instructions']} ({by_source}; {qc['n_dropped']} dropped); "
          f"kept data passes strictly: {qc['kept']['prompt_strict']:.1%}; first sample passes: "
          f"{qc['first_sample']['prompt_strict']:.1%}; {qc['generated_tokens']} tokens in {run.wall_s} s")


def _model_identity() -> dict:
    from stages.lib.base_model import read_base_manifest

    base = read_base_manifest(BASE_MODEL)
    return {k: base[k] for k in ("source", "name_or_path", "revision", "config_sha256", "gguf_sha256") if k in base}


if __name__ == "__main__":
    main()
