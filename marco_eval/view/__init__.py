"""`marco-eval view RUN_DIR`: one self-contained HTML page that shows every search tree of a run.

    run.py     the run's problems: tree files, else request-store rollouts, gold from lm-eval samples
    page.py    the page: static/view.html with the problems embedded, written atomically
    static/    the page's HTML, CSS and JS (inline; nothing fetched)

A leaf, like report/: nothing in search/, backends/ or the engine imports it.
"""

from marco_eval.view.page import write_view
from marco_eval.view.run import ViewError, load_run

__all__ = ["ViewError", "load_run", "write_view"]
