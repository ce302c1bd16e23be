"""scripts/seed_table.sh with a stand-in lm_eval (the real marco-eval slims and reports):
the command it records, the slim copy that replaces an older one, bad knobs; and the
knobs of scripts/bench_streaming.sh."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from marco_eval import report

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "seed_table.sh"

# Writes what `lm_eval --output_path OUT --log_samples` writes for two problems, and the store.
FAKE_LM_EVAL = r'''#!PYTHON
import json, sys
from pathlib import Path
argv = sys.argv[1:]
out = Path(argv[argv.index("--output_path") + 1])
model_args = dict(kv.split("=", 1) for kv in argv[argv.index("--model_args") + 1].split(","))
task = argv[argv.index("--tasks") + 1]
folder = out / Path(model_args["pretrained"]).name
folder.mkdir(parents=True, exist_ok=True)
stamp = "2026-01-01T00-00-00.000000"
rows = [{"doc_id": d, "target": str(d), "filter": f, "exact_match": float(d == 0), "doc": {"question": "Q"},
         "resps": [["..."]], "filtered_resps": ["0"]} for f in ("strict-match", "flexible-extract") for d in (0, 1)]
(folder / f"samples_{task}_{stamp}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
results = {"results": {task: {"exact_match,strict-match": 0.5, "exact_match,flexible-extract": 0.5}},
           "n-samples": {task: {"original": 250, "effective": 2}}, "total_evaluation_time_seconds": "4",
           "config": {"model": "marco_mcts", "model_args": model_args,
                      "marco_eval_config": {"strategy": "sampling"}}}
(folder / f"results_{stamp}.json").write_text(json.dumps(results))
Path(model_args["store"]).write_text("".join(json.dumps({"task": task, "doc_id": d, "text": "Q restated", "candidates": ["0"],
                                                         "generated_tokens": 7, "policy_calls": 1, "seconds": 1.0}) + "\n"
                                             for d in (0, 1)))
print(" ".join(argv))
'''


@pytest.fixture
def fake_bin(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    lm_eval = bin_dir / "lm_eval"
    lm_eval.write_text(FAKE_LM_EVAL.replace("PYTHON", sys.executable))
    lm_eval.chmod(0o755)
    real = Path(sys.executable).parent
    for name in ("marco-eval", "python"):
        (bin_dir / name).symlink_to(real / name if (real / name).exists() else sys.executable)
    return bin_dir


def run_script(fake_bin, tmp_path, **env):
    full = dict(os.environ, BIN=str(fake_bin), RESULTS=str(tmp_path / "results"), MGSM_DATA_DIR="/data/mgsm",
                MODEL="toy-model", LANGS="en")
    full.update(env)
    full.pop("OMP_NUM_THREADS", None)
    return subprocess.run(["bash", str(SCRIPT)], env=full, capture_output=True, text=True, timeout=120)


def test_runs_records_and_slims(fake_bin, tmp_path):
    done = run_script(fake_bin, tmp_path, LIMIT="100", EXTRA_ARGS="max_batch=32", NOTES="a note")
    assert done.returncode == 0, done.stderr
    dest = tmp_path / "results" / "mgsm" / "en_base_cot"
    manifest = json.loads((dest / "run.json").read_text())
    raw = tmp_path / "results" / "runs" / "mgsm_en_base_cot"
    assert manifest["command"] == (
        f"MGSM_DATA_DIR=/data/mgsm lm_eval --model marco_mcts --model_args pretrained=toy-model,"
        f"config=model_configs/base_cot.yaml,max_batch=32,store={raw}/requests.jsonl --tasks mgsm_en --limit 100 "
        f"--output_path {raw} --log_samples")
    assert manifest["system"] == "toy-model / base_cot" and manifest["notes"] == "a note"
    assert "Q restated" not in (dest / "requests.jsonl").read_text()  # slimmed: no texts
    assert "Q restated" in (raw / "requests.jsonl").read_text()
    loaded = report.load(tmp_path / "results")
    assert [(t.system, t.task, t.n) for t in loaded.tasks] == [("toy-model / base_cot", "mgsm_en", 2)]
    # a second run replaces the slim copy whole: still one results file, so no duplicate rows
    assert run_script(fake_bin, tmp_path, LIMIT="100").returncode == 0
    assert len(list(dest.rglob("results_*.json"))) == 1
    assert len(report.load(tmp_path / "results").tasks) == 1


@pytest.mark.parametrize("env, needle", [({"LIMIT": "300"}, "LIMIT=300: use 1..250"),
                                         ({"LIMIT": "ten"}, "LIMIT=ten"),
                                         ({"LANGS": "fr"}, "LANGS has 'fr': use en and/or zh"),
                                         ({"TAG": "../x"}, "TAG=../x: use lower-case letters")])
def test_bad_knobs_stop_at_once(fake_bin, tmp_path, env, needle):
    done = run_script(fake_bin, tmp_path, **env)
    assert done.returncode == 2 and needle in done.stderr and done.stderr.count("\n") == 1
    assert not (tmp_path / "results" / "mgsm").exists()


def test_a_tag_keeps_another_checkpoints_run_of_the_same_config_apart(fake_bin, tmp_path):
    assert run_script(fake_bin, tmp_path).returncode == 0
    done = run_script(fake_bin, tmp_path, MODEL="ckpt/tuned", TAG="rft")
    assert done.returncode == 0, done.stderr
    mgsm = tmp_path / "results" / "mgsm"
    assert sorted(p.name for p in mgsm.iterdir()) == ["en_base_cot", "en_base_cot_rft"]
    manifest = json.loads((mgsm / "en_base_cot_rft" / "run.json").read_text())
    assert "store=" + str(tmp_path / "results" / "runs" / "mgsm_en_base_cot_rft") in manifest["command"]
    systems = sorted(t.system for t in report.load(tmp_path / "results").tasks)
    assert systems == ["toy-model / base_cot", "tuned / base_cot"]


@pytest.mark.parametrize("repeats", ["0", "three", "100"])
def test_the_streaming_bench_script_refuses_a_bad_repeat_count(repeats):
    done = subprocess.run(["bash", str(REPO / "scripts" / "bench_streaming.sh")], env=dict(os.environ, REPEATS=repeats),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr == f"bench_streaming.sh: REPEATS={repeats}: use 1..99\n"
