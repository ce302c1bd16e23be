"""Where the package's data files live, in a source checkout and in an installed wheel.

In a checkout `tasks/` and `model_configs/` sit beside the package; a wheel carries them
inside it (pyproject's force-include), so both layouts are looked up.
"""

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def _data_dir(name: str) -> Path:
    inside = PACKAGE_DIR / name
    return inside if inside.is_dir() else PACKAGE_DIR.parent / name


TASKS_DIR = _data_dir("tasks")
MODEL_CONFIGS_DIR = _data_dir("model_configs")


def cache_dir() -> Path:
    """Root of converted model checkpoints: $MARCO_EVAL_CACHE, else the XDG cache."""
    env = os.environ.get("MARCO_EVAL_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg) / "marco-eval"
