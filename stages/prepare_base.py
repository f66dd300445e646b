"""Stage prepare_base: make models/base, the base model every later stage loads."""
from __future__ import annotations

from pathlib import Path

from stages.lib.base_model import BASE_MANIFEST, check_source, config_hash, pin_hub, save_embedded, save_local
from stages.lib.errors import stage_main
from stages.lib.io import atomic_dir, remove_outputs, write_json_atomic
from stages.lib.manifest import build_manifest
from stages.lib.params import load_params
from stages.lib.runinfo import measured

OUT = Path("models/base")


@stage_main
def main() -> None:
    params = load_params().model
    kind = check_source(params.name_or_path, params.revision)
    remove_outputs(OUT)
    with measured() as run, atomic_dir(OUT) as tmp:
        if kind == "embedded":
            info = save_embedded(tmp)
        elif kind == "local":
            info = save_local(Path(params.name_or_path), tmp, params.trust_remote_code)
        else:
            info = pin_hub(params.name_or_path, params.revision, tmp, params.trust_remote_code)
        write_json_atomic(tmp / BASE_MANIFEST, build_manifest(**info, config_sha256=config_hash(tmp)))
    print(f"prepare_base: {info['source']} model {info['name_or_path']} -> {OUT} "
          f"({run.wall_s} s, peak RSS {run.peak_rss_mb} MB)")


if __name__ == "__main__":
    main()
