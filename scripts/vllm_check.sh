#!/usr/bin/env bash
# The vLLM backend on this machine, GPU or CPU: on a CUDA machine after
# `pip install -e '.[vllm]'`, on a CPU after `make vllm-env` (vLLM's CPU build in .venv-vllm,
# used by default when it exists). Records into results/vllm/<gpu|cpu>/ (committable: no dataset text):
#   machine.txt       nvidia-smi name/memory/driver, or lscpu's model and the flags that matter; package versions
#   bench_quick.jsonl marco-eval bench --backend vllm --quick (smollm2-135m)
#   bench.jsonl       marco-eval bench --backend vllm on $MODEL (both workloads and actions)
#   mgsm_en/          lm-eval results JSON of MGSM-En --limit $LIMIT through marco_mcts on vLLM
#   tree_check.txt    marco-eval tree check over that run's trees
# Raw lm-eval samples and trees (they hold the questions) stay in results/runs/vllm_check/ (git-ignored).
#
#   scripts/vllm_check.sh
#   MODEL=qwen2.5-coder-0.5b CONFIG=mcts_step LIMIT=20 DP=2 TP=1 scripts/vllm_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${PY:-}" ]; then PY=.venv/bin/python; [ -x .venv-vllm/bin/python ] && PY=.venv-vllm/bin/python; fi
BIN=$(dirname "$PY")
RAW=${RAW:-results/runs/vllm_check}
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
    echo "vllm_check: vllm does not import with $PY; make vllm-env (CPU) or pip install -e '.[vllm]' (CUDA GPU)" >&2; exit 2; }
PLATFORM=$("$PY" -c "import vllm; from marco_eval.backends.vllm import on_cpu; print('cpu' if on_cpu(vllm) else 'gpu')")
OUT=${OUT:-results/vllm/$PLATFORM}
mkdir -p "$OUT" "$RAW"

{
    if [ "$PLATFORM" = gpu ]; then
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    else  # vLLM's CPU build: the CPU model, its cores and whether bf16 runs natively
        lscpu | grep -E "^Model name|^CPU\(s\)"
        echo "flags: $(grep -o -w -E 'avx2|avx512f|avx512_bf16|amx_bf16' /proc/cpuinfo | sort -u | tr '\n' ' ')"
    fi
    "$PY" -c "import vllm, torch, transformers; print(f'vllm {vllm.__version__}, torch {torch.__version__}, transformers {transformers.__version__}')"
    git rev-parse HEAD
} > "$OUT/machine.txt"

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
echo "vllm_check: done; recorded in $OUT"
