#!/usr/bin/env bash
# Issue 6's GPU figures, one step per call of the device tool (each under its 10-minute limit).
# Here first: `python bench/gpu_bundle.py` (builds .gpu/, git-ignored). Then, on the lent machine,
# from the repo root, with carry [".gpu"]:
#
#   bash bench/gpu.sh check            # GPU, versions, one real MiniLM job in bf16 (~1 min)
#   bash bench/gpu.sh core bert-base   # core vs Trainer vs users' loop: max_len 128/512 x batch 16/32
#   bash bench/gpu.sh core modernbert-base
#   bash bench/gpu.sh levers           # the levers one at a time, bert-base at 512 and MiniLM at 128
#   bash bench/gpu.sh jobs             # sweep grid --jobs-per-gpu 1, 2, 4: makespan, utilisation
#   bash bench/gpu.sh warm             # orchestrator overhead with and without warm starts
#
# Figures go to $OUT (the device tool brings them back) or, elsewhere, bench/results/.
# To check this script here: `PY=.venv/bin/python bash bench/gpu.sh check` runs a step with that
# Python and no install (on the CPU); DRY=1 prints each step's commands instead of running them.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d .gpu/imdb ] || { echo "bench/gpu.sh: .gpu/ missing: run python bench/gpu_bundle.py here and carry .gpu" >&2; exit 2; }
if [ -z "${PY:-}" ]; then
  # The GPU image lacks datasets, optuna and the CLI's typer version: installed from the carried wheels.
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl
  export PYTHONPATH="/tmp/site:$PWD"
  PY=python3
fi
export HF_HUB_OFFLINE=1 WANDB_MODE=disabled SWEEP_CACHE_DIR=/tmp/sweep-cache
run() { if [ -n "${DRY:-}" ]; then echo "$*"; else "$@"; fi; }
M=.gpu/minilm
D=.gpu/imdb
R=${OUT:-bench/results}
mkdir -p "$R"
step=${1:-}
case "$step" in
  check)
    nvidia-smi -L || echo "no nvidia-smi: not a GPU machine"
    run $PY -c "import torch, transformers, datasets, optuna, typer; print('torch', torch.__version__, 'transformers', \
transformers.__version__, 'datasets', datasets.__version__, 'optuna', optuna.__version__, 'typer', typer.__version__, \
'bf16', torch.cuda.is_bf16_supported())"
    cat > /tmp/check.yaml <<EOF
model: $M
epochs: 1
data: {name: $D, limit: 4000, eval_limit: 1000}
EOF
    run $PY -m sweeper.cli run /tmp/check.yaml --out /tmp/check-job
    run cp /tmp/check-job/result.json "$R/gpu_check_result.json"
    ;;
  core)
    arch=${2:?core needs an architecture: bert-base or modernbert-base}
    for len in 128 512; do
      for batch in 16 32; do
        run $PY bench/trainer_vs_hf.py --arch "$arch" --max-len "$len" --batch "$batch" --rows 4000 --eval-rows 500 \
          --model "$M" --data "$D" --json "$R/gpu_${arch}_${len}_b${batch}.json"
      done
    done
    ;;
  levers)
    run $PY bench/levers.py --arch bert-base --max-len 512 --batch 16 --steps 60 --model "$M" --data "$D" \
      --json "$R/gpu_levers_bert-base_512.json"
    run $PY bench/levers.py --max-len 128 --batch 16 --steps 200 --model "$M" --data "$D" \
      --json "$R/gpu_levers_minilm_128.json"
    ;;
  jobs)
    run $PY bench/jobs_per_gpu.py --jobs 8 --rows 4000 --model "$M" --data "$D" --json "$R/gpu_jobs_per_gpu.json"
    ;;
  warm)
    run $PY bench/orchestrator_overhead.py --jobs 4 --rows 9600 --epochs 2 --eval-rows 1000 --parallel 1 \
      --model "$M" --data "$D" --json "$R/gpu_orchestrator_overhead.json"
    ;;
  *)
    echo "usage: bash bench/gpu.sh check | core bert-base | core modernbert-base | levers | jobs | warm" >&2
    exit 2
    ;;
esac
