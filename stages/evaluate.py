"""Stage evaluate@<model>-<suite>: one model, in its own process, on one held-out suite of IFEval-format prompts.

Recipe: read the suite (data/suites/<suite>.jsonl: any JSONL in IFEval's input format); set aside prompts
with ids we cannot check, counted; load a fresh base with this model's adapters; greedy-decode every prompt
in the same completion format and precision as the other models; score strict and loose; write the
per-prompt outcomes (for paired statistics) and metrics/evaluate/<model>-<suite>.json.
"""
from __future__ import annotations

import argparse
from collections import Counter

from stages.lib import checkers
from stages.lib.adapters import adapter_stack
from stages.lib.cleaning import clean
from stages.lib.context_window import check_prompts_fit
from stages.lib.errors import UserError, stage_main
from stages.lib.eval_metrics import summarize
from stages.lib.generation import generate, greedy
from stages.lib.io import remove_outputs, write_json_atomic, write_jsonl_atomic
from stages.lib.manifest import environment
from stages.lib.model_session import open_model
from stages.lib.params import load_params
from stages.lib.paths import MODELS, eval_metrics_path, outcomes_path, suite_path
from stages.lib.prompts import stop_strings, zero_shot_prompt
from stages.lib.records import EvalOutcome, Instruction, read_jsonl
from stages.lib.runinfo import measured


def split_supported(prompts: list[Instruction]) -> tuple[list[Instruction], Counter, list[dict]]:
    """Prompts we can score in full; a count of the unsupported ids that excluded others; and the
    prompts excluded because a checker cannot take their kwargs, each as {"key", "reason"}. One bad
    prompt never stops the evaluation of the rest."""
    supported, unsupported, invalid = [], Counter(), []
    for p in prompts:
        missing = [i for i in p.instruction_id_list if i not in checkers.SUPPORTED_IDS]
        if missing:
            unsupported.update(missing)
            continue
        try:
            checkers.validate_instruction(p.instruction_id_list, p.kwargs)  # IFEval's None-valued kwargs are ignored
        except UserError as exc:
            invalid.append({"key": p.key, "reason": str(exc)})
            continue
        supported.append(p)
    return supported, unsupported, invalid


def outcome(p: Instruction, response: str, scoring: str = "ifeval") -> dict:
    kwargs = [{k: v for k, v in kw.items() if v is not None} for kw in p.kwargs]
    pairs = list(zip(p.instruction_id_list, kwargs))
    strict = [checkers.check_strict(i, response, kw, p.prompt, scoring=scoring) for i, kw in pairs]
    loose = [checkers.check_loose(i, response, kw, p.prompt, scoring=scoring) for i, kw in pairs]
    return EvalOutcome(key=p.key, category=p.category, prompt=p.prompt, response=response,
                       instruction_id_list=p.instruction_id_list, strict=strict, loose=loose,
                       prompt_strict=all(strict), prompt_loose=all(loose)).model_dump(mode="json")


@stage_main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", choices=MODELS, required=True)
    parser.add_argument("--suite", required=True, help="a file data/suites/<suite>.jsonl")
    args = parser.parse_args(argv)
    name, suite = args.model, args.suite
    params = load_params()
    settings = params.evaluate
    out_file, metrics_file = outcomes_path(name, suite), eval_metrics_path(name, suite)

    all_prompts = read_jsonl(suite_path(suite), Instruction)
    prompts, unsupported, invalid = split_supported(all_prompts)
    if not prompts:
        raise UserError(f"{suite_path(suite)}: no prompt can be scored (unsupported ids: {dict(unsupported)}; "
                        f"kwargs the checkers cannot take: {invalid})")
    adapters = adapter_stack(name)  # models/<name> holds the model's whole stack: no other model is read
    remove_outputs(out_file, metrics_file)

    with measured() as run:
        model, tokenizer, precision = open_model(params.model, adapters)
        delimiter = params.generate_sft.delimiter  # the prompt format every model was trained and sampled in
        texts = [zero_shot_prompt(p.prompt) for p in prompts]
        check_prompts_fit(model, tokenizer, texts, settings.max_new_tokens, budget_key="evaluate.max_new_tokens",
                          source=str(suite_path(suite)), keys=[p.key for p in prompts])
        samples = generate(model, tokenizer, texts, greedy(settings.max_new_tokens, settings.batch_size),
                           stop_strings=stop_strings(delimiter), desc=f"evaluate@{name}-{suite}")
        outcomes = [outcome(p, clean(s[0].text, delimiter, s[0].hit_token_limit).text, settings.scoring)
                    for p, s in zip(prompts, samples)]
        weights_mb = sum(t.numel() * t.element_size() for t in model.parameters()) / 2**20

    summary = summarize([EvalOutcome.model_validate(o) for o in outcomes])
    metrics = summary | {
        "model": name,
        "suite": suite,
        "excluded_prompts": len(all_prompts) - len(prompts),
        "unsupported_ids": dict(sorted(unsupported.items())),
        "invalid_kwargs": invalid,
        "precision": precision.to_dict(),
        "wall_s": run.wall_s,
        "peak_rss_mb": run.peak_rss_mb,
        "weights_mb": round(weights_mb, 1),
        "environment": environment(),
    }
    write_jsonl_atomic(out_file, outcomes)
    write_json_atomic(metrics_file, metrics)
    overall = summary["overall"]
    print(f"evaluate@{name}-{suite}: prompt strict {overall['prompt_strict']['accuracy']:.1%}, loose "
          f"{overall['prompt_loose']['accuracy']:.1%} on {summary['n_prompts']} prompts "
          f"({metrics['excluded_prompts']} excluded); peak RSS {run.peak_rss_mb} MB; {run.wall_s} s")


if __name__ == "__main__":
    main()
