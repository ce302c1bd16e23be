"""The view page: static/view.html with a run's problems embedded as JSON.

The problem list is one JSON block the page reads at once; each problem's tree is a block of
its own that the page parses only when that problem is shown, so a run of 250 problems opens
as fast as its list draws. The same run gives the same bytes (no time stamps, sorted input).
"""

from __future__ import annotations

import json
from pathlib import Path

from marco_eval.files import write_atomic
from marco_eval.view.run import ViewError, load_run

TEMPLATE = Path(__file__).resolve().parent / "static" / "view.html"
DEFAULT_NAME = "view.html"


def embedded(obj) -> str:
    """JSON that is safe inside <script type="application/json">: "<" only occurs inside JSON
    strings, where \\u003c reads back as the same character, so no "</script>" in a text
    can end the block."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")


def sources_line(rows: list[dict], sources: dict) -> str:
    """What the page was made from, for its header."""
    parts = [f"{len(rows)} problems"]
    if sources["trees"]:
        parts.append(f"{sources['trees']} tree files")
    if sources["store"]:
        parts.append(f"store {Path(sources['store']).name}")
    parts.append(f"gold from {len(sources['samples'])} samples file(s)" if sources["samples"]
                 else "no lm-eval samples found (no gold answers: pass --samples)")
    return " · ".join(parts)


def render_page(title: str, rows: list[dict], details: list[dict], sources: dict) -> str:
    """The whole HTML file as text."""
    blocks = "\n".join(f'<script type="application/json" id="d-{i}">{embedded(d)}</script>'
                       for i, d in enumerate(details))
    run = {"title": title, "sources": sources_line(rows, sources)}
    page = TEMPLATE.read_text(encoding="utf-8")
    # The data goes in last, so nothing in a run's texts is ever read as a placeholder.
    for placeholder, value in (("__TITLE__", title.replace("&", "&amp;").replace("<", "&lt;")),
                               ("__RUN__", embedded(run)), ("__PROBLEMS__", embedded(rows)), ("__DETAILS__", blocks)):
        head, found, tail = page.partition(placeholder)
        if not found:
            raise AssertionError(f"{TEMPLATE} lacks {placeholder}")
        page = head + value + tail
    return page


def write_view(run: str | Path, out: str | Path | None = None, store: str | Path | None = None,
               samples: str | Path | None = None) -> tuple[Path, list[dict]]:
    """`marco-eval view`: read a run, then write its page in one atomic write.

    Args:
        run: the run folder (or its tree folder).
        out: the HTML file (default RUN/view.html).
        store, samples: as load_run takes them.

    Returns:
        (the file written, the problem rows it shows).
    """
    run = Path(run)
    out = Path(out) if out is not None else run / DEFAULT_NAME
    if out.is_dir():
        raise ViewError(f"--out {out} is a folder; give a file name such as {out / DEFAULT_NAME}")
    rows, details, sources = load_run(run, store, samples)
    title = f"marco-eval view: {run.resolve().name}"
    write_atomic(out, render_page(title, rows, details, sources))
    return out, rows
