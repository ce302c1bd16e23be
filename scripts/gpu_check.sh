#!/usr/bin/env bash
# GPU check for the vLLM backend: run on a machine with a CUDA GPU after
# `pip install -e '.[vllm]'`. Records into results/gpu/ (committable: no dataset text):
#   gpu.txt           nvidia-smi name/memory/driver, package versions
#   bench_quick.jsonl marco-eval bench --backend vllm --quick (smollm2-135m)
#   bench.jsonl       marco-eval bench --backend vllm on $MODEL (both workloads and actions)
#   mgsm_en/          lm-eval results JSON of MGSM-En --limit $LIMIT through marco_mcts on vLLM
#   tree_check.txt    marco-eval tree check over that run's trees
# Raw lm-eval samples and trees (they hold the questions) stay in results/runs/gpu_check/ (git-ignored).
#
#   scripts/gpu_check.sh
#   MODEL=qwen2.5-coder-0.5b CONFIG=mcts_step LIMIT=20 DP=2 TP=1 scripts/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-.venv/bin/python}
BIN=$(dirname "$PY")
OUT=${OUT:-results/gpu}
RAW=${RAW:-results/runs/gpu_check}
MODEL=${MODEL:-qwen2.5-coder-0.5b}
CONFIG=${CONFIG:-mcts_step}
LIMIT=${LIMIT:-20}
DP=${DP:-1}  # data_parallel_size: engines, one GPU group each
TP=${TP:-1}  # tensor_parallel_size: GPUs per engine
if [ -z "${MGSM_DATA_DIR:-}" ]; then  # a local MGSM copy beside the checkout, when there is one
    for d in ../shared/data/mgsm shared/data/mgsm; do
        if [ -f "$d/mgsm_en.tsv" ]; then export MGSM_DATA_DIR=$(cd "$d" && pwd); break; fi
    done
fi

"$PY" -c "import vllm" 2>/dev/null || {
    echo "gpu_check: vllm does not import; pip install -e '.[vllm]' on a machine with a CUDA GPU" >&2; exit 2; }
command -v nvidia-smi >/dev/null || { echo "gpu_check: no nvidia-smi: this is not a GPU machine" >&2; exit 2; }
mkdir -p "$OUT" "$RAW"

{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    "$PY" -c "import vllm, torch, transformers; print(f'vllm {vllm.__version__}, torch {torch.__version__}, transformers {transformers.__version__}')"
    git rev-parse HEAD
} > "$OUT/gpu.txt"

"$BIN/marco-eval" models pull smollm2-135m "$MODEL"
"$BIN/marco-eval" bench --backend vllm --tensor-parallel-size "$TP" --quick --out "$OUT/bench_quick.jsonl"
"$BIN/marco-eval" bench --backend vllm --tensor-parallel-size "$TP" --model "$MODEL" --out "$OUT/bench.jsonl"

rm -rf "$RAW/mgsm_en" "$RAW/trees"
"$BIN/lm_eval" --model marco_mcts \
    --model_args "pretrained=$MODEL,config=$CONFIG,backend=vllm,data_parallel_size=$DP,tensor_parallel_size=$TP,tree_dir=$RAW/trees" \
    --tasks mgsm_en --limit "$LIMIT" --output_path "$RAW/mgsm_en" --log_samples 2>&1 | tee "$RAW/mgsm_en.log"
"$BIN/marco-eval" tree check "$RAW/trees" | tail -1 > "$OUT/tree_check.txt"
mkdir -p "$OUT/mgsm_en"
find "$RAW/mgsm_en" -name 'results_*.json' -exec cp {} "$OUT/mgsm_en/" \;
echo "gpu_check: done; recorded in $OUT"
