#!/usr/bin/env bash
# The transformers backend on a CUDA GPU, in one prepared run (under 8 minutes on one GPU).
# Records into results/gpu/<gpu name>/ (committable: no dataset text):
#   machine.txt     nvidia-smi name/memory/driver, torch/transformers/lm-eval versions, commit, model
#   tests.txt       the real-model tests (tests/test_real_model.py) with MARCO_EVAL_TEST_DEVICE=cuda
#   bench.jsonl     marco-eval bench --quick --device cuda: tokens/s of the search and plain sampling
#   mgsm_en_<config>/  lm-eval results JSON of MGSM-En --limit $LIMIT through marco_mcts, device=cuda,
#                   for config=mcts_step and config=self_consistency
#   tree_check.txt  marco-eval tree check over both runs' trees
# Raw samples and trees (they hold the questions) stay in results/runs/gpu_check/ (git-ignored).
#
#   scripts/gpu_check.sh                      # smollm2-135m, 3 problems
#   MODEL=qwen2.5-coder-0.5b LIMIT=3 scripts/gpu_check.sh
#   MODEL=tiny scripts/gpu_check.sh           # no model reachable: see below
#
# MODEL=tiny: a machine that can neither download a model nor be sent one (this project's
# lent GPUs take 64 MiB) gets a random-weight Qwen2 checkpoint made here, with smollm2's
# tokenizer ($TOKENIZER, a folder, else the pulled model's; carry its tokenizer files): every
# code path runs on CUDA, and accuracy means nothing (the real-model tests then skip unless
# smollm2-135m is provisioned).
# Without the project installed, Python wheels in .whl/ are installed to /tmp/site first
# (docs/scale-out.md says how to gather them).
set -uo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-.venv/bin/python}; [ -x "$PY" ] || PY=python3
MODEL=${MODEL:-smollm2-135m}
LIMIT=${LIMIT:-3}
DEVICE=${DEVICE:-cuda}  # DEVICE=cpu rehearses the script on a machine without a GPU
RAW=${RAW:-results/runs/gpu_check}
export PYTHONUNBUFFERED=1
if [ -z "${MGSM_DATA_DIR:-}" ]; then
    for d in ../shared/data/mgsm shared/data/mgsm; do
        if [ -f "$d/mgsm_en.tsv" ]; then export MGSM_DATA_DIR=$(cd "$d" && pwd); break; fi
    done
fi
if ! "$PY" -c "import marco_eval, lm_eval" 2>/dev/null && [ -d .whl ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 2
    export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
"$PY" -c "import marco_eval, lm_eval, torch; assert '$DEVICE' == 'cpu' or torch.cuda.is_available(), 'no CUDA'" || {
    echo "gpu_check: marco_eval, lm_eval and a CUDA torch must import with $PY (DEVICE=$DEVICE)" >&2; exit 2; }
ME=("$PY" -m marco_eval.cli)
LM_EVAL=("${ME[@]}" run)  # lm_eval's CLI with marco_mcts and our tasks registered

EXTRA=""
if [ "$MODEL" = tiny ]; then
    MODEL=$RAW/tiny_qwen2
    EXTRA=",token_cap=128"  # random weights never write </Output>: every rollout would run to 1,024 tokens
    "$PY" - "$MODEL" <<'EOF' || exit 2
import os
import sys
from pathlib import Path

import torch
from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

from marco_eval import models

out = Path(sys.argv[1])
source = os.environ.get("TOKENIZER") or models.model_dir("smollm2-135m")
tokenizer = AutoTokenizer.from_pretrained(source)
torch.manual_seed(0)
config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=256, intermediate_size=512, num_hidden_layers=4,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                     eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True)
Qwen2ForCausalLM(config).to(torch.bfloat16).save_pretrained(out)
tokenizer.save_pretrained(out)
print(f"gpu_check: random-weight checkpoint at {out}")
EOF
else
    "${ME[@]}" models pull "$MODEL" || exit 2
fi

NAME=$("$PY" -c "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu')" | tr ' /' '__')
OUT=${OUT:-results/gpu/$NAME}
mkdir -p "$OUT" "$RAW"
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
    "$PY" -c "import torch, transformers, lm_eval; print(f'torch {torch.__version__} (CUDA {torch.version.cuda}), transformers {transformers.__version__}, lm-eval {lm_eval.__version__}')"
    echo "commit $(git rev-parse HEAD 2>/dev/null || echo unknown), model $MODEL, device $DEVICE, $(date -u +%FT%TZ)"
} > "$OUT/machine.txt"
status=0

# 1. The real-model tests on the device (they pull nothing: smollm2-135m must be provisioned).
MARCO_EVAL_TEST_DEVICE=$DEVICE timeout 240 "$PY" -m pytest -q -p no:cacheprovider tests/test_real_model.py \
    -k "not lm_eval_cli" 2>&1 | tail -15 > "$OUT/tests.txt" || status=1
tail -1 "$OUT/tests.txt"

# 2. Tokens/s of the search against plain sampling on the device.
timeout 120 "${ME[@]}" bench --quick --model "$MODEL" --device "$DEVICE" --out "$OUT/bench.jsonl" >/dev/null || status=1

# 3. MGSM-En through marco_mcts on the device, both configs, then every tree's invariants.
rm -rf "$RAW/trees"
for CONFIG in mcts_step self_consistency; do
    rm -rf "$RAW/mgsm_en_$CONFIG"
    timeout 150 "${LM_EVAL[@]}" --model marco_mcts \
        --model_args "pretrained=$MODEL,config=$CONFIG,device=$DEVICE,tree_dir=$RAW/trees/$CONFIG$EXTRA" \
        --tasks mgsm_en --limit "$LIMIT" --output_path "$RAW/mgsm_en_$CONFIG" --log_samples \
        > "$RAW/mgsm_en_$CONFIG.log" 2>&1 || { status=1; tail -5 "$RAW/mgsm_en_$CONFIG.log"; }
    mkdir -p "$OUT/mgsm_en_$CONFIG"
    find "$RAW/mgsm_en_$CONFIG" -name 'results_*.json' -exec cp {} "$OUT/mgsm_en_$CONFIG/" \;
done
"${ME[@]}" tree check "$RAW/trees/mcts_step" "$RAW/trees/self_consistency" | tail -1 > "$OUT/tree_check.txt" || status=1
cat "$OUT/tree_check.txt"
echo "gpu_check: recorded in $OUT (exit $status)"
exit $status
