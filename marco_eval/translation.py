"""Translation scores: corpus-level BLEU, chrF++ and TER with their sacrebleu signatures,
and COMET as an optional extra.

Each sentence contributes one item ``(references, hypothesis)``; a score is computed
over the whole corpus at once (corpus BLEU is not a mean of sentence BLEUs), against all
references of every sentence. A signature ("nrefs:2|case:mixed|eff:no|tok:13a|...")
says exactly how a score was computed, so that it can be compared with other papers.
Both come from the same sacrebleu metric object in one call (``corpus_score``).

COMET needs ``pip install 'marco-eval[comet]'`` and a model on disk: its path goes in
MARCO_EVAL_COMET_MODEL (nothing is downloaded here).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Iterable, Sequence

from marco_eval.errors import DataError, InputError, MissingDependency

# Metric name (as reported by lm-eval) -> sacrebleu metric, with sacrebleu's defaults
# except chrF++'s word bigrams. Lower TER is better; higher BLEU and chrF++ are.
METRICS = ("bleu", "chrf++", "ter")
HIGHER_IS_BETTER = {"bleu": True, "chrf++": True, "ter": False}

COMET_MODEL_ENV = "MARCO_EVAL_COMET_MODEL"

Item = tuple[Sequence[str], str]  # (references, hypothesis) for one sentence


def make_metric(name: str):
    from sacrebleu.metrics import BLEU, CHRF, TER

    if name == "bleu":
        return BLEU()
    if name == "chrf++":
        return CHRF(word_order=2)
    if name == "ter":
        return TER()
    raise InputError(f"unknown translation metric {name!r}; use one of {', '.join(METRICS)}")


def reference_streams(references: Sequence[Sequence[str]]) -> list[list[str | None]]:
    """Per-sentence reference lists -> sacrebleu's layout, one stream per reference
    position. Sentences with fewer references get None in the missing places (sacrebleu
    then reports nrefs:var)."""
    width = max(len(refs) for refs in references)
    return [[refs[k] if k < len(refs) else None for refs in references] for k in range(width)]


def _frozen(items: Iterable[Item]) -> tuple[tuple[tuple[str, ...], str], ...]:
    return tuple((tuple(refs), hyp) for refs, hyp in items)


@functools.lru_cache(maxsize=16)
def _corpus_score(name: str, items: tuple[tuple[tuple[str, ...], str], ...]) -> tuple[float, str]:
    # Cached: lm-eval asks for a score and its signature separately, from the same items.
    if not items:
        raise InputError(f"{name}: no sentences to score")
    bad = [i for i, (refs, _) in enumerate(items) if not refs or not all(r and r.strip() for r in refs)]
    if bad:
        raise InputError(f"{name}: sentence(s) {bad[:5]} have an empty reference; every sentence needs one")
    metric = make_metric(name)
    hypotheses = [hyp or "" for _, hyp in items]
    score = metric.corpus_score(hypotheses, reference_streams([refs for refs, _ in items]))
    return float(score.score), metric.get_signature().format()


def corpus_score(name: str, items: Iterable[Item]) -> float:
    """Corpus-level score of metric ``name`` over (references, hypothesis) items."""
    return _corpus_score(name, _frozen(items))[0]


def corpus_signature(name: str, items: Iterable[Item]) -> str:
    """sacrebleu's signature of the score ``corpus_score(name, items)`` returns."""
    return _corpus_score(name, _frozen(items))[1]


# --- COMET (optional) ------------------------------------------------------------

def comet_model_path(path: str | None = None) -> Path:
    """The local COMET checkpoint: ``path``, else $MARCO_EVAL_COMET_MODEL. A model folder
    as downloaded from the hub (``checkpoints/model.ckpt`` inside) or the .ckpt itself."""
    value = path or os.environ.get(COMET_MODEL_ENV)
    if not value:
        raise DataError(f"COMET needs a local model: set {COMET_MODEL_ENV} to a COMET model folder "
                           f"(e.g. Unbabel/wmt22-comet-da, downloaded once) or its checkpoints/model.ckpt")
    given = Path(value).expanduser()
    checkpoint = given / "checkpoints" / "model.ckpt" if given.is_dir() else given
    if not checkpoint.is_file():
        raise DataError(f"{COMET_MODEL_ENV}={value}: no COMET checkpoint at {checkpoint}; point it at a "
                                f"downloaded COMET model folder (with checkpoints/model.ckpt) or the .ckpt file")
    return checkpoint


def check_comet(path: str | None = None) -> Path:
    """Fail fast (before any generation) when COMET cannot run: package or model missing."""
    try:
        import comet  # noqa: F401  (unbabel-comet)
    except ImportError as e:
        raise MissingDependency(f"COMET is an optional extra: pip install 'marco-eval[comet]' ({e})") from e
    return comet_model_path(path)


@functools.lru_cache(maxsize=2)
def _load_comet(checkpoint: str):
    import comet

    return comet.load_from_checkpoint(checkpoint)


def comet_score(sources: Sequence[str], hypotheses: Sequence[str], references: Sequence[Sequence[str]],
                path: str | None = None, batch_size: int = 16) -> float:
    """System-level COMET (x100 is not applied: COMET-22 scores lie around 0.5-0.9).

    COMET reads one reference per segment: with several, each segment is scored against
    each of its references and the segment's scores are averaged, then the segments."""
    checkpoint = check_comet(path)
    model = _load_comet(str(checkpoint))
    rows, owner = [], []
    for i, (src, hyp, refs) in enumerate(zip(sources, hypotheses, references, strict=True)):
        for ref in refs:
            rows.append({"src": src, "mt": hyp or "", "ref": ref})
            owner.append(i)
    try:
        import torch

        gpus = 1 if torch.cuda.is_available() else 0
    except ImportError:
        gpus = 0
    scores = model.predict(rows, batch_size=batch_size, gpus=gpus, progress_bar=False).scores
    per_segment: dict[int, list[float]] = {}
    for i, s in zip(owner, scores):
        per_segment.setdefault(i, []).append(float(s))
    means = [sum(v) / len(v) for v in per_segment.values()]
    return sum(means) / len(means)
