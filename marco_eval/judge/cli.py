"""The `marco-eval judge` subcommands: thin wrappers over export, server and summarize."""

from __future__ import annotations

import argparse
from pathlib import Path


def cmd_export(args) -> int:
    from marco_eval.judge.export import export

    sheet_path, key_path, sheet = export(args.system, args.out, args.key, args.task, args.filter, args.seed,
                                         args.limit, args.source_field, args.reference_field)
    n_cands = sum(len(it["candidates"]) for it in sheet["items"])
    print(f"judge: {len(sheet['items'])} items, {n_cands} candidates -> {sheet_path} (blind: what raters get)")
    print(f"judge: unblinding key -> {key_path} (keep it from raters; `judge summarize` reads it)")
    return 0


def cmd_serve(args) -> int:
    from marco_eval.judge.server import serve

    serve(args.sheet, args.db, args.port, quiet=not args.verbose, host=args.host)
    return 0


def cmd_summarize(args) -> int:
    from marco_eval.judge.summarize import summarize, to_markdown

    summary, paths = summarize(args.sheet, args.key, args.db, args.out_dir, args.alpha_level,
                               args.bootstrap, args.seed)
    print(to_markdown(summary))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    judge = sub.add_parser("judge", help="hand judging: blind sheet, rating page, summary").add_subparsers(
        dest="judge_command", required=True)

    ex = judge.add_parser("export", help="build a blind sheet from lm-eval samples of two or more systems")
    ex.add_argument("--system", action="append", required=True, metavar="NAME=PATH",
                    help="a system's samples_<task>_*.jsonl, or a folder holding it (repeat, two or more)")
    ex.add_argument("--out", type=Path, required=True, help="the sheet JSON (what raters see), e.g. judge/zh_en.json")
    ex.add_argument("--key", type=Path, help="the unblinding key JSON, never in the sheet's folder "
                    "(default: judge-keys/<out stem>.key.json under the working directory, git-ignored)")
    ex.add_argument("--task", help="which task's samples to take from a folder holding several")
    ex.add_argument("--filter", help="which lm-eval filter's responses to judge when a file has several")
    ex.add_argument("--limit", type=int, help="judge a seeded random subset of this many items")
    ex.add_argument("--seed", type=int, help="shuffles items and candidates (default: a random one, kept only "
                    "in the key; a seed you choose makes the sheet reproducible, so keep it from raters)")
    ex.add_argument("--source-field", dest="source_field", help="doc field with the source (default: zh/source/src/sentence)")
    ex.add_argument("--reference-field", dest="reference_field",
                    help="doc field with the reference (default: en/reference/references/ref/translation, else target)")
    ex.set_defaults(func=cmd_export)

    sv = judge.add_parser("serve", help="the rating page (127.0.0.1 unless --host)")
    sv.add_argument("sheet", type=Path)
    sv.add_argument("--db", type=Path, help="SQLite ratings store (default: <sheet stem>.ratings.sqlite beside it)")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine "
                    "only; 0.0.0.0 or this machine's address lets raters on other machines in, with a warning)")
    sv.add_argument("--port", type=int, default=8765, help="0 picks a free port (default 8765)")
    sv.add_argument("--verbose", action="store_true", help="log every request")
    sv.set_defaults(func=cmd_serve)

    sm = judge.add_parser("summarize", help="unblind: per-system means with CIs, Krippendorff's alpha")
    sm.add_argument("sheet", type=Path)
    sm.add_argument("--key", type=Path, help="default: judge-keys/<sheet stem>.key.json under the working directory "
                    "(else a key there with this sheet's id, else one beside the sheet from older exports)")
    sm.add_argument("--db", type=Path, help="default: <sheet stem>.ratings.sqlite beside the sheet")
    sm.add_argument("--out-dir", dest="out_dir", type=Path, help="where <sheet stem>.summary.{md,csv,json} go (default: the sheet's folder)")
    sm.add_argument("--alpha-level", dest="alpha_level", choices=("interval", "ordinal"), default="interval")
    sm.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples (default 2000)")
    sm.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    sm.set_defaults(func=cmd_summarize)
