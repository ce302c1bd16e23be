"""Every command printed in README.md and docs/*.md runs as printed after `make eval` on a
fresh clone (with the venv activated, as the README's "The tools on your PATH" says).

No model runs: each command is checked against the real parsers and validators.

Which lines are commands (the rule the docs follow):
- every line of a fenced code block tagged ```bash or ```sh, and a `$ `-prefixed line in any
  fenced block. Untagged blocks and ```json are output or data; inline code in prose names
  things or gives a synopsis with placeholders (FILE, DIR), so it is not a command. A
  command meant to be copied therefore goes in a bash block, without placeholders.
- a line ending in a backslash continues on the next; `#` outside quotes starts a comment;
  `&&`, `||`, `;`, `|` and a trailing `&` separate commands; leading `VAR=value` words are
  environment settings, and `export VAR=value` sets one for the lines after it.

What is checked, by the command's first word:
- `marco-eval ...`: marco_eval.cli.build_parser(); `run` goes to the lm_eval check (it is
  exactly `lm_eval`), `train` to marco_eval.train.sft.main with its training and data
  loading stubbed out (its own parser and its config loader run). Per subcommand, the
  files it reads must exist (below), `synth --config/--set` go through
  marco_eval.settings.build, model names through the alias table.
- `lm_eval ...`: lm-eval 0.4.13's own CLI (lm_eval._cli.HarnessCLI, with its bare-arguments
  -> `run` rule) and its EvaluatorConfig.from_cli validation; for `--model marco_mcts` the
  `--model_args` go through marco_eval.settings.build (unknown keys, types, ranges, config
  names), other models must be in lm-eval's registry; every `--tasks` name must be a task
  or tag of our tasks/*.yaml, else one lm-eval knows.
- `make TARGET VAR=...`: the target and the variables are the Makefile's.
- `scripts/*.sh`: exists and is executable; each VAR= it is given is read by the script.
- `accelerate launch --config_file F -m MODULE ARGS`: F exists; `-m lm_eval` and
  `-m marco_eval.train.sft` ARGS are checked as above. accelerate's own options are not
  parsed (importing accelerate loads torch).
- `pip install`: only the extras in `.[...]` / `marco-eval[...]` are checked, against
  pyproject.toml; the rest needs the network (UNCHECKED says so).
- `source`/`.`: the file exists after `make eval`.
- environment variables set on a line or exported must be read by this repository's code
  (or be one of RUNTIME_ENV, read by torch or Hugging Face libraries).

Files a command reads must be in a fresh clone (tracked, or new and not git-ignored), or be
written by `make eval` or by a command earlier in the same file (`--output_path`,
`tree_dir=`, `store=`, `--out`, a training config's `output_dir`, ...): "runs as printed,
in the order printed". A hub id (`org/name`) cannot be checked offline and is accepted.

A few cheap, read-only commands (`--help`, `models list`) are also run for real.

Beyond commands, the docs' links and anchors must resolve, and the repository paths,
test names and `marco_eval.module.name` references in their inline code must exist.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import io
import os
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
BIN = Path(sys.executable).parent

# Set by commands in the docs, read by torch or Hugging Face code rather than ours.
RUNTIME_ENV = {
    "OMP_NUM_THREADS": "torch's CPU thread count",
    "CUDA_VISIBLE_DEVICES": "which GPUs torch and vLLM see",
    "HF_HUB_OFFLINE": "huggingface_hub: read the cache only",
    "HF_DATASETS_OFFLINE": "datasets: read the cache only",
    "HF_ENDPOINT": "huggingface_hub: another hub address",
}

# (command words) -> why it is not (fully) checked. Only these may pass without a checker.
UNCHECKED = {
    ("wait",): "a shell builtin: waits for the jobs the lines above started with &",
    ("pip", "install"): "installs from the network; only the extras named are checked against pyproject.toml",
}

# Inline code that looks like a test name but is not one.
NOT_TESTS = {"test_at_n": "the report's Test@N table"}

# Folders under results/ that docs may name although a fresh clone has none: tools write them.
RESULTS_WRITTEN_BY_TOOLS = {
    "results/make_eval": "make eval",
    "results/runs": "raw runs (git-ignored), scripts/seed_table.sh and the docs' examples",
    "results/vllm": "scripts/vllm_check.sh, with vLLM installed",
    "results/human": "marco-eval judge summarize --out-dir results/human",
}


# ----------------------------------------------------------------------------- extraction
@dataclass
class Command:
    doc: Path
    line: int
    text: str  # the printed line, continuation lines joined
    words: list[str]  # shell words of this one command (pipelines and && split apart)
    env: dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(REPO)}:{self.line}"


FENCE = re.compile(r"^(\s*)(`{3,})\s*([\w+-]*)\s*$")
SEPARATORS = {"&&", "||", ";", "|", "&"}


def fenced_blocks(text: str):
    """(info string, [(line number, text)]) for every fenced block, indentation removed."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, ticks, lang = m.group(1), m.group(2), m.group(3)
        body, i = [], i + 1
        while i < len(lines) and lines[i].strip() != ticks:
            line = lines[i]
            body.append((i + 1, line[len(indent):] if line.startswith(indent) else line.lstrip()))
            i += 1
        yield lang, body
        i += 1


