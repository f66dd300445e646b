"""Every artifact path of the pipeline, named once. dvc.yaml spells the same paths for DVC (tests/test_dvc_yaml.py
checks that the two agree); stages and tests import them from here.

Naming: a model lives in models/<model>; a stage's metrics are metrics/<stage>.json, its other files
(training curves, plot data) are under metrics/<stage>/, and a matrix stage writes one metrics file per item,
metrics/<stage>/<item>.json.
"""
from __future__ import annotations

from pathlib import Path

MODELS = ("base", "sft", "dpo")  # every suite is evaluated on each, and the report compares them in this order

# Curated inputs, in git
TASKS = Path("data/tasks.jsonl")
CONSTRAINTS = Path("data/constraints.yaml")
FEWSHOT = Path("data/fewshot.jsonl")
ACCELERATE_CONFIGS = Path("configs/accelerate")  # the training stages' accelerate_config names a file in here


def model_dir(model: str) -> Path:
    """models/base (prepare_base), models/sft and models/dpo (the training stages' LoRA adapters)."""
    return Path("models") / model


BASE_MODEL = model_dir("base")
SFT_ADAPTER = model_dir("sft")
DPO_ADAPTER = model_dir("dpo")
# Inside an adapter's folder: the adapter it was trained on top of (models/dpo/start when train_dpo.init is
# sft), so that a model's folder alone holds its whole stack of adapters.
START_ADAPTER = "start"

# make_instructions
TRAIN_INSTRUCTIONS = Path("data/instructions/train.jsonl")
SUITES_DIR = Path("data/suites")
MADE_SUITES = ("dev", "test")  # the held-out suites make_instructions writes; others (handwritten) are in git


def suite_path(suite: str) -> Path:
    """A held-out suite of IFEval-format prompts."""
    return SUITES_DIR / f"{suite}.jsonl"


# generate_sft: one DVC output, the records and their manifest written together or not at all
SFT_DATA_DIR = Path("data/sft")
SFT_DATA = SFT_DATA_DIR / "train.jsonl"
SFT_DATA_MANIFEST = SFT_DATA_DIR / "manifest.json"

# build_prefs
PREFS_DIR = Path("data/prefs")
PREF_PAIRS = PREFS_DIR / "pairs.jsonl"
PREFS_MANIFEST = PREFS_DIR / "manifest.json"

# evaluate
OUTCOMES_DIR = Path("data/eval")


def outcomes_path(model: str, suite: str) -> Path:
    """One model's per-prompt outcomes on one suite (the input of the paired statistics)."""
    return OUTCOMES_DIR / f"{model}-{suite}.jsonl"


# metrics
METRICS_DIR = Path("metrics")


def metrics_path(stage: str) -> Path:
    return METRICS_DIR / f"{stage}.json"


def stage_files(stage: str) -> Path:
    """A stage's files besides its metrics: DVCLive's training curves, the report's plot data."""
    return METRICS_DIR / stage


DVCLIVE_CURVES = Path("plots") / "metrics"  # where DVCLive writes the curves inside its folder


def curves_dir(stage: str) -> Path:
    """Training curves, the plots output dvc.yaml declares (DVCLive writes the rest of stage_files)."""
    return stage_files(stage) / DVCLIVE_CURVES


def eval_metrics_path(model: str, suite: str) -> Path:
    return stage_files("evaluate") / f"{model}-{suite}.json"


REPORT_MD = METRICS_DIR / "report.md"
CATEGORY_CSV = stage_files("report") / "category_accuracy.csv"
CATEGORY_PNG = stage_files("report") / "category_accuracy.png"
