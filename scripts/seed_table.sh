#!/usr/bin/env bash
# The seed's MGSM table for one model: each config on each language through marco_mcts,
# resumable, each run recorded and slimmed into results/mgsm/<lang>_<config>/ for the report.
#
#   scripts/seed_table.sh                                       # base_cot on all 250, en + zh
#   CONFIGS="mcts_step mcts_mini64" LIMIT=100 scripts/seed_table.sh
#   MODEL=/path/to/checkpoint CONFIGS=marco_o1_cot LIMIT=100 scripts/seed_table.sh
#   MODEL=checkpoints/marco-o1-cot-rft CONFIGS=mcts_step TAG=rft LANGS=en scripts/seed_table.sh
#
# Per run: lm_eval with store=results/runs/mgsm_<lang>_<config>/requests.jsonl (a killed
# run resumes: rerun the same line), then run.json with the exact command, then
# `marco-eval report --slim` into results/mgsm/<lang>_<config>/ (replacing an older slim
# copy whole). Afterwards: marco-eval report results --baseline "<model> / base_cot".
# EXTRA_ARGS are appended to --model_args (e.g. max_batch=32,tree_batch=32); NOTES goes
# into run.json; RESULTS (default results) is the folder. TAG keeps a run apart from another
# of the same config (another checkpoint's): both folders get _<TAG> after the config. Raw
# runs, with the model's full texts, stay in results/runs/ (gitignored). wall_seconds
# covers the last invocation only.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-.venv/bin}
MODEL=${MODEL:-qwen2.5-coder-0.5b}
CONFIGS=${CONFIGS:-base_cot}
LANGS=${LANGS:-en zh}
LIMIT=${LIMIT:-}  # empty: all 250 problems
EXTRA_ARGS=${EXTRA_ARGS:-}
NOTES=${NOTES:-}
TAG=${TAG:-}
RESULTS=${RESULTS:-results}  # raw runs go to $RESULTS/runs/, slim copies to $RESULTS/mgsm/
if [ -z "${MGSM_DATA_DIR:-}" ] && [ -f ../shared/data/mgsm/mgsm_en.tsv ]; then
    export MGSM_DATA_DIR=../shared/data/mgsm  # relative: lm_eval runs from the repository root
fi
case "$TAG" in *[!a-z0-9_-]*) echo "seed_table.sh: TAG=$TAG: use lower-case letters, digits, - and _" >&2; exit 2 ;; esac
case "$LIMIT" in ''|[1-9]|[1-9][0-9]|1[0-9][0-9]|2[0-4][0-9]|250) ;;
    *) echo "seed_table.sh: LIMIT=$LIMIT: use 1..250, or leave it empty for all 250" >&2; exit 2 ;; esac
"$BIN/marco-eval" models list >/dev/null  # fails in one line when the venv is missing

for config in $CONFIGS; do
    for lang in $LANGS; do
        case "$lang" in en|zh) ;; *) echo "seed_table.sh: LANGS has '$lang': use en and/or zh" >&2; exit 2 ;; esac
        name="mgsm_${lang}_${config}${TAG:+_$TAG}"
        raw="$RESULTS/runs/$name"
        args="pretrained=$MODEL,config=model_configs/$config.yaml${EXTRA_ARGS:+,$EXTRA_ARGS},store=$raw/requests.jsonl"
        cmd="lm_eval --model marco_mcts --model_args $args --tasks mgsm_$lang${LIMIT:+ --limit $LIMIT} --output_path $raw --log_samples"
        shown="${OMP_NUM_THREADS:+OMP_NUM_THREADS=$OMP_NUM_THREADS }MGSM_DATA_DIR=${MGSM_DATA_DIR:-} $cmd"
        echo "== $name: $shown"
        mkdir -p "$raw"
        rm -rf "$raw/$(basename "$MODEL")"  # lm-eval's output of an earlier attempt; the store keeps the work
        start=$(date +%s)
        $BIN/$cmd  # unquoted on purpose: word-split into arguments ($cmd holds no quoted ones)
        seconds=$(( $(date +%s) - start ))
        "$BIN/python" - "$raw/run.json" "$MODEL" "$config" "$shown" "$seconds" "$NOTES" <<'PY'
import json, os, sys
from pathlib import Path
path, model, config, command, seconds, notes = sys.argv[1:]
doc = {"system": f"{Path(model).name} / {config}", "model": Path(model).name, "config": config,
       "command": command, "wall_seconds": int(seconds), "notes": notes or "Made by scripts/seed_table.sh."}
tmp = path + ".tmp"
Path(tmp).write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
os.replace(tmp, path)
PY
        dest="$RESULTS/mgsm/${lang}_${config}${TAG:+_$TAG}"
        rm -rf "$dest.tmp"
        "$BIN/marco-eval" report --slim "$raw" "$dest.tmp" >/dev/null
        rm -rf "$dest" && mv "$dest.tmp" "$dest"
        echo "== $name: recorded in $dest ($seconds s)"
    done
done