def shell_words(text: str) -> list[str]:
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True  # keep `key=a,b`, paths and globs as single words
    return list(lexer)


def commands_in(path: Path) -> list[Command]:
    found: list[Command] = []
    for lang, body in fenced_blocks(path.read_text(encoding="utf-8")):
        is_shell = lang in ("bash", "sh", "shell")
        pending, start = "", 0
        for number, text in body:
            if not is_shell:
                if not text.lstrip().startswith("$ "):
                    continue
                text = text.lstrip()[2:]
            if not pending:
                start = number
            if text.rstrip().endswith("\\"):
                pending += text.rstrip()[:-1] + " "
                continue
            line, pending = pending + text, ""
            words = shell_words(line)
            if not words:
                continue
            printed = " ".join(line.split())
            segment: list[str] = []
            for word in [*words, ";"]:
                if word not in SEPARATORS:
                    segment.append(word)
                    continue
                if segment:
                    env = {}
                    while segment and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", segment[0]):
                        name, value = segment.pop(0).split("=", 1)
                        env[name] = value
                    if segment[:1] == ["export"]:  # its variables are what to check
                        env.update(item.partition("=")[::2] for item in segment[1:])
                    found.append(Command(path, start, printed, segment, env))
                segment = []
    return found


def all_commands() -> list[Command]:
    return [c for doc in DOCS for c in commands_in(doc)]


# ----------------------------------------------------------------------------- the clone
@functools.cache
def clone_files() -> frozenset[str]:
    """What a fresh clone holds: tracked files, plus new files nobody has ignored (work in
    progress in this tree; git-ignored files on this machine do not count)."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    files = {line for line in out.splitlines() if (REPO / line).exists()}
    return frozenset(files)


@functools.cache
def clone_dirs() -> frozenset[str]:
    return frozenset(str(p) for f in clone_files() for p in Path(f).parents if str(p) != ".")


def norm(path: str) -> str:
    return os.path.normpath(path[2:] if path.startswith("./") else path)


def in_clone(path: str) -> bool:
    path = norm(path)
    if any(ch in path for ch in "*?["):
        return any(fnmatch.fnmatch(f, path) for f in clone_files())
    return path in clone_files() or path in clone_dirs()


@functools.cache
def makefile() -> tuple[dict[str, list[str]], set[str]]:
    """The Makefile's targets (with their recipe lines) and variables."""
    targets: dict[str, list[str]] = {}
    variables: set[str] = set()
    current = None
    for line in (REPO / "Makefile").read_text().splitlines():
        if m := re.match(r"^([A-Za-z_][A-Za-z0-9_]*)\s*(\?=|:=|=)", line):
            variables.add(m.group(1))
            current = None
        elif m := re.match(r"^([A-Za-z0-9_.$()/-]+)\s*:(?!=)", line):
            current = m.group(1)
            targets[current] = []
        elif line.startswith("\t") and current:
            targets[current].append(line.strip())
    return targets, variables


