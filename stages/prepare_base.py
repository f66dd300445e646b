"""Stage prepare_base: make models/base, the base model every later stage loads.

Recipe: check the source (and that it is not models/base itself); resolve a Hub revision to its commit
and say aloud which code the model brings, before any output; resolve what this host makes of the model
settings; convert or copy the model (a Hub model: only config and tokenizer); write base.json. Versions
and timings go to metrics/prepare_base.json.
"""
from __future__ import annotations

from pathlib import Path

from stages.lib.base_model import (
    BASE_MANIFEST, check_source, config_hash, inspect_source, pin_hub, runtime_choice, save_embedded, save_local,
)
from stages.lib.errors import stage_main
from stages.lib.hardware import resolve_precision, thread_count
from stages.lib.io import atomic_dir, remove_outputs, write_json_atomic
from stages.lib.manifest import build_manifest, environment
from stages.lib.params import load_params
from stages.lib.paths import BASE_MODEL, metrics_path
from stages.lib.runinfo import measured

OUT = BASE_MODEL
METRICS = metrics_path("prepare_base")


@stage_main
def main() -> None:
    params = load_params().model
    kind = check_source(params.name_or_path, params.revision, OUT)
    found = inspect_source(kind, params.name_or_path, params.revision, params.trust_remote_code)
    runtime = runtime_choice(resolve_precision(params.dtype, params.quantization), params.attn_implementation,
                             thread_count(params.threads))
    remove_outputs(OUT, METRICS)
    with measured() as run, atomic_dir(OUT) as tmp:
        if kind == "embedded":
            info = save_embedded(tmp)
        elif kind == "local":
            info = save_local(Path(params.name_or_path), tmp, params.trust_remote_code, params.name_or_path) | found
        else:
            info = pin_hub(params.name_or_path, found["revision"], tmp, params.trust_remote_code) | found
        write_json_atomic(tmp / BASE_MANIFEST, build_manifest(**info, config_sha256=config_hash(tmp), runtime=runtime))
    write_json_atomic(METRICS, {"source": info["source"], "wall_s": run.wall_s, "peak_rss_mb": run.peak_rss_mb,
                                "environment": environment()})
    threads = f", {runtime['threads']} threads" if "threads" in runtime else ""
    print(f"prepare_base: {info['source']} model {info['name_or_path']} -> {OUT} ({runtime['dtype']} on "
          f"{runtime['device']}{threads}, {runtime['attn_implementation']} attention; {run.wall_s} s, "
          f"peak RSS {run.peak_rss_mb} MB)")


if __name__ == "__main__":
    main()
