"""What a `dvc` command costs on this project's files, with ruamel.yaml's C parser and without it.

    python -m benchmarks.dvc_commands [--repo .] [--repeat 6] [--json out.json]

Every `dvc` command reads dvc.yaml, dvc.lock and params.yaml (params once per stage that names them) through
ruamel.yaml, which parses in pure Python unless its C extension (the `ruamel.yaml.clib` package) is installed.
This runs `dvc status` and a `dvc repro` with nothing to do in ``--repo`` (the project after `make repro`, or
any reproduced copy of it), alternating runs with the C parser and runs where it is made unimportable, and
reports each command's CPU seconds (user + system of the process) and wall seconds, the mean of ``--repeat``.
The test suite runs about 180 dvc commands, the pipeline a few; each pays this once.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.host import describe, host_kind

# dvc's own entry point, in this interpreter; "pure" first hides the C parser (an entry of None in
# sys.modules makes its import fail, and ruamel.yaml then falls back to its Python parser).
LAUNCH = {
    "C parser": "import sys; from dvc.cli import main; sys.exit(main(sys.argv[1:]))",
    "pure Python": "import sys; sys.modules['_ruamel_yaml'] = None; from dvc.cli import main; sys.exit(main(sys.argv[1:]))",
}
COMMANDS = {"dvc status": ["status", "-q"], "dvc repro (nothing to do)": ["repro", "-q"]}


def run_once(parser: str, args: list[str], repo: Path) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one dvc command in its own process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", LAUNCH[parser], *args], cwd=repo, check=True, capture_output=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), wall


def measure(repo: Path, repeat: int) -> dict:
    if importlib.util.find_spec("_ruamel_yaml") is None:  # ruamel.yaml.clib's module
        raise SystemExit("ruamel.yaml.clib is not installed here: nothing to compare (pip install -r requirements.txt)")
    samples = {(c, p): [] for c in COMMANDS for p in LAUNCH}
    for _ in range(repeat):
        for command, args in COMMANDS.items():
            for parser in LAUNCH:  # alternating, so both see the same load
                samples[command, parser].append(run_once(parser, args, repo))
    out = {}
    for command in COMMANDS:
        row = {}
        for parser in LAUNCH:
            cpu, wall = zip(*samples[command, parser])
            row[parser] = {"cpu_s": round(statistics.mean(cpu), 3), "wall_s": round(statistics.mean(wall), 3)}
        row["cpu_ratio"] = round(row["C parser"]["cpu_s"] / row["pure Python"]["cpu_s"], 2)
        out[command] = row
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", type=Path, default=Path("."), help="a reproduced copy of the project")
    parser.add_argument("--repeat", type=int, default=6)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    host = host_kind()
    results = measure(args.repo, args.repeat)
    print(describe(host))
    print("| command | C parser CPU-s (wall) | pure Python CPU-s (wall) | ratio |\n|---|---|---|---|")
    for command, row in results.items():
        c, p = row["C parser"], row["pure Python"]
        print(f"| {command} | {c['cpu_s']:.2f} ({c['wall_s']:.2f}) | {p['cpu_s']:.2f} ({p['wall_s']:.2f}) "
              f"| {row['cpu_ratio']:.2f}x |")
    if args.json:
        args.json.write_text(json.dumps({"host": host, "repeat": args.repeat, "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
