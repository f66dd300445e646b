"""Stage generate_sft: the base model writes its own SFT data, checked by the instruction checkers.

Recipe: read the train instructions and our few-shot examples; build a few-shot completion prompt per
instruction; sample k responses in batches; clean, validate and score each; keep the best valid one;
gate on the QC figures; write prompt/completion JSONL for TRL, a manifest and metrics/sft_data.json.
"""
from __future__ import annotations

import random
from pathlib import Path

from stages.lib import checkers
from stages.lib.context_window import check_prompts_fit
from stages.lib.errors import UserError, stage_main
from stages.lib.generation import GenerationSettings, generate
from stages.lib.io import atomic_dir, remove_outputs, write_json_atomic, write_jsonl_atomic
from stages.lib.manifest import build_manifest, environment
from stages.lib.model_session import open_model, precision_for
from stages.lib.params import load_params
from stages.lib.prompts import Shot, as_completion, few_shot_prompt, pick_shots, stop_strings, zero_shot_prompt
from stages.lib.records import FewShotExample, Instruction, SftExample, read_jsonl
from stages.lib.runinfo import measured
from stages.lib.sft_data import PLACEHOLDER_TEXT, best_valid, qc_metrics, score_samples

TRAIN = Path("data/instructions/train.jsonl")
FEWSHOT = Path("data/fewshot.jsonl")
OUT_DIR = Path("data/sft")  # the DVC out: train.jsonl and manifest.json, written together or not at all
OUT = OUT_DIR / "train.jsonl"
MANIFEST = OUT_DIR / "manifest.json"
METRICS = Path("metrics/sft_data.json")
# How a sample's randomness is drawn (stages/lib/generation.py). With it a float32 run's sample can be regenerated
# from its record alone; a bfloat16 run reproduces as a whole (batch-dependent rounding), not sample by sample.
SAMPLING_SCHEME = "per-row generator seeded by sha256(generate.seed, sample_index, generation_prompt)"


def build_prompts(instructions: list[Instruction], shots: list[Shot], n_shots: int, delimiter: str, seed: int) -> list[str]:
    rng = random.Random(seed)  # drawn once, before generation; the stored prompt is this prompt
    return [few_shot_prompt(i.prompt, pick_shots(shots, n_shots, i.prompt, rng), delimiter) for i in instructions]


def to_example(instr: Instruction, generation_prompt: str, text: str, source: str, strict_score: float,
               truncated: bool, sample_index: int) -> dict:
    return SftExample(
        prompt=zero_shot_prompt(instr.prompt), completion=as_completion(text), generation_prompt=generation_prompt,
        key=instr.key, instruction=instr.prompt, instruction_id_list=instr.instruction_id_list, kwargs=instr.kwargs,
        category=instr.category, source=source, strict_score=strict_score, truncated=truncated,
        sample_index=sample_index,
    ).model_dump(mode="json")


def check_instructions(instructions: list[Instruction]) -> None:
    for instr in instructions:
        for iid, kw in zip(instr.instruction_id_list, instr.kwargs):
            try:
                checkers.validate_kwargs(iid, kw)
            except UserError as err:
                raise UserError(f"{TRAIN}: instruction key {instr.key}: {err}") from None


@stage_main
def main() -> None:
    remove_outputs(OUT_DIR, METRICS)  # a failed run must not leave an earlier run's data looking current
    params = load_params()
    gen = params.generate
    instructions = read_jsonl(TRAIN, Instruction)
    shots = [Shot(s.instruction, s.response) for s in read_jsonl(FEWSHOT, FewShotExample)]
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
        settings = GenerationSettings(gen.max_new_tokens, gen.temperature, gen.top_p, gen.repetition_penalty,
                                      gen.batch_size, gen.seed)
        if model is not None:
            check_prompts_fit(model, tokenizer, prompts, gen.max_new_tokens, budget_key="generate.max_new_tokens",
                              source=f"{TRAIN} (as few-shot prompts)", keys=[i.key for i in instructions])
        samples = (generate(model, tokenizer, prompts, settings, stop_strings=stop_strings(gen.delimiter),
                            num_samples=gen.k, desc="generate_sft")
                   if model is not None else [[] for _ in prompts])

        records, kept, all_candidates = [], [], []
        for instr, prompt, instr_samples in zip(instructions, prompts, samples):
            candidates = score_samples(instr_samples, instr.instruction_id_list, instr.kwargs, instr.prompt, gen.delimiter)
            all_candidates.append(candidates)
            best = best_valid(candidates)
            if best is not None:
                records.append(to_example(instr, prompt, best.cleaned.text, "model", best.score.strict_fraction,
                                          best.cleaned.truncated, best.index))
                kept.append(best)
            elif gen.placeholder_fallback:
                records.append(to_example(instr, prompt, PLACEHOLDER_TEXT, "placeholder", 0.0, False, -1))
                kept.append(None)
        qc = qc_metrics(all_candidates, kept, [r["completion"] for r in records], gen.delimiter)

    # Without a valid model answer an instruction is either a placeholder or dropped; both count here.
    if qc["failed_rate"] > gen.max_placeholder_rate:
        raise UserError(
            f"generate.max_placeholder_rate: {qc['failed_rate']:.0%} of instructions got no valid model response "
            f"({qc['placeholder_rate']:.0%} placeholders, {qc['n_dropped']} dropped), above the allowed "
            f"{gen.max_placeholder_rate:.0%}; no data written")
    if not records:
        raise UserError(f"{TRAIN}: no instruction produced a valid response; no data written "
                        "(raise generate.k or generate.max_new_tokens, or enable generate.placeholder_fallback)")
    qc |= {"wall_s": run.wall_s, "peak_rss_mb": run.peak_rss_mb, "environment": environment(),
           "tokens_per_s": round(qc["generated_tokens"] / run.wall_s, 1) if run.wall_s else 0.0}
    manifest = build_manifest(model=_model_identity(), precision=precision.to_dict(), generation=gen.model_dump(),
                              sampling=SAMPLING_SCHEME, n_records=len(records))
    with atomic_dir(OUT_DIR) as tmp:
        write_jsonl_atomic(tmp / OUT.name, records)
        write_json_atomic(tmp / MANIFEST.name, manifest)
    write_json_atomic(METRICS, qc)
    print(f"generate_sft: kept {qc['n_kept']}/{qc['n_instructions']} ({qc['n_dropped']} dropped, "
          f"placeholder rate {qc['placeholder_rate']:.0%}); strict prompt pass rate kept "
          f"{qc['kept']['prompt_strict']:.0%} vs first sample {qc['first_sample']['prompt_strict']:.0%}; "
          f"{qc['generated_tokens']} tokens in {run.wall_s} s")


def _model_identity() -> dict:
    from stages.lib.base_model import read_base_manifest
    from stages.lib.model_session import BASE_DIR

    base = read_base_manifest(BASE_DIR)
    return {k: base[k] for k in ("source", "name_or_path", "revision", "config_sha256", "gguf_sha256") if k in base}


if __name__ == "__main__":
    main()