def make_eval_outputs() -> set[str]:
    """What `make eval` leaves: the venv, and the outputs its recipe names."""
    targets, _ = makefile()
    venv = re.search(r"^VENV\s*:?=\s*(\S+)", (REPO / "Makefile").read_text(), re.M).group(1)
    produced = {norm(venv)}
    for line in targets["eval"]:
        produced |= {norm(p) for p in re.findall(r"--output_path\s+(\S+)", line)}
        produced |= {norm(p) for p in re.findall(r"tree_dir=([^,\s]+)", line)}
    return produced


@functools.cache
def code_text() -> str:
    """Everything that may read an environment variable: our code, tasks, scripts, Makefile."""
    files = [*REPO.glob("marco_eval/**/*.py"), *REPO.glob("tasks/*.py"), *REPO.glob("scripts/*"),
             REPO / "Makefile"]
    return "\n".join(f.read_text(encoding="utf-8", errors="replace") for f in files if f.is_file())


@functools.cache
def our_task_names() -> frozenset[str]:
    """`task:`, `tag:` and `group:` of tasks/*.yaml (read as lines: the files use lm-eval's
    `!function` tag, which a plain YAML loader refuses)."""
    names = set()
    for f in (REPO / "tasks").glob("*.yaml"):
        names |= set(re.findall(r"^(?:task|tag|group):\s*([\w-]+)\s*$", f.read_text(), re.M))
    return frozenset(names)


@functools.cache
def lm_eval_task_names() -> frozenset[str]:
    from marco_eval._hook import install

    install()
    from lm_eval.tasks import TaskManager

    return frozenset(TaskManager().all_tasks)


# ----------------------------------------------------------------------------- checking
class Problem(Exception):
    """Why a command would not run as printed."""


def parse_quietly(parse, *args):
    """Run an argparse-based parse; its error message (stderr) becomes a Problem."""
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            return parse(*args)
    except SystemExit as e:
        if e.code in (0, None):  # --help
            return None
        raise Problem(f"the parser rejects it: {err.getvalue().strip().splitlines()[-1]}") from None


