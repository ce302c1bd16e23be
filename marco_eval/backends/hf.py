"""Transformers backend: the search's Policy on a Hugging Face causal LM.

A hand-written decode loop rather than `model.generate`, because the search needs, per
generated token, the raw (temperature-free) log-probability and top-5, per-row seeds and
stop strings, and nothing else kept: full-vocabulary logits are reduced to (chosen, top-5)
at each step and dropped.

KV reuse (kvtree.py): every node's cache is kept (as a delta on its parent's) so that
expanding a node or rolling out from a child forwards only tokens never seen before;
siblings share their parent's cache; a request's prefix is prefilled at most once.

Batching: the requests of one `generate` call (up to `max_batch` rows) are decoded in
lock-step from their caches, left-padded to a common length; rows that finish are dropped
from the batch (and the KV cache) so long rollouts don't drag short ones along.
"""

from __future__ import annotations

import inspect
import sys
from typing import Hashable, NamedTuple, Sequence

import torch

from marco_eval.backends.codec import TokenizerCodec, pad_token_id
from marco_eval.backends.kvtree import KV, Entry, KVTree
from marco_eval.search.policy import Continue, Generation

TOP_K = 5


class PrefixCache(NamedTuple):
    """A request's prefix, ready to decode from: keys/values of prefix[:-1]."""
    entry: Entry | None  # its KVTree entry (None: reuse off); pinned while a row extends it
    kv: KV  # per layer (keys, values), each [1, kv_heads, len(prefix) - 1, head_dim]


class Joining(NamedTuple):
    """A request about to join the running batch."""
    key: Hashable  # the caller's key, handed back with the result
    req: Continue
    cache: PrefixCache


class _Row:
    __slots__ = ("key", "req", "gen", "rng", "entry", "max_new", "stop_window")

    def __init__(self, key, req: Continue, entry, max_length: int):
        self.key, self.req, self.entry = key, req, entry
        self.gen = Generation([], [], [], finish="length")
        self.rng = torch.Generator().manual_seed(req.seed)
        self.max_new = min(req.max_new_tokens, max_length - len(req.prefix))
        self.stop_window = max((len(s) for s in req.stop), default=0) + 2


