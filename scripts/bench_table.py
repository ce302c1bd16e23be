"""Markdown tables of issue #29's bench records, and whether each cell meets the issue's goals.

    .venv/bin/python scripts/bench_table.py results/bench/vllm-cpu-streaming-*-STAMP.jsonl \
        results/bench/hf-smollm2-135m-streaming-STAMP.jsonl

Reads the JSON lines `marco-eval bench --out` wrote (either backend, with or without
--repeats) and prints one table per backend, figures as recorded: medians, with the range
over the repeats beside each ratio. The goals (issue #29): on vLLM, streaming >= 0.9x the same
engine's plain sampling and >= lock-step in every cell; on the transformers backend, rows
busy >= 85% and >= 0.9x its sampling, with prefill counted the same way in both (the
sampling that prefills each prompt once; the decode-only ratio is printed beside it).
"""

from __future__ import annotations

import sys

from marco_eval.jsonl import read_jsonl

VS_SAMPLING = 0.9  # MCTS tokens/s over the same engine's plain sampling
VS_LOCKSTEP = 1.0  # streaming over lock-step
ROWS_BUSY = 85.0  # transformers backend, percent


def spread(row: dict, key: str) -> str:
    """The median, and the range over repeats when there were several."""
    values = row.get("per_repeat", {}).get(key, [])
    median = f"{row[key]:.3f}"
    return f"{median} ({min(values):.3f}-{max(values):.3f})" if len(values) > 1 else median


def mark(ok: bool) -> str:
    return "yes" if ok else "**no**"


def vllm_table(rows: list[dict]) -> list[str]:
    out = ["| model | workload | action | generated | streaming tok/s | lock-step tok/s | sampling tok/s "
           "| streaming / sampling | streaming / lock-step | lock-step / sampling | prefill tokens (str / lock / samp) "
           "| mean requests in engine | goals met |",
           "|" + "---|" * 13]
    for r in rows:
        prefill = r.get("prefill_tokens", {})
        ok = r["throughput_vs_sampling"] >= VS_SAMPLING and r["streaming_vs_lockstep"] >= VS_LOCKSTEP
        out.append(f"| {r['model']} | {r['workload']} | {r['action']} | {r['generated_tokens']:,} "
                   f"| {r['tokens_per_s']} | {r['lockstep_tokens_per_s']} | {r['sampling_tokens_per_s']} "
                   f"| {spread(r, 'throughput_vs_sampling')} | {spread(r, 'streaming_vs_lockstep')} "
                   f"| {spread(r, 'lockstep_throughput_vs_sampling')} "
                   f"| {' / '.join(str(prefill.get(k, '?')) for k in ('streaming', 'lockstep', 'sampling'))} "
                   f"| {r['mean_in_engine']} | {mark(ok)} |")
    return out


def hf_table(rows: list[dict]) -> list[str]:
    out = ["| model | workload | action | generated | MCTS tok/s | sampling tok/s | MCTS / sampling "
           "| MCTS / sampling, prefill once | rows busy % | time split % (prefill / decode / cache / sample) "
           "| goals met |",
           "|" + "---|" * 11]
    for r in rows:
        split = r["time_split_pct"]["engine"]
        busy = r["rows_busy_pct"]["engine"]
        # sampling that prefills each prompt once, as the search must: prefill counted the same way
        ok = busy >= ROWS_BUSY and r["throughput_vs_sampling_prefill_once"] >= VS_SAMPLING
        out.append(f"| {r['model']} | {r['workload']} | {r['action']} | {r['generated_tokens']:,} "
                   f"| {r['tokens_per_s']} | {r['sampling_tokens_per_s']} | {spread(r, 'throughput_vs_sampling')} "
                   f"| {spread(r, 'throughput_vs_sampling_prefill_once')} | {busy} "
                   f"| {' / '.join(str(split[k]) for k in ('prefill', 'decode', 'cache', 'sample'))} | {mark(ok)} |")
    return out


def main(paths: list[str]) -> int:
    if not paths:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    rows = [row for path in paths for _, row in read_jsonl(path)]
    vllm = [r for r in rows if r.get("backend") == "vllm"]
    hf = [r for r in rows if r.get("backend") != "vllm"]
    for title, table in (("vLLM", vllm_table(vllm) if vllm else []), ("transformers", hf_table(hf) if hf else [])):
        if table:
            print(f"{title}:\n")
            print("\n".join(table) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
