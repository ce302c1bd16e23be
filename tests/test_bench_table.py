"""scripts/bench_table.py: issue #29's goals read off bench records, cell by cell."""

import importlib.util
import json
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("bench_table", REPO / "scripts" / "bench_table.py")
bench_table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench_table)


def vllm_row(action: str, vs_sampling: float, vs_lockstep: float) -> dict:
    return {"backend": "vllm", "model": "m", "workload": "zero_shot", "action": action, "generated_tokens": 2000,
            "tokens_per_s": 90.0, "lockstep_tokens_per_s": 80.0, "sampling_tokens_per_s": 95.0,
            "throughput_vs_sampling": vs_sampling, "streaming_vs_lockstep": vs_lockstep,
            "lockstep_throughput_vs_sampling": 0.8, "mean_in_engine": 9.5,
            "prefill_tokens": {"streaming": 700, "lockstep": 700, "sampling": 700},
            "per_repeat": {"throughput_vs_sampling": [vs_sampling - 0.1, vs_sampling, vs_sampling + 0.05],
                           "streaming_vs_lockstep": [vs_lockstep] * 3, "lockstep_throughput_vs_sampling": [0.8] * 3}}


def hf_row(rows_busy: float, vs_sampling_prefill_once: float) -> dict:
    return {"model": "m", "workload": "few_shot", "action": "step", "generated_tokens": 1900, "tokens_per_s": 80.0,
            "sampling_tokens_per_s": 74.0, "throughput_vs_sampling": 0.8,  # decode-only sampling: shown, not held
            "throughput_vs_sampling_prefill_once": vs_sampling_prefill_once, "rows_busy_pct": {"engine": rows_busy},
            "time_split_pct": {"engine": {"prefill": 8.8, "decode": 82.8, "cache": 2.4, "sample": 5.7}}}


def test_each_cell_is_marked_against_both_of_its_goals(tmp_path, capsys):
    records = tmp_path / "bench.jsonl"
    rows = [vllm_row("step", 0.95, 1.02), vllm_row("mini_step", 0.95, 0.97),  # slower than lock-step
            hf_row(88.0, 0.92), hf_row(46.8, 1.07), hf_row(90.0, 0.85)]  # too few rows busy; too slow
    records.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert bench_table.main([str(records)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| m |")]
    assert [line.rsplit("|", 2)[1].strip() for line in lines] == ["yes", "**no**", "yes", "**no**", "**no**"]
    assert "0.950 (0.850-1.000)" in lines[0]  # the median, then the range over the repeats
    assert "700 / 700 / 700" in lines[0] and "46.8" in lines[3]


def test_no_records_named_is_a_usage_line(capsys):
    assert bench_table.main([]) == 2
    assert "bench_table.py" in capsys.readouterr().err