class Checker:
    """Checks one file's commands in order, remembering what earlier ones wrote."""

    def __init__(self):
        self.produced: set[str] = make_eval_outputs()

    # --- paths
    def wrote(self, path) -> None:
        if path:
            self.produced.add(norm(str(path)))

    def exists_after(self, path: str) -> bool:
        path = norm(path)
        if in_clone(path):
            return True
        stem = path.split("*")[0].rstrip("/") if "*" in path else path
        return any(stem == p or stem.startswith(p + "/") or p.startswith(stem + "/") for p in self.produced)

    def reads(self, path, what: str) -> None:
        if path is not None and not self.exists_after(str(path)):
            raise Problem(f"{what} {path} is neither in a fresh clone nor written by make eval "
                          "or an earlier command in this file")

    def model(self, name: str | None, what: str = "pretrained") -> None:
        from marco_eval.models import ALIASES

        if name is None or name in ALIASES:
            return
        path = norm(name)
        first = path.split("/")[0]
        local = name.startswith((".", "/", "~")) or first in {p.split("/")[0] for p in self.produced} \
            or first in {d.split("/")[0] for d in clone_dirs()}
        if local:
            self.reads(name, f"{what}=")
        elif name.count("/") != 1:
            raise Problem(f"{what}={name!r} is no alias ({', '.join(ALIASES)}), no path and no org/name hub id")

    def env(self, cmd: Command, script: Path | None = None) -> None:
        for key in cmd.env:
            if script is not None:
                text = script.read_text()
                if not re.search(rf"\${{?{key}\b", text):
                    raise Problem(f"{script.relative_to(REPO)} never reads {key}")
            elif key not in RUNTIME_ENV and key not in code_text():
                raise Problem(f"environment variable {key} is read nowhere in this repository")

    # --- dispatch
    def check(self, cmd: Command) -> None:
        words = cmd.words
        head = words[0]
        if redirect := [w for w in words if set(w) <= set("<>&") or re.fullmatch(r"\d>.*", w)]:
            raise Problem(f"redirection {redirect[0]!r}: the parsers would read it as an argument; "
                          "print the command without it")
        for prefix, _why in UNCHECKED.items():
            if tuple(words[:len(prefix)]) == prefix:
                if prefix == ("pip", "install"):
                    self.pip_extras(words[2:])
                return
        if head == "export":
            return self.env(cmd)
        self.env(cmd, REPO / head if head.startswith("scripts/") else None)
        # .venv-vllm (make vllm-env) holds the same tools over vLLM's CPU build; its commands
        # parse the same way, but a fresh clone has it only after make vllm-env.
        name = head.removeprefix(".venv/bin/").removeprefix(".venv-vllm/bin/")
        if head.startswith(".venv/bin/") and not (REPO / head).exists():
            raise Problem(f"{head} does not exist after make eval")
        if name == "marco-eval":
            return self.marco_eval(words[1:])
        if name in ("lm_eval", "lm-eval"):
            return self.lm_eval(words[1:])
        if head == "make":
            return self.make(words[1:])
        if head.startswith("scripts/"):
            return self.script(head)
        if head in ("source", "."):
            return self.reads(words[1], "the file")
        if words[:2] == ["accelerate", "launch"]:
            return self.accelerate(words[2:])
        raise Problem(f"no check for {head!r}: add one to this test, or list it in UNCHECKED with the reason")

    def make(self, args: list[str]) -> None:
        targets, variables = makefile()
        for arg in args:
            if "=" in arg:
                key = arg.split("=", 1)[0]
                if key not in variables:
                    raise Problem(f"the Makefile has no variable {key} (it has {', '.join(sorted(variables))})")
            elif arg not in targets:
                raise Problem(f"the Makefile has no target {arg!r}")

    def script(self, head: str) -> None:
        path = REPO / head
        if not in_clone(head):
            raise Problem(f"{head} is not in the repository")
        if not os.access(path, os.X_OK):
            raise Problem(f"{head} is not executable")
        if head.endswith("seed_table.sh"):  # where it writes (RESULTS, default results)
            self.wrote("results/runs")

    def pip_extras(self, args: list[str]) -> None:
        extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
        for arg in args:
            if m := re.fullmatch(r"(?:\.|marco-eval)\[([\w,-]+)\]", arg):
                for extra in m.group(1).split(","):
                    if extra not in extras:
                        raise Problem(f"pyproject.toml has no extra [{extra}] (it has {', '.join(extras)})")

    def accelerate(self, args: list[str]) -> None:
        if "--config_file" in args:
            self.reads(args[args.index("--config_file") + 1], "--config_file")
        if "-m" not in args:
            raise Problem("only `accelerate launch ... -m MODULE` is checked here")
        module, rest = args[args.index("-m") + 1], args[args.index("-m") + 2:]
        if module == "lm_eval":
            return self.lm_eval(rest)
        if module == "marco_eval.train.sft":
            return self.train(rest)
        raise Problem(f"no check for module {module}")

    # --- marco-eval
    def marco_eval(self, args: list[str]) -> None:
        from marco_eval import settings
        from marco_eval.cli import build_parser
        from marco_eval.models import ALIASES

        if args[:1] == ["run"]:  # cli.main: exactly lm_eval
            return self.lm_eval(args[1:])
        if args[:1] == ["train"]:  # cli.main: its own parser
            return self.train(args[1:])
        if args[:1] == ["verifier"]:  # cli.main: its own parser
            return self.verifier(args[1:])
        ns = parse_quietly(build_parser().parse_args, args)
        if ns is None:
            return
        sub = ns.command
        if sub == "models" and ns.models_command == "pull":
            unknown = [n for n in ns.names if n not in ALIASES]
            if unknown:
                raise Problem(f"no model alias {unknown} (aliases: {', '.join(ALIASES)})")
        elif sub == "tree":
            for path in [ns.file] if ns.tree_command == "show" else ns.paths:
                self.reads(path, "tree file")
            if ns.tree_command == "show" and ns.samples:
                self.reads(ns.samples, "--samples")
        elif sub == "view":
            self.reads(ns.run_dir, "the run folder")
            self.reads(ns.store, "--store")
            self.reads(ns.samples, "--samples")
            self.wrote(ns.out)
        elif sub == "bench":
            self.model(ns.model, "--model")
            self.wrote(ns.out)
        elif sub == "judge":
            if ns.judge_command == "export":
                for system in ns.system:
                    name, _, path = system.partition("=")
                    self.reads(path, f"--system {name}=")
                self.wrote(ns.out)
                self.wrote(ns.key or "judge-keys")
            else:
                self.reads(ns.sheet, "the sheet")
                self.wrote(getattr(ns, "out_dir", None))
        elif sub == "report":
            if ns.slim:
                self.reads(ns.slim[0], "--slim")
                self.wrote(ns.slim[1])
            elif ns.compare:
                for path in ns.compare:
                    self.reads(path, "--compare")
            else:
                self.reads(ns.results_dir, "the results folder")
                self.wrote(ns.out)
        elif sub == "regress":
            self.reads(ns.baseline, "the baseline run")
            self.reads(ns.candidate, "the candidate run")
            self.wrote(None if ns.json == "-" else ns.json)
        elif sub == "synth":
            from marco_eval.settings import parse_overrides

            try:
                settings.build(ns.config, pretrained=ns.model, **parse_overrides(ns.set or []))
            except ValueError as e:
                raise Problem(f"synth settings: {e}") from None
            self.model(ns.model, "--model")
            self.reads(ns.problem_file, "--problem-file")
            self.wrote(ns.out)
            self.wrote(ns.write_problems)

    def train(self, args: list[str]) -> None:
        """marco_eval.train.sft.main with its real parser and config loader; nothing trains."""
        from marco_eval.train import sft

        seen = {}

        def stub_train(c, command):
            seen["config"] = c
            return {"train_rows": 0, "steps": 0, "train_loss": 0.0, "train_seconds": 0, "wall_seconds": 0}

        def stub_dry_run(c):
            seen["config"] = c

        def stub_assemble(summary, out):
            seen["assemble"] = summary, out

        err = io.StringIO()
        real = sft.train, sft.dry_run, sft.assemble
        sft.train, sft.dry_run, sft.assemble = stub_train, stub_dry_run, stub_assemble
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
                code = sft.main(args)
        except SystemExit as e:
            code = e.code
        finally:
            sft.train, sft.dry_run, sft.assemble = real
        if code not in (0, None):
            raise Problem(f"marco-eval train rejects it: {err.getvalue().strip()}")
        if "assemble" in seen:
            summary, out = seen["assemble"]
            self.reads(summary, "the training summary")
            self.reads(str(Path(summary).parent / "adapter" / "adapter_config.json"), "the adapters beside it")
            self.wrote(out)
        if "config" in seen:
            self.reads(next(a for a in args if not a.startswith("-") and "=" not in a), "the training config")
            self.wrote(seen["config"].output_dir)

    def verifier(self, args: list[str]) -> None:
        """marco_eval.train.verifier.main with its real parser and config loader; nothing trains."""
        from marco_eval.train import verifier

        seen = {}

        def stub_train(c, command):
            seen["config"] = c
            return {"chosen": {}, "confidence_reward_validation": {}}

        real, verifier.train = verifier.train, stub_train
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                verifier.main(args)
        except Exception as e:  # a UserError: the config or an override is wrong
            raise Problem(f"marco-eval verifier rejects it: {e}") from None
        finally:
            verifier.train = real
        config = next((a for a in args if not a.startswith("-") and "=" not in a), None)
        if config is not None:
            self.reads(config, "the verifier config")
        self.wrote(seen["config"].output_dir)

    # --- lm_eval
    def lm_eval(self, args: list[str]) -> None:
        from lm_eval._cli import HarnessCLI

        from marco_eval import settings

        saved = sys.argv
        sys.argv = ["lm_eval", *args]
        try:
            ns = parse_quietly(HarnessCLI().parse_args)
        finally:
            sys.argv = saved
        if ns is None or ns.command != "run":
            return
        from lm_eval.config.evaluate_config import EvaluatorConfig

        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                EvaluatorConfig.from_cli(ns)
        except (ValueError, TypeError, FileNotFoundError) as e:
            raise Problem(f"lm-eval rejects it: {e}") from None
        model = ns.model or "hf"
        if model == "marco_mcts":
            model_args = dict(ns.model_args or {})
            name = model_args.pop("config", None)
            try:
                _search, options = settings.build(name, **model_args)
            except ValueError as e:
                raise Problem(f"--model_args: {e}") from None
            self.model(options.pretrained)
            self.wrote(options.tree_dir)
            self.wrote(options.store)
        else:
            import lm_eval.models  # noqa: F401 - registers the built-in names
            from lm_eval.api.registry import model_registry

            if model not in model_registry:
                raise Problem(f"lm-eval has no model {model!r}")
        for task in ns.tasks or []:
            if task not in our_task_names() and task not in lm_eval_task_names():
                raise Problem(f"no task {task!r} in tasks/*.yaml ({', '.join(sorted(our_task_names()))}) or lm-eval")
        self.wrote(ns.output_path)