class _Batch:
    """The rows decoding together: one KV cache [rows, heads, T, dim], left-padded, a
    matching attention mask, and per row the token to feed next and its position."""

    def __init__(self, policy):
        from transformers import DynamicCache

        self.policy = policy
        self.rows: list[_Row] = []
        self.cache = DynamicCache()
        self.mask = None  # [rows, T]
        self.to_feed: list[int] = []
        self.pos: list[int] = []

    def __len__(self) -> int:
        return len(self.rows)

    def pinned(self) -> set[int]:
        return {id(r.entry) for r in self.rows if r.entry is not None}

    def add(self, items: list[Joining]) -> None:
        """New rows join with their prefix cache (KV of prefix[:-1]); they feed prefix[-1]."""
        if not items:
            return
        dev = self.policy.device
        lengths = [j.cache.kv[0][0].shape[2] for j in items]
        T_old = self.mask.shape[1] if self.mask is not None else 0
        T = max([T_old, *lengths])  # the batch's new width: its longest row, old or new
        new_layers = []
        for li in range(len(items[0].cache.kv)):
            k0 = items[0].cache.kv[li][0]  # [1, kv_heads, n, head_dim]
            keys = torch.zeros((len(items), k0.shape[1], T, k0.shape[3]), dtype=k0.dtype, device=dev)  # [new, kv_heads, T, head_dim]
            values = torch.zeros_like(keys)
            for b, j in enumerate(items):
                layer_k, layer_v = j.cache.kv[li]
                n = layer_k.shape[2]
                if n:  # left padding: the row's positions sit at the right end
                    keys[b, :, T - n:] = layer_k[0]
                    values[b, :, T - n:] = layer_v[0]
            new_layers.append((keys, values))
        new_mask = torch.zeros((len(items), T), dtype=torch.long, device=dev)  # [new, T]
        for b, n in enumerate(lengths):
            new_mask[b, T - n:] = 1
        if self.rows:
            pad = T - T_old  # the old rows get this many columns of left padding
            for layer, (k, v) in zip(self.cache.layers, new_layers):
                old_k, old_v = layer.keys, layer.values  # [rows, kv_heads, T_old, head_dim]
                if pad:
                    z = torch.zeros((old_k.shape[0], old_k.shape[1], pad, old_k.shape[3]), dtype=old_k.dtype, device=dev)
                    old_k, old_v = torch.cat([z, old_k], dim=2), torch.cat([z, old_v], dim=2)  # [rows, kv_heads, T, head_dim]
                layer.keys, layer.values = torch.cat([old_k, k], dim=0), torch.cat([old_v, v], dim=0)  # [rows + new, ...]
            old_mask = self.mask  # [rows, T_old]
            if pad:
                old_mask = torch.cat([torch.zeros((old_mask.shape[0], pad), dtype=torch.long, device=dev), old_mask], 1)
            self.mask = torch.cat([old_mask, new_mask], dim=0)  # [rows + new, T]
        else:
            from transformers import DynamicCache

            self.cache = DynamicCache(ddp_cache_data=new_layers)
            self.mask = new_mask
        for j in items:
            self.rows.append(_Row(j.key, j.req, j.cache.entry, self.policy.max_length))
            self.to_feed.append(j.req.prefix[-1])
            self.pos.append(len(j.req.prefix) - 1)

    def trim_padding(self) -> None:
        """Drop the left columns no live row uses. The batch outlives its rows (continuous
        batching) and grows a column per step, so without this the cache and every step's
        attention would span the whole run (tens of thousands of positions, gigabytes),
        not the longest live row. Positions are passed explicitly, so nothing else moves."""
        first = int(self.mask.any(dim=0).long().argmax())  # the first column a live row attends to
        if first == 0:
            return
        self.mask = self.mask[:, first:]  # [rows, T - first]
        for layer in self.cache.layers:  # [rows, kv_heads, T, head_dim] -> [rows, kv_heads, T - first, head_dim]
            layer.keys, layer.values = layer.keys[:, :, first:].contiguous(), layer.values[:, :, first:].contiguous()

    def step(self) -> torch.Tensor:
        """Forward one token per row; returns next-token logits [rows, vocab]."""
        dev = self.policy.device
        self.mask = torch.cat([self.mask, torch.ones((len(self.rows), 1), dtype=torch.long, device=dev)], dim=1)  # [rows, T + 1]
        ids = torch.tensor(self.to_feed, device=dev).unsqueeze(-1)  # [rows, 1]
        pos = torch.tensor(self.pos, device=dev).unsqueeze(-1)  # [rows, 1]: true positions, padding ignored
        return self.policy._forward(ids, self.mask, pos, self.cache)[:, -1]  # [rows, vocab]

    def feed(self, chosen: list[int], drop: list[int]) -> None:
        """Next step feeds each row's new token; finished rows leave the batch and cache."""
        self.to_feed = list(chosen)
        self.pos = [p + 1 for p in self.pos]
        if not drop:
            return
        keep = [b for b in range(len(self.rows)) if b not in set(drop)]
        if keep:
            sel = torch.tensor(keep, device=self.policy.device)
            self.cache.batch_select_indices(sel)
            self.mask = self.mask[sel]
            self.trim_padding()
        else:
            from transformers import DynamicCache

            self.cache, self.mask = DynamicCache(), None
        self.rows = [self.rows[b] for b in keep]
        self.to_feed = [self.to_feed[b] for b in keep]
        self.pos = [self.pos[b] for b in keep]


def cpu_supports_bf16() -> bool:
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def pick_dtype(dtype: str, device: str) -> torch.dtype:
    if dtype != "auto":
        if not isinstance(getattr(torch, dtype, None), torch.dtype):
            raise ValueError(f"dtype={dtype!r}: use auto, bfloat16, float16 or float32")
        return getattr(torch, dtype)
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_supports_bf16() else torch.float32


