"""The tokens of one decode step: per row the next token (greedy, or drawn at the row's
temperature and top-p from the row's own generator), its raw log-probability and the raw
top-5, under the device rule (device.py): the vocabulary-wide work runs on the device for
all rows at once, the host takes the step's small results in one batch of copies, and each
row draws on the host.

The softmax and the top-p candidate cut run once for all sampled rows rather than once per
row, since a per-row call over a whole vocabulary is costly. Row for row the result is the
per-row definition's, bit for bit (tests/test_sampling.py holds that definition and checks it)."""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch

from marco_eval.backends.device import to_host
from marco_eval.search.policy import TOP_K, Continue

# Top-p mass almost always lies in the top few hundred tokens, so sorting this many
# candidates replaces sorting the vocabulary; a row whose candidates fall short of top_p
# sorts all of it instead. Same result as a full sort.
NUCLEUS_CANDIDATES = 1024


class StepTokens(NamedTuple):
    chosen: list[int]  # per row, the next token
    logprobs: list[float]  # its raw (temperature-free) log-probability
    top_logprobs: list[list[float]]  # the raw top-TOP_K log-probabilities, descending


def choose_tokens(logits: torch.Tensor, reqs: Sequence[Continue], rngs: Sequence[torch.Generator]) -> StepTokens:
    """Pick each row's next token.

    Args:
        logits: [rows, vocab] raw logits of the step, on the model's device.
        reqs: each row's request (temperature 0 = greedy; top_p < 1 = nucleus sampling).
        rngs: each row's generator, on the host, advanced only by that row's draws.
    Returns:
        Per row the token, its log-probability and the top-5, as Python values.
    """
    logp = torch.log_softmax(logits.float(), dim=-1)  # [rows, vocab], raw: no temperature
    top = logp.topk(min(TOP_K, logp.shape[-1]), dim=-1).values  # [rows, TOP_K], descending
    hot = [b for b, req in enumerate(reqs) if req.temperature != 0]
    nucleus = [i for i, b in enumerate(hot) if reqs[b].top_p < 1.0]  # positions in `hot`
    plain = [i for i, b in enumerate(hot) if reqs[b].top_p >= 1.0]
    on_device: dict[str, torch.Tensor] = {"top": top}
    if len(hot) < len(reqs):
        on_device["greedy"] = logp.argmax(dim=-1)  # [rows]
    if hot:
        temperature = torch.tensor([reqs[b].temperature for b in hot], dtype=torch.float32,
                                   device=logits.device).unsqueeze(1)  # [hot, 1]
        rows = logits if len(hot) == len(reqs) else logits[hot]  # no copy when every row samples (the usual)
        probs = torch.softmax(rows.float() / temperature, dim=-1)  # [hot, vocab]
        hot_logp = logp if len(hot) == len(reqs) else logp[hot]  # [hot, vocab]
    if nucleus:
        candidates = probs if len(nucleus) == len(hot) else probs[nucleus]
        cand_p, cand_idx = candidates.topk(min(NUCLEUS_CANDIDATES, probs.shape[-1]), dim=-1)  # [nucleus, k] each
        on_device.update(cand_p=cand_p, cand_idx=cand_idx,
                         cand_logp=(hot_logp if len(nucleus) == len(hot) else hot_logp[nucleus]).gather(-1, cand_idx))
    if plain:
        on_device.update(plain_p=probs[plain], plain_logp=hot_logp[plain])  # [plain, vocab] each
    host = dict(zip(on_device, to_host(*on_device.values())))

    top_logprobs = host["top"].tolist()
    chosen = host["greedy"].tolist() if "greedy" in host else [0] * len(reqs)
    logprobs = [row[0] for row in top_logprobs]  # a greedy token's log-prob is the row's maximum
    for j, i in enumerate(plain):
        b = hot[i]
        chosen[b] = int(torch.multinomial(host["plain_p"][j], 1, generator=rngs[b]))
        logprobs[b] = float(host["plain_logp"][j][chosen[b]])
    for j, i in enumerate(nucleus):
        b, top_p = hot[i], reqs[hot[i]].top_p
        row_p, row_idx, row_logp = host["cand_p"][j], host["cand_idx"][j], host["cand_logp"][j]
        if row_p.sum() < top_p:  # the candidates hold less than top_p: take the whole vocabulary
            row_p, row_idx = to_host(*probs[i].topk(probs.shape[-1]))
            row_logp = to_host(hot_logp[i])[0][row_idx]
        drop = row_p.cumsum(-1) - row_p > top_p  # keep the smallest set reaching top_p
        k = int(torch.multinomial(row_p.masked_fill(drop, 0.0), 1, generator=rngs[b]))
        chosen[b], logprobs[b] = int(row_idx[k]), float(row_logp[k])
    return StepTokens(chosen, logprobs, top_logprobs)
