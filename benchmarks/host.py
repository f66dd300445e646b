"""What kind of host a figure was measured on: CPU model, family, the flags that decide the fast paths, the
dtype ``model.dtype: auto`` picks here, threads and allocator. Printed beside every benchmark figure."""
from __future__ import annotations

import os
import platform
from pathlib import Path

FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def cpuinfo() -> dict[str, str]:
    """The first processor's fields from /proc/cpuinfo ({} where there is none)."""
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


def kind_name(info: dict[str, str], flags: set[str]) -> str:
    """A short name for the classes of x86 server CPU the team meets, from the flags (never the brand string)."""
    if "amx_bf16" in flags:
        return "AMX-BF16 (Sapphire Rapids class)"
    if "avx512_bf16" in flags:
        return "AVX512-BF16 without AMX (AMD Zen 4/5 class)" if "AMD" in info.get("vendor_id", "") + info.get(
            "model name", "") else "AVX512-BF16 without AMX"
    if "avx2" in flags:
        return "AVX2 only, no native bf16 (AMD Zen 3 class)" if "AMD" in info.get("model name", "") else "AVX2 only"
    return platform.machine() or "unknown"


def host_kind() -> dict:
    import torch

    from stages.lib.hardware import resolve_precision

    info = cpuinfo()
    flags = set(info.get("flags", "").split())
    return {
        "kind": kind_name(info, flags),
        "cpu": info.get("model name") or platform.processor() or "unknown",
        "family": info.get("cpu family"), "model": info.get("model"),
        "flags": {f: f in flags for f in FLAGS},
        "auto_dtype": resolve_precision("auto").dtype,
        "usable_cpus": len(os.sched_getaffinity(0)), "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__, "mkldnn": torch.backends.mkldnn.is_available(),
        "allocator": os.environ.get("LD_PRELOAD", "") or "glibc malloc",
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def describe(host: dict) -> str:
    flags = ", ".join(f if on else f"no {f}" for f, on in host["flags"].items())
    return (f"{host['cpu']} (family {host['family']}, model {host['model']}; {host['kind']}); {flags}; "
            f"auto dtype {host['auto_dtype']}; {host['torch_threads']} threads of {host['usable_cpus']} CPUs; "
            f"torch {host['torch']}; allocator {host['allocator']}; load {host['load_average']}")
