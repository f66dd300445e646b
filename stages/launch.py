"""Run a training stage in this process, or under `accelerate launch` when its params name a config.

    python -m stages.launch train_sft     # what dvc.yaml runs

``sft.accelerate_config`` / ``dpo.accelerate_config`` pick the config (configs/accelerate/): one
process, multi-GPU DDP, FSDP or DeepSpeed ZeRO-3. The stage itself is the same code either way.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from stages.lib.errors import UserError, stage_main
from stages.lib.params import load_params

SECTIONS = {"train_sft": "sft", "train_dpo": "dpo"}


def launch_command(stage: str, accelerate_config: str | None) -> list[str]:
    module = f"stages.{stage}"
    if accelerate_config is None:
        return [sys.executable, "-m", module]
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", accelerate_config, "-m", module]


@stage_main
def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] not in SECTIONS:
        raise UserError(f"usage: python -m stages.launch {{{','.join(SECTIONS)}}}")
    stage = args[0]
    config = getattr(load_params(), SECTIONS[stage]).accelerate_config
    if config is not None and not Path(config).is_file():
        raise UserError(f"{SECTIONS[stage]}.accelerate_config: {config}: file not found (see configs/accelerate/)")
    command = launch_command(stage, config)
    sys.stdout.flush()
    os.execv(command[0], command)  # the stage replaces this process: signals and exit status pass through


if __name__ == "__main__":
    main()
