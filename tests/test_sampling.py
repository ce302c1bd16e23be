"""backends/sampling.choose_tokens against the per-row definition it replaced (one softmax and
one top-p cut per row): the same token for every row, bit for bit, whatever else is in the
batch, for greedy, plain temperature and nucleus rows, including the fallback to the whole
vocabulary when the candidates hold less than top_p."""

import pytest
import torch

from marco_eval.backends.sampling import NUCLEUS_CANDIDATES, choose_tokens
from marco_eval.search.policy import Continue


def one_row(logits: torch.Tensor, logp: torch.Tensor, req: Continue, rng: torch.Generator) -> int:
    """The definition: the backend's per-row sampler before sampling was batched."""
    if req.temperature == 0:
        return int(torch.argmax(logp))
    scaled = logits.float() / req.temperature
    if req.top_p >= 1.0:
        return int(torch.multinomial(torch.softmax(scaled, dim=-1), 1, generator=rng))
    probs = torch.softmax(scaled, dim=-1)
    k = min(NUCLEUS_CANDIDATES, probs.numel())
    while True:
        top, idx = probs.topk(k)
        if top.sum() >= req.top_p or k == probs.numel():
            break
        k = probs.numel()
    drop = top.cumsum(-1) - top > req.top_p
    return int(idx[torch.multinomial(top.masked_fill(drop, 0.0), 1, generator=rng)])


REQUESTS = [Continue((1,), 8, temperature=0.0), Continue((1,), 8, temperature=0.7, top_p=0.95),
            Continue((1,), 8, temperature=1.0), Continue((1,), 8, temperature=0.7, top_p=0.95),
            Continue((1,), 8, temperature=1.3, top_p=0.999), Continue((1,), 8, temperature=0.5, top_p=0.5)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_batched_sampling_draws_what_each_row_would_alone(dtype):
    vocab = 151_936  # qwen2.5's
    gen = torch.Generator().manual_seed(0)
    for step in range(12):
        # peaked rows, and a flat one (row 4) whose top 1024 hold far less than 0.999
        logits = (torch.randn(len(REQUESTS), vocab, generator=gen) * 4).to(dtype)  # [rows, vocab]
        logits[4] = (torch.randn(vocab, generator=gen) * 0.01).to(dtype)
        logp = torch.log_softmax(logits.float(), dim=-1)
        batched_rngs = [torch.Generator().manual_seed(100 * step + b) for b in range(len(REQUESTS))]
        alone_rngs = [torch.Generator().manual_seed(100 * step + b) for b in range(len(REQUESTS))]
        batched = choose_tokens(logits, REQUESTS, batched_rngs)
        alone = [one_row(logits[b], logp[b], req, rng) for b, (req, rng) in enumerate(zip(REQUESTS, alone_rngs))]
        assert batched.chosen == alone
        # the raw log-prob of each chosen token and the raw top 5, whatever the temperature
        assert batched.logprobs == [float(logp[b, t]) for b, t in enumerate(alone)]
        assert batched.top_logprobs == logp.topk(5, dim=-1).values.tolist()
        # each generator advanced exactly as the row alone advanced it
        assert [r.get_state().tolist() for r in batched_rngs] == [r.get_state().tolist() for r in alone_rngs]


def test_all_greedy_rows_take_the_argmax_and_draw_nothing():
    logits = torch.tensor([[0.0, 3.0, 1.0], [5.0, 5.0, 1.0]])  # a tie: the first index, as argmax gives
    rngs = [torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)]
    before = [r.get_state().tolist() for r in rngs]
    reqs = [Continue((1,), 4, temperature=0.0)] * 2
    assert choose_tokens(logits, reqs, rngs).chosen == [1, 0]
    assert [r.get_state().tolist() for r in rngs] == before