@functools.cache
def checked() -> dict[str, str | None]:
    """where + command -> None when it runs as printed, else why not. One pass per file,
    in order, since a command may read what an earlier one wrote."""
    results = {}
    for doc in DOCS:
        checker = Checker()
        for cmd in commands_in(doc):
            try:
                checker.check(cmd)
                results[key(cmd)] = None
            except Problem as e:
                results[key(cmd)] = str(e)
    return results


def key(cmd: Command) -> str:
    return f"{cmd.where}: {shlex.join(cmd.words)}"


COMMANDS = all_commands()


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))


@pytest.mark.parametrize("cmd", COMMANDS, ids=[c.where for c in COMMANDS])
def test_command_runs_as_printed(cmd):
    why = checked()[key(cmd)]
    assert why is None, f"{cmd.where}: `{cmd.text}`\n  -> `{shlex.join(cmd.words)}`: {why}"


def test_the_docs_hold_commands():
    """The extraction itself: a README without commands would pass everything above."""
    heads = {c.words[0] for c in COMMANDS}
    assert {"make", "marco-eval", "lm_eval", "scripts/seed_table.sh"} <= heads, heads
    assert len(COMMANDS) > 40


def test_quick_start_is_two_set_up_commands_then_the_path():
    """The standing checks grep for `make eval` and `make test`: Quick start's first block
    is exactly those two, and the README says how to reach the tools they install."""
    readme = (REPO / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    first_block = next(body for lang, body in fenced_blocks(quick) if lang == "bash")
    assert [text.split("#")[0].strip() for _, text in first_block] == ["make eval", "make test"]
    assert "source .venv/bin/activate" in readme and ".venv/bin/marco-eval" in readme


# Read-only and quick: these run for real, with the venv's tools as `make eval` leaves them.
def runs_for_real(cmd: Command) -> bool:
    words = [w.removeprefix(".venv/bin/") for w in cmd.words]
    return words[0] == "marco-eval" and (words[-1] in ("--help", "-h") or words[1:] == ["models", "list"])


REAL = [c for c in COMMANDS if runs_for_real(c)]


@pytest.mark.parametrize("cmd", REAL, ids=[c.where for c in REAL])
def test_cheap_commands_run_for_real(cmd):
    argv = [str(BIN / cmd.words[0].removeprefix(".venv/bin/")), *cmd.words[1:]]
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **cmd.env, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"})
    assert proc.returncode == 0, f"{cmd.where}: `{cmd.text}` exited {proc.returncode}: {proc.stderr[-1000:]}"
    assert proc.stdout.strip(), f"{cmd.where}: `{cmd.text}` printed nothing"


def test_some_commands_run_for_real():
    assert {tuple(c.words[1:]) for c in REAL} >= {("--help",), ("models", "list")}


# ----------------------------------------------------------------------------- links and names
def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation but - and _ dropped, spaces -> -."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    in_fence, found = False, set()
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence and (m := re.match(r"^#{1,6}\s+(.*)", line)):
            found.add(slug(m.group(1)))
    return found


def prose(path: Path) -> str:
    """The text outside fenced blocks."""
    out, in_fence = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence:
            out.append(line)
    return "\n".join(out)


@pytest.mark.parametrize("doc", DOCS, ids=[str(d.relative_to(REPO)) for d in DOCS])
def test_links_resolve(doc):
    bad = []
    for target in re.findall(r"\]\(([^)\s]+)\)", prose(doc)):
        if re.match(r"^[a-z]+:", target):
            continue  # a web address
        path, _, anchor = target.partition("#")
        file = (doc.parent / path).resolve() if path else doc
        rel = os.path.relpath(file, REPO)
        if path and not in_clone(rel):
            bad.append(f"{target}: {rel} is not in the repository")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            bad.append(f"{target}: {rel} has no heading with anchor #{anchor}")
    assert not bad, f"{doc.relative_to(REPO)}: " + "; ".join(bad)


TOP = ("marco_eval/", "tests/", "scripts/", "model_configs/", "training/", "tasks/", "docs/", ".ci/", "results/")


@functools.cache
def defined_tests() -> frozenset[str]:
    return frozenset(re.findall(r"^def (test_\w+)", "\n".join(
        f.read_text() for f in (REPO / "tests").glob("test_*.py")), re.M))


def reference_problem(span: str) -> str | None:
    """Why an inline-code span that names a repository path, a test or a module is stale."""
    if any(mark in span for mark in ("<", "{", "*", "…", "...", " ")):
        return None  # a pattern, a synopsis or prose, not one name
    if m := re.fullmatch(r"(?:(tests/\w+\.py)::)?(test_\w+)(\[.*\])?", span):
        file, name = m.group(1), m.group(2)
        if name in NOT_TESTS:
            return None
        if file and not in_clone(file):
            return f"{file} does not exist"
        if name not in defined_tests():
            return f"no test named {name} in tests/"
        return None
    if m := re.fullmatch(r"(marco_eval(?:\.\w+)+)(?::(\w+))?(?:\(.*\))?", span):
        parts, attr = m.group(1).split("."), m.group(2)
        for n in range(len(parts), 1, -1):
            base = REPO.joinpath(*parts[:n])
            module = base.with_suffix(".py") if base.with_suffix(".py").is_file() else base / "__init__.py"
            if module.is_file():
                names = [*parts[n:], *([attr] if attr else [])]
                if len(names) > 1:
                    return f"{span}: only one attribute after the module is checked"
                if names and not re.search(rf"^(?:class|def)\s+{names[0]}\b|^{names[0]}\s*[:=]",
                                           module.read_text(), re.M):
                    return f"{module.relative_to(REPO)} defines no {names[0]}"
                return None
        return f"no module {m.group(1)}"
    path = span.rstrip("/")
    if path.startswith(TOP) or path in ("Makefile", "pyproject.toml", "marco_eval_hook.pth"):
        if any(re.fullmatch(r"[A-Z][A-Z0-9_]*", part) for part in path.split("/")):
            return None  # RUN/..., OUTPUT_DIR: a placeholder
        for folder in RESULTS_WRITTEN_BY_TOOLS:
            if path == folder or path.startswith(folder + "/"):
                return None
        return None if in_clone(path) else f"{span} does not exist"
    if re.fullmatch(r"[\w/]+\.py", path):  # named within its folder (`backends/base.py`, `kvtree.py`)
        if in_clone(path) or any(f.endswith("/" + path) for f in clone_files()):
            return None
        return f"no file {span} in the repository"
    return None


@pytest.mark.parametrize("doc", DOCS, ids=[str(d.relative_to(REPO)) for d in DOCS])
def test_named_paths_tests_and_modules_exist(doc):
    spans = re.findall(r"`([^`\n]+)`", prose(doc))
    bad = sorted({f"`{s}`: {why}" for s in spans if (why := reference_problem(s))})
    assert not bad, f"{doc.relative_to(REPO)}:\n  " + "\n  ".join(bad)


def test_every_model_args_key_is_in_the_readme_section_the_error_names():
    """settings.py's unknown-key error says "every key is in the README's `--model_args`
    section": keep that true there, and in the full reference."""
    from marco_eval.settings import known_keys

    readme = (REPO / "README.md").read_text()
    assert "\n## `--model_args`\n" in readme
    section = readme.split("\n## `--model_args`\n", 1)[1].split("\n## ", 1)[0]
    reference = (REPO / "docs" / "model-args.md").read_text()
    for where, text in (("README.md, `--model_args`", section), ("docs/model-args.md", reference)):
        missing = [k for k in known_keys() if f"`{k}`" not in text]
        assert not missing, f"{where} does not name {missing}"
