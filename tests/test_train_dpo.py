"""DPO: the two variants differ only in their starting point; the adapter's manifest names it."""
import json

import yaml
from conftest import ROOT

from stages.lib.dpo_setup import dpo_setup
from stages.lib.hardware import resolve_precision
from stages.lib.params import load_params


def test_sft_dpo_and_dpo_only_differ_only_in_the_starting_point():
    params = load_params(ROOT / "params.yaml")
    precision = resolve_precision("float32")
    from_sft = dpo_setup(params.dpo.model_copy(update={"init": "sft"}), precision, "/tmp/out")
    from_base = dpo_setup(params.dpo.model_copy(update={"init": "base"}), precision, "/tmp/out")
    assert from_sft.config_kwargs == from_base.config_kwargs
    assert from_sft.lora == from_base.lora
    assert [str(p) for p in from_sft.start_adapters] == ["models/sft"] and from_base.start_adapters == []

    from trl import DPOConfig

    a, b = DPOConfig(**from_sft.config_kwargs).to_dict(), DPOConfig(**from_base.config_kwargs).to_dict()
    assert a == b


def test_dpo_dependency_follows_init():
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["train_dpo"]
    assert "models/${dpo.init}" in stage["deps"] and "models/sft" not in stage["deps"]


def test_adapter_manifest_names_its_init(tiny_pipeline):
    manifest = json.loads((tiny_pipeline / "models/dpo/manifest.json").read_text())
    assert manifest["init"] == "sft" and manifest["start_adapters"] == ["models/sft"]
    metrics = json.loads((tiny_pipeline / "metrics/train_dpo.json").read_text())
    assert metrics["init"] == "sft" and "rewards_margins_last" in metrics and "loss_last" in metrics
