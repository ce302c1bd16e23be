"""`marco-eval report`: results/ -> the seed's accuracy tables (and ours), costs, CIs, a plot.

    marco-eval report [RESULTS_DIR] [--out DIR] [--baseline SYSTEM]   tables + plot + README.md
    marco-eval report --compare OLD_DIR NEW_DIR                         same-system drift: what moved
    marco-eval regress BASELINE_RUN CANDIDATE_RUN                       is the new checkpoint worse? (exit 1)
    marco-eval report --slim RAW_RUN_DIR DEST_DIR                       a run without dataset text

Data flows one way: load (manifest.py: run.json, or one derived from the results file;
load.py: lm-eval files and request stores, then the cross-run checks; rollouts.py: the
stores' per-rollout data and anytime traces; summaries.py: judge and training summaries)
-> statistics (statistics.py: bootstrap, McNemar, Holm, Test@N; search_stats.py: pass@k,
votes, AUROC, calibration, budget curves) -> tables (mgsm_tables.py, search_tables.py,
reflection.py, tables.py) -> render (render.py; plots.py, search_plots.py) -> write
(write.py). Every table row names the results files it came from (R1, R2, ... in the Runs
table), and everything is written atomically only after everything was computed. schema.py
holds the names and records they share; compare.py and slim.py are the two other modes,
regress.py the `marco-eval regress` command.

This package's namespace is what callers (the CLI, tests) use; the modules are how it is kept.
"""

from marco_eval.errors import ReportError
from marco_eval.report.compare import compare
from marco_eval.report.load import load
from marco_eval.report.manifest import load_manifest
from marco_eval.report.mgsm_tables import verdict_word
from marco_eval.report.schema import DEFAULT_EXCLUDE, TABLES_DIR
from marco_eval.report.slim import slim_run
from marco_eval.report.statistics import Paired, bootstrap_ci, mcnemar_exact
from marco_eval.report.write import report

__all__ = ["DEFAULT_EXCLUDE", "TABLES_DIR", "Paired", "ReportError", "bootstrap_ci", "compare", "load",
           "load_manifest", "mcnemar_exact", "report", "slim_run", "verdict_word"]
