"""Run a training stage in this process, or under `accelerate launch` when its params name a config.

    python -m stages.launch train_sft     # what dvc.yaml runs

``train_sft.accelerate_config`` / ``train_dpo.accelerate_config`` pick the config (configs/accelerate/): one
process, multi-GPU DDP, FSDP or DeepSpeed ZeRO-3. The stage itself is the same code either way.

The config must be a file under configs/accelerate/: that folder is a dependency of both training
stages in dvc.yaml, so editing a config (num_processes, the sharding) reruns them. On one machine the
processes meet on a port the system picks free (``--main_process_port 0``), so two runs on one host
(two experiments, two users) never collide; several machines need the port their config names.

The stage's process starts with oneDNN's kernel cache bounded (``ONEDNN_CACHE`` below), unless the environment
already sets it.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from stages.lib.errors import UserError, stage_main
from stages.lib.params import load_params, read_yaml
from stages.lib.paths import ACCELERATE_CONFIGS

STAGES = ("train_sft", "train_dpo")  # each reads its accelerate_config from its own params group

# oneDNN (torch's CPU bf16 products) keeps a compiled kernel for every product shape it meets, up to 1024 of them.
# Training meets new shapes with every padded length, and what the cache held by the end of an SFT epoch was
# 0.3 GB of the peak; the shapes of one micro-batch fit in far fewer entries (BENCHMARKS.md, Zen 4 section).
# oneDNN reads the variable once, at its first product, so it is set before the stage's process starts.
ONEDNN_CACHE = {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "128"}


def launch_command(stage: str, accelerate_config: str | None, settings: dict | None = None) -> list[str]:
    module = f"stages.{stage}"
    if accelerate_config is None:
        return [sys.executable, "-m", module]
    settings = settings or {}
    # 0: accelerate asks the system for a free port. Several machines must agree on theirs (the config's);
    # `use_cpu` configs go through accelerate's simple launcher, which does not translate 0.
    free_port = int(settings.get("num_machines", 1)) <= 1 and not settings.get("use_cpu", False)
    port = ["--main_process_port", "0"] if free_port else []
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", accelerate_config, *port,
            "-m", module]


def stage_environment(environ: dict[str, str]) -> dict[str, str]:
    """The training stage's environment: this one, with oneDNN's kernel cache bounded unless the user set it."""
    return ONEDNN_CACHE | dict(environ)


def read_config(key: str, config: str) -> dict:
    """An accelerate config, once it is known to be a tracked file that parses."""
    path = Path(config)
    if not path.is_file():
        raise UserError(f"{key}: {config}: file not found (see configs/accelerate/)")
    if ACCELERATE_CONFIGS.resolve() not in path.resolve().parents:
        raise UserError(f"{key}: {config} is outside {ACCELERATE_CONFIGS}/, which dvc.yaml tracks; copy it there so "
                        "that editing it reruns training")
    settings = read_yaml(path)
    if not isinstance(settings, dict):
        raise UserError(f"{key}: {config}: expected an accelerate config (a mapping)")
    return settings


@stage_main
def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] not in STAGES:
        raise UserError(f"usage: python -m stages.launch {{{','.join(STAGES)}}}")
    stage = args[0]
    config = getattr(load_params(), stage).accelerate_config
    settings = read_config(f"{stage}.accelerate_config", config) if config is not None else None
    command = launch_command(stage, config, settings)
    sys.stdout.flush()
    # the stage replaces this process: signals and exit status pass through
    os.execve(command[0], command, stage_environment(os.environ))


if __name__ == "__main__":
    main()
