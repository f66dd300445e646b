"""The GPU a figure was measured on and what the stages choose there, printed as JSON (benchmarks/gpu_check.sh)."""
from __future__ import annotations

import json

import torch

from stages.lib.hardware import resolve_precision
from stages.lib.manifest import package_versions


def gpu_kind() -> dict:
    out = {"packages": package_versions(), "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        out |= {"device": props.name, "capability": f"{props.major}.{props.minor}",
                "memory_gb": round(props.total_memory / 2**30, 1), "torch_cuda": torch.version.cuda,
                "bf16": torch.cuda.is_bf16_supported()}
    out["chosen"] = {q: resolve_precision("auto", q).to_dict() for q in ("none", "4bit")}
    return out


if __name__ == "__main__":
    print(json.dumps(gpu_kind(), indent=1))