class TransformersPolicy(TokenizerCodec):
    def __init__(self, pretrained: str, *, dtype: str = "auto", device: str = "auto", max_batch: int = 16,
                 revision: str | None = None, trust_remote_code: bool = False, kv_reuse: bool = True,
                 kv_cache_mb: int = 2048):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        elif device.startswith("cuda") and not torch.cuda.is_available():
            print(f"marco-eval: device={device} requested but CUDA is not available; using cpu", file=sys.stderr)
            device = "cpu"
        self.device = device
        self.dtype = pick_dtype(dtype, device)
        self.max_batch = max_batch
        self.tokenizer = AutoTokenizer.from_pretrained(pretrained, revision=revision, trust_remote_code=trust_remote_code)
        self.model = AutoModelForCausalLM.from_pretrained(
            pretrained, revision=revision, dtype=self.dtype, trust_remote_code=trust_remote_code
        ).to(device).eval()
        self.name = pretrained
        self.commit_hash = getattr(self.model.config, "_commit_hash", None)
        eos = self.model.generation_config.eos_token_id
        eos = eos if isinstance(eos, list) else [eos] if eos is not None else []
        if self.tokenizer.eos_token_id is not None:
            eos.append(self.tokenizer.eos_token_id)
        self.eos_ids = frozenset(eos)
        self.pad_id = pad_token_id(self.tokenizer, self.eos_ids)
        self.max_length = int(getattr(self.model.config, "max_position_embeddings", 0) or 2048)
        # transformers 5 renames forward's `past_key_values` to `cache`; accept both.
        params = inspect.signature(self.model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self.forwarded_tokens = 0  # every position the model processed, padding included
        self.generated_tokens = 0  # every token sampled, counted as it is made (live progress reads it)
        self.live_rows = 0  # rows in the running batch
        self.kv_reuse = kv_reuse  # off = naive recompute: every request re-reads its prefix
        self.kv = KVTree(max_bytes=kv_cache_mb * 2**20)

    # ------------------------------------------------------------------ model calls
    def _forward(self, input_ids, attention_mask, position_ids, cache, logits_to_keep=1):
        self.forwarded_tokens += input_ids.numel()
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         use_cache=True, logits_to_keep=logits_to_keep, **{self._cache_kw: cache})
        return out.logits

    @torch.inference_mode()
    def generate(self, requests: Sequence[Continue]) -> list[Generation]:
        out: list[Generation | None] = [None] * len(requests)
        queue = list(enumerate(requests))[::-1]

        def pull(n):
            return [queue.pop() for _ in range(min(n, len(queue)))]

        def push(i, gen):
            out[i] = gen

        self.generate_stream(pull, push)
        return out  # type: ignore[return-value]

    def _prefix_cache(self, prefix: tuple[int, ...]) -> PrefixCache:
        """The keys/values of prefix[:-1]: reused from the tree as far as it is cached, the
        rest forwarded now (one row, no padding) and cached in its turn."""
        from transformers import DynamicCache

        base = self.kv.lookup(prefix) if self.kv_reuse else None
        kv = self.kv.materialize(base)  # per layer [1, kv_heads, done, head_dim], or None
        done = base.length if base is not None else 0
        new = prefix[done: len(prefix) - 1]
        if not new:
            return PrefixCache(base, kv if kv is not None else self._empty_kv())
        cache = DynamicCache(ddp_cache_data=kv) if kv is not None else DynamicCache()
        ids = torch.tensor([new], device=self.device)  # [1, new]
        pos = torch.arange(done, done + len(new), device=self.device).unsqueeze(0)  # [1, new]
        self._forward(ids, torch.ones((1, done + len(new)), dtype=torch.long, device=self.device), pos, cache)
        kv = [(layer.keys, layer.values) for layer in cache.layers]  # per layer [1, kv_heads, len(prefix) - 1, head_dim]
        if not self.kv_reuse:
            return PrefixCache(None, kv)
        segment = [(k[:, :, done:].clone(), v[:, :, done:].clone()) for k, v in kv]  # only what the base lacks
        return PrefixCache(self.kv.insert(prefix, base, segment), kv)

    def _empty_kv(self) -> KV:
        cfg = self.model.config.get_text_config()
        heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        empty = torch.zeros((1, heads, 0, dim), dtype=self.dtype, device=self.device)  # [1, kv_heads, 0, head_dim]
        return [(empty, empty) for _ in range(cfg.num_hidden_layers)]

    @torch.inference_mode()
    def generate_stream(self, pull, push) -> None:
        """Continuous batching: keep up to `max_batch` rows decoding; whenever rows finish,
        `pull(n)` is asked for up to n more (key, Continue) pairs, which join the running
        batch at the next step; each result goes to `push(key, Generation)` as soon as its
        row finishes. Ends when no row is live and `pull` returns nothing."""
        batch = _Batch(self)
        while True:
            if len(batch) < self.max_batch:
                new = pull(self.max_batch - len(batch))
                for key, req in new:
                    self.check_length(len(req.prefix))
                shared: dict = {}  # siblings pulled together share one prefix cache (and prefill)
                batch.add([Joining(key, req, self._prefix_cache_shared(req.prefix, shared)) for key, req in new])
            self.live_rows = len(batch)
            if not len(batch):
                break
            logits = batch.step()  # [rows, vocab]
            logp = torch.log_softmax(logits.float(), dim=-1)  # [rows, vocab], raw: no temperature
            top5 = logp.topk(TOP_K, dim=-1).values.tolist()  # rows x 5, descending
            chosen = [self._sample(logits[b], logp[b], row.req, row.rng) for b, row in enumerate(batch.rows)]
            chosen_lp = logp[torch.arange(len(chosen)), torch.tensor(chosen)].tolist()
            self.generated_tokens += len(chosen)
            finished = []
            for b, row in enumerate(batch.rows):
                g, req = row.gen, row.req
                g.token_ids.append(chosen[b])
                g.logprobs.append(chosen_lp[b])
                g.top_logprobs.append(top5[b])
                if chosen[b] in self.eos_ids:
                    g.finish = "eos"
                elif req.stop and (hit := next((s for s in req.stop
                                                if s in self.decode(g.token_ids[-row.stop_window:])), None)):
                    g.finish, g.stop = "stop", hit
                elif len(g.token_ids) < row.max_new:
                    continue
                finished.append(b)
                self._keep_finished(req, g, row.entry, batch.cache, b)
            for b in finished:
                push(batch.rows[b].key, batch.rows[b].gen)
            batch.feed(chosen, drop=finished)
            if self.kv_reuse and finished:
                self.kv.evict_to_cap(pinned=batch.pinned())

    def _prefix_cache_shared(self, prefix: tuple[int, ...], shared: dict) -> PrefixCache:
        if self.kv_reuse and prefix in shared:
            return shared[prefix]
        shared[prefix] = self._prefix_cache(prefix)
        return shared[prefix]

    def _keep_finished(self, req: Continue, gen: Generation, parent, cache, row: int) -> None:
        """Cache prefix + generated (its KV for all but the last token is in the batch now)
        so that expanding or rolling out from it later forwards only new tokens."""
        if not (self.kv_reuse and req.keep_cache) or gen.finish == "eos":
            return
        n = len(gen.token_ids)  # the row's last n positions: prefix[-1] and generated[:-1]
        segment = [(layer.keys[row: row + 1, :, -n:].clone(), layer.values[row: row + 1, :, -n:].clone())
                   for layer in cache.layers]  # per layer [1, kv_heads, n, head_dim]
        self.kv.insert(tuple(req.prefix) + tuple(gen.token_ids), parent, segment)

    @staticmethod
    def _sample(logits: torch.Tensor, logp: torch.Tensor, req: Continue, rng: torch.Generator) -> int:
        if req.temperature == 0:
            return int(torch.argmax(logp))
        scaled = logits.float() / req.temperature
        if req.top_p >= 1.0:
            return int(torch.multinomial(torch.softmax(scaled, dim=-1).cpu(), 1, generator=rng))
        # Nucleus sampling on the head of the distribution: top_p mass almost always lies in
        # the top few hundred tokens, so sorting 1k candidates replaces sorting the vocabulary;
        # if it does not, fall back to all of them. Same result as a full sort.
        probs = torch.softmax(scaled, dim=-1)
        k = min(1024, probs.numel())
        while True:
            top, idx = probs.topk(k)
            if top.sum() >= req.top_p or k == probs.numel():
                break
            k = probs.numel()
        drop = top.cumsum(-1) - top > req.top_p  # keep the smallest set reaching top_p
        top = top.masked_fill(drop, 0.0)
        return int(idx[torch.multinomial(top.cpu(), 1, generator=rng)])

    # ------------------------------------------------------------------ scoring (loglikelihood)
    def score_many(self, pairs: Sequence[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """backends.base.Scorer: one forward pass per pair (no padding to get wrong)."""
        return [self.score(list(ctx), list(cont)) for ctx, cont in pairs]

    @torch.inference_mode()
    def score(self, context: list[int], continuation: list[int]) -> tuple[float, bool]:
        """log P(continuation | context) and whether greedy decoding would produce it."""
        seq = (context + continuation)[-self.max_length:]
        n_cont = len(continuation)
        ids = torch.tensor([seq], device=self.device)  # [1, T]
        self.forwarded_tokens += ids.numel()
        logits = self.model(input_ids=ids).logits[0, -n_cont - 1: -1].float()  # [n_cont, vocab]: predicts each continuation token
        logp = torch.log_softmax(logits, dim=-1)
        target = torch.tensor(seq[-n_cont:], device=self.device)  # [n_cont]
        total = float(logp.gather(-1, target.unsqueeze(-1)).sum())
        greedy = bool((logp.argmax(-1) == target).all())
        return total, greedy
