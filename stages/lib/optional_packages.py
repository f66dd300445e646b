"""bitsandbytes, left out of a stage process on a host without a GPU.

The project quantizes only on CUDA (stages.lib.hardware.bitsandbytes_can_run), yet peft imports bitsandbytes
whenever it is installed, and trl imports peft: on a CPU host every stage that trains or loads an adapter paid
2-3 s for it (it wraps its CPU kernels in torch.compile at import, pulling in torch._inductor; BENCHMARKS.md)
and printed a warning about a `kernels` package it could not find. An entry of None in ``sys.modules`` makes
``import bitsandbytes`` fail and ``importlib.util.find_spec`` report it absent, so transformers, accelerate and
peft each take their own path for an install without it.

Whether there is a GPU is read from the device files its driver makes, not from torch: a stage that does not
use torch (report) should not import it for this.
"""
from __future__ import annotations

import sys
from pathlib import Path

# NVIDIA's driver (its control device, the first GPU's device, its proc entry; a container that is given a GPU
# gets the devices), AMD's ROCm, and WSL2's GPU paravirtualisation.
GPU_DRIVER_FILES = ("/dev/nvidiactl", "/dev/nvidia0", "/proc/driver/nvidia", "/dev/kfd", "/dev/dxg")


def gpu_driver_present(files: tuple[str, ...] = GPU_DRIVER_FILES) -> bool:
    return any(Path(f).exists() for f in files)


def hide_bitsandbytes_without_gpu(files: tuple[str, ...] = GPU_DRIVER_FILES) -> bool:
    """Make bitsandbytes unimportable in this process when no GPU driver is present and nothing has imported
    it yet. Returns whether it did."""
    if "bitsandbytes" in sys.modules or gpu_driver_present(files):
        return False
    sys.modules["bitsandbytes"] = None
    return True
