"""Hand judging of translations: a blind sheet from lm-eval samples, a rating page, a summary.

    export.py     lm-eval samples of two or more systems -> blind sheet + key file
    store.py      SQLite store of ratings (one row per rater/item/candidate/aspect)
    server.py     the local rating page (stdlib http.server) and its JSON API
    summarize.py  unblind: per-system means with bootstrap CIs, Krippendorff's alpha
"""

from __future__ import annotations


from marco_eval.errors import UserError


class JudgeError(UserError, ValueError):
    """Bad input to a judge command; the message is one line naming the problem and the fix."""
