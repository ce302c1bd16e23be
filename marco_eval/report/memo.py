"""Statistics computed once per run: several sections read the same figure (a run's
accuracy CI, its coverage, its reward separation), so each is computed on first use and
kept here, keyed by the run, rather than on the run's record: the records
(schema.TaskRun) stay plain data that knows nothing of the maths made from it."""

from __future__ import annotations

import functools
import weakref
from typing import Callable, TypeVar

T = TypeVar("T")


def once_per_run(compute: Callable[[object], T]) -> Callable[[object], T]:
    """`compute(run)` once per run object; forgotten when the run is."""
    kept: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    @functools.wraps(compute)
    def cached(run) -> T:
        if run not in kept:
            kept[run] = compute(run)
        return kept[run]

    return cached
