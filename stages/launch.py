"""Run a training stage in this process, or under `accelerate launch` when its params name a config.

    python -m stages.launch train_sft     # what dvc.yaml runs

``sft.accelerate_config`` / ``dpo.accelerate_config`` pick the config (configs/accelerate/): one
process, multi-GPU DDP, FSDP or DeepSpeed ZeRO-3. The stage itself is the same code either way.

The config must be a file under configs/accelerate/: that folder is a dependency of both training
stages in dvc.yaml, so editing a config (num_processes, the sharding) reruns them. On one machine the
processes meet on a port the system picks free (``--main_process_port 0``), so two runs on one host
(two experiments, two users) never collide; several machines need the port their config names.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from stages.lib.errors import UserError, stage_main
from stages.lib.params import load_params, read_yaml

SECTIONS = {"train_sft": "sft", "train_dpo": "dpo"}
CONFIG_DIR = Path("configs/accelerate")


def launch_command(stage: str, accelerate_config: str | None, machines: int = 1) -> list[str]:
    module = f"stages.{stage}"
    if accelerate_config is None:
        return [sys.executable, "-m", module]
    port = ["--main_process_port", "0"] if machines <= 1 else []  # 0: accelerate asks the system for a free port
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", accelerate_config, *port,
            "-m", module]


def check_config(key: str, config: str) -> int:
    """The config's number of machines, once it is known to be a tracked file that parses."""
    path = Path(config)
    if not path.is_file():
        raise UserError(f"{key}: {config}: file not found (see configs/accelerate/)")
    if CONFIG_DIR.resolve() not in path.resolve().parents:
        raise UserError(f"{key}: {config} is outside {CONFIG_DIR}/, which dvc.yaml tracks; copy it there so that "
                        "editing it reruns training")
    settings = read_yaml(path)
    if not isinstance(settings, dict):
        raise UserError(f"{key}: {config}: expected an accelerate config (a mapping)")
    return int(settings.get("num_machines", 1))


@stage_main
def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] not in SECTIONS:
        raise UserError(f"usage: python -m stages.launch {{{','.join(SECTIONS)}}}")
    stage = args[0]
    section = SECTIONS[stage]
    config = getattr(load_params(), section).accelerate_config
    machines = check_config(f"{section}.accelerate_config", config) if config is not None else 1
    command = launch_command(stage, config, machines)
    sys.stdout.flush()
    os.execv(command[0], command)  # the stage replaces this process: signals and exit status pass through


if __name__ == "__main__":
    main()
