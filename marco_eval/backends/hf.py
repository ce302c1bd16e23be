"""Transformers backend: the search's Policy on a Hugging Face causal LM.

A hand-written decode loop rather than `model.generate`, because the search needs, per
generated token, the raw (temperature-free) log-probability and top-5, per-row seeds and
stop strings (matched by vLLM's rule: stops.py), and nothing else kept: full-vocabulary
logits are reduced to (chosen, top-5) at each step and dropped.

KV reuse (kvtree.py): every node's cache is kept (as a delta on its parent's) so that
expanding a node or rolling out from a child forwards only tokens never seen before;
siblings share their parent's cache; a request's prefix is prefilled at most once, in
chunks on fixed edges (PREFILL_CHUNK), so prompts that start alike share their common whole
chunks with no change to any output.

Batching: up to `max_batch` rows decode in lock-step, left-padded to a common length, their
keys/values written in place into buffers allocated per batch (kvtree.BatchKV), not
concatenated per step; rows that finish leave at once and queued requests take their places.
On a CPU, bf16 linear layers are packed once for oneDNN (PackedLinear: bit-identical, a
third faster at decode batch sizes).
"""

from __future__ import annotations

import time
from typing import Hashable, NamedTuple, Sequence

import torch

from marco_eval.backends.codec import TokenizerCodec, pad_token_id
from marco_eval.backends.hf_cache import (batch_cache, cache_keyword, cache_kv, check_attention, check_internals,
                                          prefill_cache)
from marco_eval.backends.kvtree import KV, BatchKV, Entry, KVTree
from marco_eval.backends.device import check_memory, resolve_device, synchronizer, to_host
from marco_eval.backends.sampling import choose_tokens
from marco_eval.backends.stops import StopText
from marco_eval.backends.verifier import VerifierHead
from marco_eval.backends.weights import pack_linears, pick_dtype
from marco_eval.errors import InputError
from marco_eval.search.policy import Continue, Generation

# Prefill forwards positions in chunks that end on multiples of this, counted from position 0
# (`prefill_chunks`), so a position's keys/values depend only on the tokens up to its chunk's
# end: two prompts that agree on their first k chunks compute them bit for bit alike, and a
# prompt can take them from the other's cache with no change to any output, even in bf16
# (KVTree.share). 128: long enough that chunking costs little prefill time (docs/speed.md
# has the figures), short enough that few-shot prompts parting mid-chunk still share all
# but under 128 of their common tokens.
PREFILL_CHUNK = 128


