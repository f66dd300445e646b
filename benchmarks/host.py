"""What kind of host a figure was measured on: CPU model, family, the flags that decide the fast paths, the
dtype ``model.dtype: auto`` picks here, threads and allocator. Printed beside every benchmark figure."""
from __future__ import annotations

import os
import platform

FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")

# glibc malloc settings, as variants of the training benchmarks (each variant's process gets the environment):
# - the mmap threshold fixed at 128 KiB: freed tensors go back to the OS at once (less resident memory), every large
#   allocation faults its pages in afresh (measured on Zen 5: half the SFT rate);
# - malloc asking for transparent huge pages (glibc >= 2.35, the kernel's THP mode "madvise" or "always"): a 2 MiB
#   page faults in once where 4 KiB pages fault 512 times; alone and with the threshold fixed at 1 MiB. Measured on
#   Zen 4: within 2-10% of glibc's defaults either way, peaks within 60 MB (BENCHMARKS.md), so not taken.
MALLOC_VARIANTS = {
    "ours, mmap threshold 128 KiB": {"env": {"MALLOC_MMAP_THRESHOLD_": "131072"}},
    "ours, malloc huge pages": {"env": {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}},
    "ours, mmap threshold 1 MiB": {"env": {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=1048576"}},
    "ours, mmap threshold 1 MiB, huge pages": {
        "env": {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1:glibc.malloc.mmap_threshold=1048576"}},
}


def split_batch(micro_batch: int, global_batch: int = 8) -> dict:
    """Trainer arguments for ``micro_batch`` records (SFT) or pairs (DPO) a forward pass, accumulated to the same
    global batch per optimizer step (8, both training stages' default)."""
    return {"per_device_train_batch_size": micro_batch, "gradient_accumulation_steps": global_batch // micro_batch}


def kind_name(info: dict[str, str], flags: set[str]) -> str:
    """A short name for the classes of x86 server CPU the team meets, from the flags (never the brand string)."""
    if "amx_bf16" in flags:
        return "AMX-BF16 (Sapphire Rapids class)"
    if "avx512_bf16" in flags:
        if "AMD" not in info.get("vendor_id", "") + info.get("model name", ""):
            return "AVX512-BF16 without AMX (Intel: fp32 outruns bf16, auto picks fp32)"
        # family 25 is Zen 3 and Zen 4 (only Zen 4 has AVX-512), 26 is Zen 5; Zen 4 runs 512-bit work on 256-bit
        # units, and its bf16 training ran at 0.55-0.59x the Zen 5 rate here (BENCHMARKS.md)
        generation = {"25": "Zen 4", "26": "Zen 5"}.get(info.get("cpu family", ""), "Zen 4/5")
        return f"AVX512-BF16 without AMX (AMD {generation})"
    if "avx2" in flags:
        return "AVX2 only, no native bf16 (AMD Zen 3 class)" if "AMD" in info.get("model name", "") else "AVX2 only"
    return platform.machine() or "unknown"


def host_kind() -> dict:
    import torch

    from stages.lib.hardware import cpu_flags, cpuinfo, resolve_precision

    info = cpuinfo()
    flags = cpu_flags()
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


def gflops_rate(fn, flops: float, seconds: float) -> float:
    """Sustained GFLOP/s of ``fn`` (doing ``flops`` a call), after one warm-up call (oneDNN compiles a kernel
    per shape at its first use)."""
    import time

    fn()
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        runs += 1
    return flops * runs / (time.perf_counter() - start) / 1e9


def gemm_gflops(rows: int = 256, seconds: float = 0.5) -> dict[str, float]:
    """GFLOP/s of the model's commonest product (rows x 576 by 576 x 1536) three ways: fp32 as torch runs it
    (MKL's BLAS), fp32 through oneDNN (what torch does only for oneDNN tensors), and bf16 (oneDNN). MKL picks
    its code path by CPU vendor: on the Zen 5 host it ran at half oneDNN's fp32 rate (BENCHMARKS.md)."""
    import torch
    import torch.nn.functional as F
    from torch.utils import mkldnn as mkldnn_utils

    def rate(fn) -> float:
        return gflops_rate(fn, 2 * rows * 576 * 1536, seconds)

    weight, x = torch.randn(1536, 576), torch.randn(rows, 576)
    onednn_layer = mkldnn_utils.to_mkldnn(torch.nn.Linear(576, 1536, bias=False).eval())
    onednn_x = x.to_mkldnn()
    weight_bf16, x_bf16 = weight.to(torch.bfloat16), x.to(torch.bfloat16)
    with torch.no_grad():
        return {"fp32 (MKL, torch's default)": round(rate(lambda: F.linear(x, weight)), 1),
                "fp32 (oneDNN)": round(rate(lambda: onednn_layer(onednn_x)), 1),
                "bf16 (oneDNN)": round(rate(lambda: F.linear(x_bf16, weight_bf16)), 1)}


def benchmark_precision(model_params):
    """The precision a stage would pick here, with ``model_params.threads`` set, but without the stages' check
    against what prepare_base recorded: a benchmark writes no stage output, and runs at 1 thread whatever
    thread count the pipeline's models/base was prepared with."""
    from stages.lib.hardware import resolve_precision, set_threads

    set_threads(model_params.threads)
    return resolve_precision(model_params.dtype, model_params.quantization)
