#!/usr/bin/env bash
# The CUDA path on one GPU, for BENCHMARKS.md's CUDA section. Usage (needs nvidia-smi and the project's packages):
#
#   benchmarks/gpu_check.sh OUTDIR full [LIMIT_S]   the default pipeline, `dvc repro` in this checkout (dtype auto:
#                                                   bf16 on a GPU that has it), timed stage by stage; run it in a
#                                                   fresh clone, where nothing is cached yet
#   benchmarks/gpu_check.sh OUTDIR small            a small pipeline (32 train instructions, 20 SFT steps) twice, in
#                                                   scratch copies: once with QLoRA (model.quantization=4bit:
#                                                   bitsandbytes NF4, checkpointing on) up to train_sft,
#                                                   once in bf16 with generate_sft and train_sft under cProfile
#
# Every line of output is stamped with the time it arrived, and the GPU memory in use is sampled every 0.5 s.
set -u
out=${1:?usage: benchmarks/gpu_check.sh OUTDIR full [LIMIT_S] | small}
mode=${2:-full}
limit=${3:-420}
case "$mode" in full | small) ;; *) echo "gpu_check.sh: the mode is full or small, not '$mode'" >&2; exit 2 ;; esac
mkdir -p "$out"
export PYTHONUNBUFFERED=1
# Text mode splits progress bars' \r too, and those lines are dropped.
stamp() { python -u -c 'import io, sys, time
for line in io.TextIOWrapper(sys.stdin.buffer, errors="replace", newline=None):
    if "%|" not in line: print(f"{time.time():.1f} {line}", end="")'; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python -m benchmarks.gpu_versions > "$out/versions.json"
nvidia-smi --query-gpu=timestamp,memory.used,utilization.gpu --format=csv,noheader -lms 500 > "$out/gpu_memory.csv" &
sampler=$!
trap 'kill $sampler 2>/dev/null' EXIT
if [ "$mode" = full ]; then
  # Without git here, DVC runs without an SCM (nothing is committed or ignored).
  git rev-parse --git-dir >/dev/null 2>&1 || python -m dvc config core.no_scm true
  start=$(date +%s.%N)
  timeout "$limit" python -m dvc repro 2>&1 | stamp > "$out/repro.log"
  echo "dvc repro: exit ${PIPESTATUS[0]}, $(python -c "import time; print(round(time.time() - $start, 1))") s" \
    | tee -a "$out/repro.log"
  tar czf "$out/metrics.tar.gz" metrics dvc.lock
  exit 0
fi

# A scratch copy of the project with params.yaml changed: small_project DIR QUANTIZATION
small_project() {
  rm -rf "$1" && mkdir -p "$1"
  cp -r stages benchmarks configs data params.yaml dvc.yaml "$1"/
  (cd "$1" && python -m dvc init -q --no-scm && python - "$2" <<'EOF'
import sys

import yaml

params = yaml.safe_load(open("params.yaml"))
params["model"]["quantization"] = sys.argv[1]
params["make_instructions"]["n_train"] = 32
params["train_sft"]["max_steps"] = 20
yaml.safe_dump(params, open("params.yaml", "w"), sort_keys=False)
EOF
  )
}

small_project /tmp/qlora 4bit
(cd /tmp/qlora && timeout 170 python -m dvc repro train_sft) 2>&1 | stamp > "$out/qlora.log"
tar czf "$out/qlora_metrics.tar.gz" -C /tmp/qlora metrics models/base/base.json 2>/dev/null

small_project /tmp/bf16 none
# train_sft's own module: stages.launch replaces its process with it (execve), which cProfile cannot follow
(cd /tmp/bf16 && timeout 70 python -m dvc repro make_instructions && \
  timeout 50 python -m cProfile -o "$out/generate_sft.prof" -m stages.generate_sft && \
  timeout 60 python -m cProfile -o "$out/train_sft.prof" -m stages.train_sft) 2>&1 | stamp > "$out/bf16.log"
echo "done"