def prefill_chunks(start: int, end: int, chunk: int = PREFILL_CHUNK) -> list[tuple[int, int]]:
    """[start, end) cut where positions cross a multiple of `chunk`: (0, 300) -> (0, 128),
    (128, 256), (256, 300); (200, 300) -> (200, 256), (256, 300)."""
    edges = [start, *range((start // chunk + 1) * chunk, end, chunk), end]
    return [(a, b) for a, b in zip(edges, edges[1:]) if b > a]


class PrefixCache(NamedTuple):
    """A request's prefix, ready to decode from: keys/values of prefix[:-1]."""
    entry: Entry | None  # its KVTree entry (None: reuse off); pinned while a row extends it
    segments: list[KV]  # root first; concatenated along positions: per layer [1, kv_heads, len(prefix) - 1, head_dim]


class Joining(NamedTuple):
    """A request about to join the running batch."""
    key: Hashable  # the caller's key, handed back with the result
    req: Continue
    cache: PrefixCache


class Stopwatch:
    """Wall time per part of the decode loop, for `marco-eval bench`: `lap(part)` charges the
    time since the previous lap to `part`. Off (the default) a lap is one attribute test."""

    def __init__(self, on: bool = False, sync=None):
        self.on, self.sync = on, sync  # sync: e.g. torch.cuda.synchronize, so GPU work lands in its part
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def restart(self) -> None:
        self._last = time.perf_counter()

    def lap(self, part: str) -> None:
        if self.on:
            if self.sync is not None:
                self.sync()
            now = time.perf_counter()
            self.seconds[part] = self.seconds.get(part, 0.0) + now - self._last
            self._last = now


class _Row:
    __slots__ = ("key", "req", "gen", "rng", "entry", "max_new", "stops")

    def __init__(self, key, req: Continue, entry, policy):
        self.key, self.req, self.entry = key, req, entry
        self.gen = Generation([], [], [], finish="length")
        self.rng = torch.Generator().manual_seed(req.seed)  # on the host (device.py)
        self.max_new = min(req.max_new_tokens, policy.max_length - len(req.prefix))
        self.stops = StopText(policy.decode, req.stop, req.prefix) if req.stop else None


class _Batch:
    """The rows decoding together: their keys/values in a BatchKV (left-padded rows, written
    in place), and per row the token to feed next and its position."""

    def __init__(self, policy):
        self.policy = policy
        self.rows: list[_Row] = []
        layers, heads, dim = policy.kv_shape()
        self.kv = BatchKV(layers, heads, dim, policy.dtype, policy.device, policy.max_batch)
        self.cache = batch_cache(self.kv)
        self.to_feed: list[int] = []
        self.pos: list[int] = []

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def mask(self) -> torch.Tensor:
        return self.kv.window_mask()  # [rows, longest row]

    def pinned(self) -> set[int]:
        return {id(r.entry) for r in self.rows if r.entry is not None}

    def add(self, items: list[Joining]) -> None:
        """New rows join with their prefix cache (KV of prefix[:-1]); they feed prefix[-1]."""
        if not items:
            return
        self.kv.join([j.cache.segments for j in items])
        for j in items:
            self.rows.append(_Row(j.key, j.req, j.cache.entry, self.policy))
            self.to_feed.append(j.req.prefix[-1])
            self.pos.append(len(j.req.prefix) - 1)

    def step(self) -> torch.Tensor:
        """Forward one token per row; returns next-token logits [rows, vocab]."""
        dev, watch = self.policy.device, self.policy.stopwatch
        mask = self.kv.open_column()  # [rows, T + 1]
        ids = torch.tensor(self.to_feed, device=dev).unsqueeze(-1)  # [rows, 1]
        pos = torch.tensor(self.pos, device=dev).unsqueeze(-1)  # [rows, 1]: true positions, padding ignored
        watch.lap("cache")
        logits = self.policy._forward(ids, mask, pos, self.cache)[:, -1]  # [rows, vocab]
        self.kv.close_column()
        watch.lap("decode")
        return logits

    def feed(self, chosen: list[int], drop: list[int]) -> None:
        """Next step feeds each row's new token; finished rows leave the batch and cache."""
        self.to_feed = list(chosen)
        self.pos = [p + 1 for p in self.pos]
        if not drop:
            return
        order = self.kv.drop(drop)  # the last rows move into the places of those leaving
        self.rows = [self.rows[b] for b in order]
        self.to_feed = [self.to_feed[b] for b in order]
        self.pos = [self.pos[b] for b in order]


class TransformersPolicy(TokenizerCodec):
    def __init__(self, pretrained: str, *, dtype: str = "auto", device: str = "auto", max_batch: int = 16,
                 revision: str | None = None, trust_remote_code: bool = False, kv_reuse: bool = True,
                 kv_cache_mb: int = 2048, share_prompts: bool = True, prefill_chunk: int = PREFILL_CHUNK,
                 verifier: str | None = None, verifier_dtype: str = "auto"):
        """Args:
            pretrained: a hub id or a local folder with the model and its tokenizer.
            dtype: auto (bf16 on GPUs and on CPUs with avx512_bf16/AMX, else fp32), bfloat16,
                float16 or float32.
            device: auto (cuda when available, else cpu), cpu, cuda or cuda:N; a device this
                machine lacks is an error (device.py holds the rule for what lives where).
            max_batch: rows decoding together; queued requests join as rows finish.
            revision: the hub revision (branch, tag or commit) to load.
            trust_remote_code: run the repository's own model code (transformers' flag).
            kv_reuse: keep every node's keys/values so a request forwards only tokens no
                earlier request did; off, every request re-reads its whole prefix (naive).
            kv_cache_mb: the KV tree's cap; least-recently-used leaves go first, and a request
                whose prefix went recomputes it (slower, same outputs).
            share_prompts: prompts that start alike (few-shot exemplars) take their common
                whole chunks from one prefill; exact (PREFILL_CHUNK), so off only to measure it.
            prefill_chunk: positions per prefill forward, chunks ending on its multiples.
            verifier: a verifier checkpoint (train/verifier.py) whose values `value_many`
                gives; read off this model's own forward when its body is this model.
            verifier_dtype: the verifier's precision; auto: this model's. Another one loads
                the checkpoint apart in it, even when its body is this model.
        """
        from transformers import AutoModelForCausalLM, AutoTokenizer

        check_internals()
        self.device = device = resolve_device(device)
        self.dtype = pick_dtype(dtype, device)
        self.max_batch = max_batch
        self.tokenizer = AutoTokenizer.from_pretrained(pretrained, revision=revision, trust_remote_code=trust_remote_code)
        self.model = AutoModelForCausalLM.from_pretrained(
            pretrained, revision=revision, dtype=self.dtype, trust_remote_code=trust_remote_code
        ).to(device).eval()
        check_attention(self.model.config, pretrained)
        if device == "cpu" and self.dtype == torch.bfloat16:
            pack_linears(self.model)
        self.name = pretrained
        self.commit_hash = getattr(self.model.config, "_commit_hash", None)
        eos = self.model.generation_config.eos_token_id
        eos = eos if isinstance(eos, list) else [eos] if eos is not None else []
        if self.tokenizer.eos_token_id is not None:
            eos.append(self.tokenizer.eos_token_id)
        self.eos_ids = frozenset(eos)
        self.pad_id = pad_token_id(self.tokenizer, self.eos_ids)
        self.max_length = int(getattr(self.model.config, "max_position_embeddings", 0) or 2048)
        self._cache_kw = cache_keyword(self.model)
        self.forwarded_tokens = 0  # every position the model processed, padding included
        self.shared_prefill_tokens = 0  # prompt positions taken from other prompts' prefill, not forwarded
        # every token sampled since the policy was built, by every caller, counted as it is
        # made (live progress reads it); a Search's generated_tokens are its own request's
        self.sampled_tokens = 0
        self.live_rows = 0  # rows in the running batch
        self.decode_steps = 0  # batched decode forwards, and the rows they carried: their ratio
        self.row_steps = 0  # over max_batch is how busy the batch was (rows idle while trees wait)
        self.kv_reuse = kv_reuse  # off = naive recompute: every request re-reads its prefix
        self.kv = KVTree(max_bytes=kv_cache_mb * 2**20)
        # Prompts that start alike (few-shot exemplars) share the cache of their common whole
        # chunks, prefilled once (KVTree.share; exact: see PREFILL_CHUNK). Off only to measure it.
        self.share_prompts = share_prompts
        if prefill_chunk <= 0:
            raise InputError(f"prefill_chunk={prefill_chunk}: must be a positive number of positions")
        self.prefill_chunk = prefill_chunk
        self.stopwatch = Stopwatch(sync=synchronizer(device))
        check_memory(device, kv_cache_mb)
        self.verifier = VerifierHead(verifier, self, dtype=verifier_dtype) if verifier else None

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
        """The keys/values of prefix[:-1]: reused from the tree as far as it is cached (and
        from another prompt's prefill as far as the two agree in whole chunks), the rest
        forwarded now (one row, no padding, `prefill_chunks`) and cached in its turn."""
        watch = self.stopwatch
        base = self.kv.lookup(prefix) if self.kv_reuse else None
        if self.share_prompts and self.kv_reuse and len(prefix) - 1 > (base.length if base is not None else 0):
            base = self.kv.share(prefix, base, block=self.prefill_chunk) or base  # e.g. few-shot exemplars
        done = base.length if base is not None else 0
        new = prefix[done: len(prefix) - 1]
        if new and base is not None and base.prefilled:  # a prompt starting where other prompts' prefill did
            self.shared_prefill_tokens += done
        if not new:
            watch.lap("cache")
            return PrefixCache(base, self.kv.path_segments(base))
        kv = self.kv.materialize(base)  # per layer [1, kv_heads, done, head_dim], or None
        cache = prefill_cache(kv)
        watch.lap("cache")
        for start, end in prefill_chunks(done, len(prefix) - 1, self.prefill_chunk):
            ids = torch.tensor([prefix[start:end]], device=self.device)  # [1, end - start]
            pos = torch.arange(start, end, device=self.device).unsqueeze(0)  # [1, end - start]
            self._forward(ids, torch.ones((1, end), dtype=torch.long, device=self.device), pos, cache)
        watch.lap("prefill")
        kv = cache_kv(cache)  # per layer [1, kv_heads, len(prefix) - 1, head_dim]
        if not self.kv_reuse:
            return PrefixCache(None, [kv])
        segment = [(k[:, :, done:].clone(), v[:, :, done:].clone()) for k, v in kv]  # only what the base lacks
        # the new positions are canonical when everything before them is (chunks start on edges)
        canonical = base is None or (base.prefilled and done % self.prefill_chunk == 0)
        entry = self.kv.insert(prefix, base, segment, prefilled=canonical)
        watch.lap("cache")
        return PrefixCache(entry, self.kv.path_segments(entry))

    def kv_shape(self) -> tuple[int, int, int]:
        """(layers, kv_heads, head_dim) of the model's cache."""
        cfg = self.model.config.get_text_config()
        heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        return cfg.num_hidden_layers, heads, dim

    @torch.inference_mode()
    def generate_stream(self, pull, push) -> None:
        """Continuous batching: keep up to `max_batch` rows decoding; whenever rows finish,
        `pull(n)` is asked for up to n more (key, Continue) pairs, which join the running
        batch at the next step; each result goes to `push(key, Generation)` as soon as its
        row finishes. Ends when no row is live and `pull` returns nothing.

        With `stopwatch.on`, the loop's wall time is split into prefill and decode (model
        forwards), cache (KV tree and batch cache handling), sample (choosing tokens, stop
        strings) and search (the caller's pull and push: the searches' own bookkeeping)."""
        batch = _Batch(self)
        watch = self.stopwatch
        watch.restart()
        while True:
            if len(batch) < self.max_batch:
                new = pull(self.max_batch - len(batch))
                watch.lap("search")
                for key, req in new:
                    self.check_length(len(req.prefix))
                shared: dict = {}  # siblings pulled together share one prefix cache (and prefill)
                batch.add([Joining(key, req, self._prefix_cache_shared(req.prefix, shared)) for key, req in new])
                watch.lap("cache")
            self.live_rows = len(batch)
            if not len(batch):
                break
            logits = batch.step()  # [rows, vocab]
            self.decode_steps += 1
            self.row_steps += len(batch)
            chosen, chosen_lp, top5 = choose_tokens(logits, [row.req for row in batch.rows],
                                                    [row.rng for row in batch.rows])
            self.sampled_tokens += len(chosen)
            finished = []
            for b, row in enumerate(batch.rows):
                g = row.gen
                g.token_ids.append(chosen[b])
                g.logprobs.append(chosen_lp[b])
                g.top_logprobs.append(top5[b])
                if chosen[b] in self.eos_ids:
                    g.finish = "eos"
                elif row.stops is not None and (hit := row.stops.add(chosen[b])) is not None:
                    g.finish, g.stop = "stop", hit
                elif len(g.token_ids) < row.max_new:
                    continue
                finished.append(b)
            watch.lap("sample")
            for b in finished:
                self._keep_finished(batch.rows[b], batch.kv, b)
            watch.lap("cache")
            for b in finished:
                push(batch.rows[b].key, batch.rows[b].gen)
            watch.lap("search")
            batch.feed(chosen, drop=finished)
            if self.kv_reuse and finished:
                self.kv.evict_to_cap(pinned=batch.pinned())
            watch.lap("cache")

    def _prefix_cache_shared(self, prefix: tuple[int, ...], shared: dict) -> PrefixCache:
        if self.kv_reuse and prefix in shared:
            return shared[prefix]
        shared[prefix] = self._prefix_cache(prefix)
        return shared[prefix]

    def _keep_finished(self, row: _Row, kv: BatchKV, index: int) -> None:
        """Cache prefix + generated (its KV for all but the last token is in the batch now)
        so that expanding or rolling out from it later forwards only new tokens."""
        req, gen = row.req, row.gen
        if not (self.kv_reuse and req.keep_cache) or gen.finish == "eos":
            return
        n = len(gen.token_ids)  # the row's last n positions: prefix[-1] and generated[:-1]
        segment = [(k.clone(), v.clone()) for k, v in kv.row_tail(index, n)]  # per layer [1, kv_heads, n, head_dim]
        self.kv.insert(tuple(req.prefix) + tuple(gen.token_ids), row.entry, segment)

    # ------------------------------------------------------------------ verifier values
    def value_many(self, sequences: Sequence[tuple[int, ...]]) -> list[float]:
        """search.policy.Verifier: the verifier's value of each whole sequence."""
        if self.verifier is None:
            raise TypeError("this policy was built without a verifier; build it with verifier=PATH (reward=PATH)")
        return self.verifier.values(self, sequences)

    # ------------------------------------------------------------------ scoring (loglikelihood)
    @torch.inference_mode()
    def score_many(self, pairs: Sequence[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """backends.base.Scorer. Up to `max_batch` pairs per forward, longest first, left-padded
        so every row's continuation ends at the last position and only the last
        (longest continuation + 1) positions' logits are kept."""
        seqs = [((list(ctx) + list(cont))[-self.max_length:], len(cont)) for ctx, cont in pairs]
        order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i][0]))
        out: list[tuple[float, bool]] = [(0.0, True)] * len(seqs)
        for first in range(0, len(order), self.max_batch):
            chunk = order[first: first + self.max_batch]
            width, keep = len(seqs[chunk[0]][0]), max(seqs[i][1] for i in chunk) + 1
            ids = torch.full((len(chunk), width), self.pad_id)  # [rows, width], built on the host, moved once
            mask = torch.zeros((len(chunk), width), dtype=torch.long)  # [rows, width]
            for r, i in enumerate(chunk):
                seq = seqs[i][0]
                ids[r, width - len(seq):] = torch.tensor(seq)
                mask[r, width - len(seq):] = 1
            pos = (mask.cumsum(-1) - 1).clamp(min=0)  # [rows, width]: true positions, padding at 0
            ids, mask, pos = ids.to(self.device), mask.to(self.device), pos.to(self.device)
            self.forwarded_tokens += ids.numel()
            logits = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False,
                                logits_to_keep=keep).logits[:, :-1].float()  # [rows, keep - 1, vocab]: predict the last keep - 1
            logp = torch.log_softmax(logits, dim=-1)
            target = ids[:, width - keep + 1:]  # [rows, keep - 1]
            token_logp = logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)  # [rows, keep - 1]
            hits = logp.argmax(-1) == target  # [rows, keep - 1]
            n_cont = torch.tensor([seqs[i][1] for i in chunk], device=self.device).unsqueeze(1)  # [rows, 1]
            in_cont = torch.arange(keep - 1, device=self.device).unsqueeze(0) >= keep - 1 - n_cont  # [rows, keep - 1]
            # where, not a product: a padding position's logits may be NaN or inf, and 0 * NaN is NaN
            totals = torch.where(in_cont, token_logp, 0.0).sum(-1)  # [rows]
            greedy = (hits | ~in_cont).all(-1)  # [rows]
            totals, greedy = to_host(totals, greedy)
            for r, i in enumerate(chunk):
                out[i] = (float(totals[r]), bool(greedy[r]))
        return out

    def score(self, context: list[int], continuation: list[int]) -> tuple[float, bool]:
        """log P(continuation | context) and whether greedy decoding would produce it."""
        return self.score_many([(context, continuation)])[0]
