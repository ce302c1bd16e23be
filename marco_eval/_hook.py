"""Startup hook: make the released lm-eval CLI find `marco_mcts` and our tasks/.

lm-eval 0.4.13 has no plugin discovery, so `marco_eval_hook.pth` (installed beside the
package in site-packages) puts a five-line finder on `sys.meta_path` at interpreter start.
It imports no file at start-up (not even this one): for every import it compares the
module name with two strings, and only when lm-eval itself is imported does it load this
module, which patches lm-eval right after the real module has run:

- after `lm_eval.models` registers its built-in lazy placeholders, it registers one more,
  "marco_mcts" -> "marco_eval.lm:MarcoMCTSLM" (imported only when that model is chosen);
- after `lm_eval.tasks.manager` loads, `TaskManager` scans our tasks/ directory in
  addition to its own and any --include_path (set MARCO_EVAL_NO_TASKS=1 to opt out), and
  an unknown task name (lm-eval's "Tasks not found: X" and its 40-line traceback) prints
  as one line with the closest known names.

Built-in models and tasks are untouched. An lm-eval with entry-point discovery (the
`lm_eval.models` group in our pyproject) finds the model without this hook.
"""

import os
import sys

MODEL_NAME = "marco_mcts"
MODEL_TARGET = "marco_eval.lm:MarcoMCTSLM"


def _register_model(module) -> None:
    from lm_eval.api.registry import model_registry

    if MODEL_NAME not in model_registry:
        model_registry.register(MODEL_NAME, target=MODEL_TARGET)


_KNOWN_TASKS: list[str] = []  # the task names of the last TaskManager built (for "did you mean")
MISSING_TASKS = "Tasks not found: "  # how lm-eval 0.4.13 says it (config/evaluate_config.py)


def unknown_tasks_error(exc: BaseException):
    """lm-eval's ValueError for unknown task names as our one-line UserError, or None."""
    if not (isinstance(exc, ValueError) and str(exc).startswith(MISSING_TASKS)):
        return None
    import difflib

    from marco_eval.errors import UserError

    parts = []
    for name in str(exc)[len(MISSING_TASKS):].split(", "):
        close = difflib.get_close_matches(name, _KNOWN_TASKS, n=3, cutoff=0.6)
        parts.append(f"{name!r}" + (f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""))
    return UserError(f"unknown task {', '.join(parts)}; `lm_eval ls tasks` lists every task "
                     "(ours: mgsm_en, mgsm_zh, colloquial_zh_en, wmt22_zh_en)")


def _add_tasks_dir(module) -> None:
    from marco_eval import errors

    if unknown_tasks_error not in errors.TRANSLATORS:
        errors.TRANSLATORS.append(unknown_tasks_error)
        errors.install_excepthook()
    manager = module.TaskManager
    original = manager.__init__
    if getattr(original, "_marco_eval", False):
        return
    from marco_eval.paths import TASKS_DIR

    def __init__(self, *args, include_path=None, **kwargs):
        paths = [] if include_path is None else list(include_path) if isinstance(include_path, (list, tuple)) else [include_path]
        if not os.environ.get("MARCO_EVAL_NO_TASKS") and str(TASKS_DIR) not in map(str, paths):
            paths.insert(0, str(TASKS_DIR))  # user paths come later and so take precedence
        original(self, *args, include_path=paths or None, **kwargs)
        try:
            _KNOWN_TASKS[:] = list(self.all_tasks)
        except Exception:  # noqa: BLE001 - suggestions only
            pass

    __init__._marco_eval = True
    manager.__init__ = __init__


_AFTER_IMPORT = {"lm_eval.models": _register_model, "lm_eval.tasks.manager": _add_tasks_dir}


class _Loader:
    def __init__(self, inner, after):
        self.inner, self.after = inner, after

    def create_module(self, spec):
        return self.inner.create_module(spec)

    def exec_module(self, module):
        self.inner.exec_module(module)
        try:
            self.after(module)
        except Exception as e:  # never break lm-eval because of us
            print(f"marco-eval hook: could not patch {module.__name__}: {e}", file=sys.stderr)


def find_patched_spec(me, name, path=None, target=None):
    """The real spec of `name` (from the finders after `me`), its loader wrapped so our
    patch runs once the module has executed."""
    after = _AFTER_IMPORT.get(name)
    if after is None:
        return None
    for finder in sys.meta_path:
        if finder is me or getattr(finder, "_marco_eval", False) or not hasattr(finder, "find_spec"):
            continue
        spec = finder.find_spec(name, path, target)
        if spec is not None:
            if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                spec.loader = _Loader(spec.loader, after)
            return spec
    return None


class _Finder:
    """The same finder as the .pth's, for `install()` when the .pth is not active."""
    _marco_eval = True

    def find_spec(self, name, path=None, target=None):
        return find_patched_spec(self, name, path, target) if name in _AFTER_IMPORT else None


def run_lm_eval(argv: list[str]) -> int:
    """`marco-eval run ARGS`: exactly `lm_eval ARGS` with this hook active; bad input
    (errors.UserError) prints one line and exits 2, like every other subcommand."""
    install()  # in case the .pth hook is not active (python -S, a non-site install)
    from lm_eval.__main__ import cli_evaluate

    from marco_eval.errors import find_user_error, one_line

    sys.argv = ["lm_eval", *argv]
    try:
        cli_evaluate()
    except Exception as e:
        if (err := find_user_error(e)) is None:
            raise
        print(one_line(err), file=sys.stderr)
        return 2
    return 0


def install() -> None:
    """Activate the hook in this process (`marco-eval run` calls it; the .pth needs not)."""
    if not any(getattr(f, "_marco_eval", False) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
    for name, after in _AFTER_IMPORT.items():  # lm-eval imported before we were
        if name in sys.modules:
            after(sys.modules[name])
