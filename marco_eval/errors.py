"""Errors a user can fix, and how the command line shows them: one line, no traceback.

Every error raised for bad input (a mistyped model_args key, a missing config file, an
unknown model alias, a missing data folder, a prompt longer than the model's context, a
corrupt request store) is a `UserError` whose message is one line naming the problem and
the fix. `marco-eval` prints it as `marco-eval: error: MESSAGE` and exits 2. Plain
`lm_eval` has no such handler, so importing marco_eval.lm installs an excepthook that does
the same for an uncaught UserError (exit status 1, Python's for an uncaught exception).
MARCO_EVAL_TRACEBACK=1 shows the full traceback instead.
"""

from __future__ import annotations

import os
import sys


class UserError(Exception):
    """Bad input; the message is one line naming the problem and the fix."""


class DataError(UserError, FileNotFoundError):
    """A task's data folder or file is missing or malformed."""


class MissingDependency(UserError, RuntimeError):
    """An optional package the asked-for feature needs is not installed; the message says how."""


class IncompatibleDependency(UserError, RuntimeError):
    """An installed package whose internals differ from those marco-eval was made for; the
    message names the version range to install."""


class InputError(UserError, ValueError):
    """A request the model cannot serve: a prompt longer than its context, a bad token budget."""


class ConfigError(UserError, ValueError):
    """A bad setting (model_args, a config YAML, a training config or its overrides)."""


class ReportError(UserError, ValueError):
    """A results folder the report cannot read, or runs it cannot compare: the message names
    the file, the problem and the fix."""


# Functions that recognise another library's error for bad input and return our one-line
# UserError for it (or None): the hook registers one for lm-eval's unknown task names.
TRANSLATORS: list = []


def find_user_error(exc: BaseException | None) -> UserError | None:
    """The UserError behind `exc`: itself, one it was raised from (lm-eval may wrap), or
    what a registered translator makes of a library's own bad-input error."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, UserError):
            return exc
        for translate in TRANSLATORS:
            if (mine := translate(exc)) is not None:
                return mine
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def require(condition, message: str, error: type[Exception] = ValueError) -> None:
    """Raise `error(message)` unless `condition` holds: how validators say what is wrong
    and how to fix it, one check a line."""
    if not condition:
        raise error(message)


def need(ok, message: str) -> None:
    """A settings check: raise ConfigError(message) unless `ok`."""
    require(ok, message, ConfigError)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when the message is empty):
    how an error from a library is quoted inside one of ours."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def one_line(exc: BaseException) -> str:
    return f"marco-eval: error: {exc}"


def install_excepthook() -> None:
    """Show an uncaught UserError as one line; any other exception as before."""
    previous = sys.excepthook
    if getattr(previous, "_marco_eval", False) or os.environ.get("MARCO_EVAL_TRACEBACK"):
        return

    def hook(kind, exc, tb):
        err = find_user_error(exc)
        if err is None:
            return previous(kind, exc, tb)
        sys.stdout.flush()
        print(one_line(err), file=sys.stderr)

    hook._marco_eval = True
    sys.excepthook = hook
