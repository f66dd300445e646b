"""Scale-out through accelerate: SFT in 2 CPU processes (DDP over gloo) keeps the configured global batch,
two runs on one host never fight over a port, accelerate configs are tracked by DVC, and a sharded (FSDP)
model's adapter is gathered whole before it is saved."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, run_stage, write_params

from stages.launch import launch_command, stage_environment
from stages.lib.errors import UserError
from stages.lib.paths import ACCELERATE_CONFIGS, BASE_MODEL, SFT_ADAPTER, SFT_DATA_DIR, metrics_path
from stages.lib.training import batch_layout

CPU_DDP = (ACCELERATE_CONFIGS / "cpu_ddp.yaml").as_posix()


def _ddp_project(tiny_pipeline, directory: Path) -> Path:
    for rel in (BASE_MODEL, SFT_DATA_DIR, ACCELERATE_CONFIGS):
        shutil.copytree((ROOT if rel == ACCELERATE_CONFIGS else tiny_pipeline) / rel, directory / rel)
    params = yaml.safe_load((tiny_pipeline / "params.yaml").read_text())
    params["train_sft"].update(accelerate_config=CPU_DDP, batch_size=4, micro_batch_size=1, max_steps=2)
    (directory / "params.yaml").write_text(yaml.safe_dump(params))
    return directory


@pytest.mark.slow
def test_two_sft_runs_under_accelerate_ddp_at_once(tiny_pipeline, tmp_path):
    """Two 2-process DDP trainings (gloo) started together on one host, as two experiments or two users would:
    each meets on a free port of its own (a fixed port made the second fail with 'address already in use'),
    and each keeps the configured global batch."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    runs = []
    for name in ("a", "b"):
        project = _ddp_project(tiny_pipeline, tmp_path / name)
        runs.append((project, subprocess.Popen([sys.executable, "-m", "stages.launch", "train_sft"], cwd=project,
                                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)))
    for project, proc in runs:
        out, _ = proc.communicate(timeout=900)
        assert proc.returncode == 0, out[-4000:]
        assert (project / SFT_ADAPTER / "adapter_model.safetensors").is_file()
        metrics = json.loads((project / metrics_path("train_sft")).read_text())
        assert metrics["processes"] == 2
        assert metrics["global_batch_size"] == 4  # 1 per device x 2 accumulation steps x 2 processes
        assert metrics["per_device_batch_size"] == 1 and metrics["gradient_accumulation_steps"] == 2
    a, b = (p / SFT_ADAPTER / "adapter_model.safetensors" for p, _ in runs)
    assert a.read_bytes() == b.read_bytes()


def test_one_machine_runs_ask_for_a_free_port():
    cpu_ddp = yaml.safe_load((ROOT / ACCELERATE_CONFIGS / "cpu_ddp.yaml").read_text())
    command = launch_command("train_sft", CPU_DDP, cpu_ddp)
    assert command[command.index("--main_process_port") + 1] == "0"
    several = yaml.safe_load((ROOT / ACCELERATE_CONFIGS / "ddp.yaml").read_text()) | {"num_machines": 2}
    assert "--main_process_port" not in launch_command("train_sft", str(ACCELERATE_CONFIGS / "ddp.yaml"), several)
    for path in (ROOT / ACCELERATE_CONFIGS).glob("*.yaml"):
        config = yaml.safe_load(path.read_text())
        assert config.get("num_machines", 1) > 1 or "main_process_port" not in config, path.name


def test_training_stages_bound_onednns_kernel_cache_unless_the_user_set_it():
    """oneDNN reads its cache size once, at its first product, so the launcher sets it for the stage's process."""
    key = "ONEDNN_PRIMITIVE_CACHE_CAPACITY"
    assert stage_environment({"PATH": "/usr/bin"}) == {"PATH": "/usr/bin", key: "128"}
    assert stage_environment({key: "1024"})[key] == "1024"


def test_accelerate_configs_are_dependencies_of_training():
    """Editing a config (num_processes, sharding) must rerun training: configs/accelerate is a dependency of
    both training stages, and launch refuses a config from anywhere else."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name in ("train_sft", "train_dpo"):
        assert ACCELERATE_CONFIGS.as_posix() in stages[name]["deps"]


def test_a_config_outside_the_tracked_folder_is_refused(tmp_path):
    shutil.copy(ROOT / ACCELERATE_CONFIGS / "cpu_ddp.yaml", tmp_path / "mine.yaml")
    write_params(tmp_path, train_sft={"accelerate_config": str(tmp_path / "mine.yaml")})
    result = run_stage("launch", tmp_path, "train_sft")
    assert result.returncode == 2
    assert "train_sft.accelerate_config: " in result.stderr and f"is outside {ACCELERATE_CONFIGS}/" in result.stderr


def _torchrun(script_args: list[str], timeout: int = 600):
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           str(ROOT / "tests/fsdp_save.py"), *script_args],
                          env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_an_fsdp_sharded_adapter_is_gathered_whole_before_saving(tiny_hf_dir, tmp_path):
    """FSDP2 over gloo on 2 CPU processes (torch's fully_shard directly: accelerate 1.15 turns FSDP on only on
    GPUs and other accelerators, so on a CPU its FSDP config trains as DDP). Every LoRA matrix is split
    between the processes; gather_adapter, called in every process as the training stages call it, gives
    the main process the whole weights, and the saved adapter is byte-identical to the same adapter saved
    from one unsharded process. Saving from the main process alone, as the stages did before, fails."""
    single = subprocess.run([sys.executable, str(ROOT / "tests/fsdp_save.py"), str(ROOT), str(tiny_hf_dir),
                             str(tmp_path / "single"), "single"], capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]

    gathered = _torchrun([str(ROOT), str(tiny_hf_dir), str(tmp_path / "gathered"), "gather"])
    assert gathered.returncode == 0, (gathered.stdout + gathered.stderr)[-4000:]
    assert "rank 1: DTensor local shard (4, 32)" in gathered.stdout  # rank 8 split in two: really sharded
    name = "adapter_model.safetensors"
    assert (tmp_path / "gathered" / name).read_bytes() == (tmp_path / "single" / name).read_bytes()

    alone = _torchrun([str(ROOT), str(tiny_hf_dir), str(tmp_path / "alone"), "rank0-only"])
    assert alone.returncode != 0
    assert not (tmp_path / "alone" / name).exists()


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
    write_params(tmp_path, train_sft={"accelerate_config": str(ACCELERATE_CONFIGS / "nope.yaml")})
    result = run_stage("launch", tmp_path, "train_sft")
    assert result.returncode == 2 and "train_sft.accelerate_config" in result.stderr


def test_shipped_accelerate_configs_parse():
    import yaml

    names = {p.stem for p in (ROOT / ACCELERATE_CONFIGS).glob("*.yaml")}
    assert {"single", "ddp", "fsdp", "deepspeed_zero3", "cpu_ddp"} <= names
    for path in (ROOT / ACCELERATE_CONFIGS).glob("*.yaml"):
        config = yaml.safe_load(path.read_text())
        assert config["distributed_type"] in {"NO", "MULTI_GPU", "FSDP", "DEEPSPEED"}
