"""Running the command lines users type (`lm_eval`, `marco-eval`) in a subprocess of this
venv, on this checkout's code, and what a bad-input run must end in: the exit code, one
`marco-eval: error: ` line, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run(cmd, **env) -> subprocess.CompletedProcess:
    """`cmd` with this checkout first on PYTHONPATH, so the subprocess imports the code under test."""
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", **env})


def lm_eval(model_args: str, *extra: str, out: Path | None = None) -> subprocess.CompletedProcess:
    """`lm_eval --model marco_mcts --model_args MODEL_ARGS --tasks mgsm_en --limit 1 [EXTRA]`."""
    return run([str(BIN / "lm_eval"), "--model", "marco_mcts", "--model_args", model_args, "--tasks", "mgsm_en",
                "--limit", "1", *extra, *(["--output_path", str(out)] if out else [])])


def assert_one_line_error(proc, needle: str | tuple[str, ...], code: int) -> str:
    """The run failed with `code`, printed no traceback, and its last stderr line is our one
    error line holding `needle` (or every one of several); returns that line."""
    assert proc.returncode == code, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    needles = (needle,) if isinstance(needle, str) else needle
    assert last.startswith("marco-eval: error: ") and all(n in last for n in needles), proc.stderr[-2000:]
    assert proc.stderr.count("marco-eval: error: ") == 1, proc.stderr[-2000:]
    return last
