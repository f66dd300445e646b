"""Every artifact path of the pipeline, named once. dvc.yaml spells the same paths for DVC (a test checks
that the two agree); stages and tests import them from here."""
from __future__ import annotations

from pathlib import Path

MODELS = ("base", "sft", "dpo")

BASE_MODEL = Path("models/base")
SFT_ADAPTER = Path("models/sft")
DPO_ADAPTER = Path("models/dpo")

TASKS = Path("data/tasks.jsonl")
CONSTRAINTS = Path("data/constraints.yaml")
FEWSHOT = Path("data/fewshot.jsonl")
TRAIN_INSTRUCTIONS = Path("data/instructions/train.jsonl")
SUITES_DIR = Path("data/suites")


def suite_path(suite: str) -> Path:
    """A held-out suite of IFEval-format prompts: dev and test are written by make_instructions."""
    return SUITES_DIR / f"{suite}.jsonl"


def outcomes_path(model: str, suite: str) -> Path:
    """One model's per-prompt outcomes on one suite (the input of the paired statistics)."""
    return Path("data/eval") / f"{model}-{suite}.jsonl"


def eval_metrics_path(model: str, suite: str) -> Path:
    return Path("metrics/eval") / f"{model}-{suite}.json"
