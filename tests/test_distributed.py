"""Scale-out through accelerate: SFT in 2 CPU processes (DDP over gloo) keeps the configured global batch."""
import json
import shutil

import pytest
from conftest import ROOT, run_stage, write_params

from stages.lib.errors import UserError
from stages.lib.training import batch_layout


def test_sft_under_accelerate_ddp_on_two_cpu_processes(tiny_pipeline, tmp_path):
    for rel in ("models/base", "data/sft"):
        shutil.copytree(tiny_pipeline / rel, tmp_path / rel)
    shutil.copy(tiny_pipeline / "params.yaml", tmp_path / "params.yaml")
    write_params_from = tmp_path / "params.yaml"
    import yaml

    params = yaml.safe_load(write_params_from.read_text())
    params["sft"].update(accelerate_config=str(ROOT / "configs/accelerate/cpu_ddp.yaml"), batch_size=4,
                         micro_batch_size=1, max_steps=2)
    write_params_from.write_text(yaml.safe_dump(params))

    result = run_stage("launch", tmp_path, "train_sft", timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    assert (tmp_path / "models/sft/adapter_model.safetensors").is_file()
    metrics = json.loads((tmp_path / "metrics/train_sft.json").read_text())
    assert metrics["processes"] == 2
    assert metrics["global_batch_size"] == 4  # 1 per device x 2 accumulation steps x 2 processes
    assert metrics["per_device_batch_size"] == 1 and metrics["gradient_accumulation_steps"] == 2


@pytest.mark.parametrize("global_batch, micro, processes, expected", [
    (8, 0, 1, (8, 1)), (8, 0, 2, (4, 1)), (8, 2, 2, (2, 2)), (64, 4, 8, (4, 2)), (8, 1, 8, (1, 1)), (8, 4, 8, (1, 1)), (8, 4, 1, (4, 2)),
])
def test_global_batch_is_constant_across_process_counts(global_batch, micro, processes, expected):
    per_device, accumulation = batch_layout(global_batch, micro, processes)
    assert (per_device, accumulation) == expected
    assert per_device * accumulation * processes == global_batch


def test_a_batch_that_cannot_be_split_is_a_clear_error():
    with pytest.raises(UserError, match="batch_size=8"):
        batch_layout(8, 3, 1)


def test_missing_accelerate_config_names_the_key(tmp_path):
    write_params(tmp_path, sft={"accelerate_config": "configs/accelerate/nope.yaml"})
    result = run_stage("launch", tmp_path, "train_sft")
    assert result.returncode == 2 and "sft.accelerate_config" in result.stderr


def test_shipped_accelerate_configs_parse():
    import yaml

    names = {p.stem for p in (ROOT / "configs/accelerate").glob("*.yaml")}
    assert {"single", "ddp", "fsdp", "deepspeed_zero3", "cpu_ddp"} <= names
    for path in (ROOT / "configs/accelerate").glob("*.yaml"):
        config = yaml.safe_load(path.read_text())
        assert config["distributed_type"] in {"NO", "MULTI_GPU", "FSDP", "DEEPSPEED"}
