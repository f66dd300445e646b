"""Choices made from the hardware, never from library defaults: device, dtype, quantization, threads.

On a CPU without native bf16 (no AMX or AVX512-BF16), bf16 matrix products are about 100x slower
than fp32, and on an Intel CPU with AVX512-BF16 but no AMX still slower, while TRL's configs default to bf16
and gradient checkpointing. Every stage asks here.
"""
from __future__ import annotations

import functools
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

NATIVE_BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


@dataclass(frozen=True)
class Precision:
    """What a stage actually ran with; recorded in its manifest."""

    device: str  # "cuda" or "cpu"
    dtype: str  # "float32" | "bfloat16" | "float16"
    quantization: str  # "none" | "8bit" | "4bit": what was applied, not what was asked
    requested_quantization: str
    notes: tuple[str, ...] = ()

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    def to_dict(self) -> dict:
        return asdict(self) | {"notes": list(self.notes)}


@functools.cache
def cpuinfo() -> dict[str, str]:
    """The first processor's fields from /proc/cpuinfo ({} where there is none), read once a process."""
    out: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if not line.strip():
                break
            key, _, value = line.partition(":")
            out[key.strip()] = value.strip()
    except OSError:
        pass
    return out


def cpu_flags() -> set[str]:
    return set(cpuinfo().get("flags", "").split())


def cpu_vendor() -> str:
    """"GenuineIntel", "AuthenticAMD", or "" where /proc/cpuinfo does not say."""
    return cpuinfo().get("vendor_id", "")


def cpu_has_native_bf16(flags: set[str] | None = None) -> bool:
    flags = cpu_flags() if flags is None else flags
    return any(f in flags for f in NATIVE_BF16_CPU_FLAGS)


def cpu_prefers_bf16(flags: set[str] | None = None, vendor: str | None = None) -> bool:
    """Whether bf16 outruns fp32 on this CPU, which is not the same as running bf16 natively.

    torch runs fp32 products through MKL and bf16 through oneDNN. AMX (Intel Sapphire Rapids and later) runs bf16
    about 3.5x fp32. With AVX512-BF16 alone it depends on MKL: on AMD (Zen 4, Zen 5) MKL's fp32 is slow and bf16
    wins (DPO 2.2x), while on an Intel CPU without AMX fp32 wins (a Xeon of family 6 model 207 whose AMX is not
    exposed: SFT training 1.32x, generation 1.13x; BENCHMARKS.md).
    """
    flags = cpu_flags() if flags is None else flags
    vendor = cpu_vendor() if vendor is None else vendor
    return "amx_bf16" in flags or ("avx512_bf16" in flags and vendor == "AuthenticAMD")


def bitsandbytes_can_run(cuda_available: bool) -> bool:
    """bitsandbytes' 4/8-bit kernels are CUDA kernels; on a CPU we never pretend to quantize."""
    return cuda_available


def resolve_precision(
    dtype: str = "auto",
    quantization: str = "none",
    *,
    cuda_available: bool | None = None,
    cuda_bf16: bool | None = None,
    cpu_bf16: bool | None = None,
    cpu_native_bf16: bool | None = None,
) -> Precision:
    """Pick device, dtype and quantization. The keyword overrides exist so tests can pose any machine:
    ``cpu_bf16`` says whether bf16 outruns fp32 on the CPU, ``cpu_native_bf16`` whether it runs bf16 at all."""
    cuda = torch.cuda.is_available() if cuda_available is None else cuda_available
    notes: list[str] = []
    if cuda:
        native_bf16 = fast_bf16 = torch.cuda.is_bf16_supported() if cuda_bf16 is None else cuda_bf16
        auto_dtype = "bfloat16" if native_bf16 else "float16"
    else:
        fast_bf16 = cpu_prefers_bf16() if cpu_bf16 is None else cpu_bf16
        native_bf16 = fast_bf16 or (cpu_has_native_bf16() if cpu_native_bf16 is None else cpu_native_bf16)
        auto_dtype = "bfloat16" if fast_bf16 else "float32"
    chosen = auto_dtype if dtype == "auto" else dtype
    if chosen == "bfloat16" and not native_bf16:
        notes.append("bfloat16 was asked for but this hardware has no native bf16; it will be very slow")
    elif chosen == "bfloat16" and not fast_bf16:
        notes.append("bfloat16 was asked for; this CPU runs it natively but slower than float32 (no AMX)")
    if chosen == "float16" and not cuda:
        notes.append("float16 on a CPU is slow and imprecise; prefer float32")

    applied = quantization
    if quantization != "none" and not bitsandbytes_can_run(cuda):
        applied = "none"
        msg = (
            f"model.quantization={quantization} needs bitsandbytes on a CUDA GPU, and none is available: "
            "loading in full precision instead"
        )
        warnings.warn(msg, stacklevel=2)
        notes.append(msg)
    return Precision(
        device="cuda" if cuda else "cpu",
        dtype=chosen,
        quantization=applied,
        requested_quantization=quantization,
        notes=tuple(notes),
    )


def use_gradient_checkpointing(setting: str, precision: Precision) -> bool:
    """Checkpointing trades compute for memory: worth it on a GPU, a pure loss on a CPU with RAM to spare."""
    if setting == "on":
        return True
    if setting == "off":
        return False
    return precision.device == "cuda" and precision.quantization != "none"


def thread_count(threads: int = 0) -> int:
    """The threads ``model.threads`` means here: 0 is one per core this process may run on."""
    return threads or len(os.sched_getaffinity(0))


def set_threads(threads: int = 0) -> int:
    """Use one thread per core we may run on; 0 means as many as this process is allowed."""
    n = thread_count(threads)
    torch.set_num_threads(n)
    return n
