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
from typing import Sequence

import torch

from marco_eval.backends.kvtree import KVTree
from marco_eval.search.policy import Continue, Generation

TOP_K = 5


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


class TransformersPolicy:
    def __init__(self, pretrained: str, *, dtype: str = "auto", device: str = "cpu", max_batch: int = 16,
                 revision: str | None = None, trust_remote_code: bool = False, kv_reuse: bool = True,
                 kv_cache_mb: int = 2048):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if device.startswith("cuda") and not torch.cuda.is_available():
            # lm-eval's CLI passes --device cuda by default; like its hf model, fall back.
            print(f"marco-eval: device={device} requested but CUDA is not available; using cpu")
            device = "cpu"
        self.device = device
        self.dtype = pick_dtype(dtype, device)
        self.max_batch = max_batch
        self.tokenizer = AutoTokenizer.from_pretrained(pretrained, revision=revision, trust_remote_code=trust_remote_code)
        self.model = AutoModelForCausalLM.from_pretrained(
            pretrained, revision=revision, dtype=self.dtype, trust_remote_code=trust_remote_code
        ).to(device).eval()
        self.name = pretrained
        eos = self.model.generation_config.eos_token_id
        eos = eos if isinstance(eos, list) else [eos] if eos is not None else []
        if self.tokenizer.eos_token_id is not None:
            eos.append(self.tokenizer.eos_token_id)
        self.eos_ids = frozenset(eos)
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (min(self.eos_ids) if self.eos_ids else 0)
        self.max_length = int(getattr(self.model.config, "max_position_embeddings", 0) or 2048)
        # transformers 5 renames forward's `past_key_values` to `cache`; accept both.
        params = inspect.signature(self.model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self.forwarded_tokens = 0  # every position the model processed, padding included
        self.kv_reuse = kv_reuse  # off = naive recompute: every request re-reads its prefix
        self.kv = KVTree(max_bytes=kv_cache_mb * 2**20)

    # ------------------------------------------------------------------ tokenizer
    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def decode(self, token_ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(token_ids), skip_special_tokens=True)

    # ------------------------------------------------------------------ model calls
    def _forward(self, input_ids, attention_mask, position_ids, cache, logits_to_keep=1):
        self.forwarded_tokens += input_ids.numel()
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         use_cache=True, logits_to_keep=logits_to_keep, **{self._cache_kw: cache})
        return out.logits

    def check_length(self, n_prefix: int) -> None:
        if n_prefix >= self.max_length:
            raise ValueError(
                f"a prompt of {n_prefix} tokens does not fit the model's context of {self.max_length}; "
                "shorten the prompt (fewer few-shot examples) or use a longer-context model"
            )

    @torch.inference_mode()
    def generate(self, requests: Sequence[Continue]) -> list[Generation]:
        out: list[Generation] = []
        for i in range(0, len(requests), self.max_batch):
            out += self._generate_batch(list(requests[i: i + self.max_batch]))
        return out

    def _prefix_cache(self, prefix: tuple[int, ...]):
        """(KVTree entry or None, keys/values of prefix[:-1]): reused from the tree as far
        as it is cached, the rest forwarded now (one row, no padding)."""
        from transformers import DynamicCache

        base = self.kv.lookup(prefix) if self.kv_reuse else None
        kv = self.kv.materialize(base)
        done = base.length if base is not None else 0
        new = prefix[done: len(prefix) - 1]
        if not new:
            return base, kv if kv is not None else self._empty_kv()
        cache = DynamicCache(ddp_cache_data=kv) if kv is not None else DynamicCache()
        ids = torch.tensor([new], device=self.device)
        pos = torch.arange(done, done + len(new), device=self.device).unsqueeze(0)
        self._forward(ids, torch.ones((1, done + len(new)), dtype=torch.long, device=self.device), pos, cache)
        kv = [(layer.keys, layer.values) for layer in cache.layers]
        if not self.kv_reuse:
            return None, kv
        segment = [(k[:, :, done:].clone(), v[:, :, done:].clone()) for k, v in kv]
        return self.kv.insert(prefix, base, segment), kv

    def _empty_kv(self):
        cfg = self.model.config.get_text_config()
        heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        empty = torch.zeros((1, heads, 0, dim), dtype=self.dtype, device=self.device)
        return [(empty, empty) for _ in range(cfg.num_hidden_layers)]

    def _generate_batch(self, reqs: list[Continue]) -> list[Generation]:
        from transformers import DynamicCache

        for r in reqs:
            self.check_length(len(r.prefix))
        # 1. The cache of each row's prefix[:-1]: siblings with one prefix share one copy.
        caches: dict[tuple[int, ...], tuple] = {}
        rows_kv = []
        for r in reqs:
            if r.prefix not in caches or not self.kv_reuse:
                caches[r.prefix] = self._prefix_cache(r.prefix)
            rows_kv.append(caches[r.prefix])
        # 2. One batch: caches left-padded to a common length; the first step feeds each
        #    prefix's last token, whose logits give the first new token.
        B = len(reqs)
        T = max(len(r.prefix) - 1 for r in reqs)
        layers = []
        for li in range(len(rows_kv[0][1])):
            k0 = rows_kv[0][1][li][0]
            keys = torch.zeros((B, k0.shape[1], T, k0.shape[3]), dtype=k0.dtype, device=self.device)
            values = torch.zeros_like(keys)
            for b, (_, kv) in enumerate(rows_kv):
                n = kv[li][0].shape[2]
                if n:
                    keys[b, :, T - n:] = kv[li][0][0]
                    values[b, :, T - n:] = kv[li][1][0]
            layers.append((keys, values))
        mask = torch.zeros((B, T + 1), dtype=torch.long, device=self.device)
        for b, r in enumerate(reqs):
            mask[b, T - (len(r.prefix) - 1):] = 1
        cache = DynamicCache(ddp_cache_data=layers)
        del layers, caches
        step_ids = torch.tensor([[r.prefix[-1]] for r in reqs], device=self.device)
        next_pos = torch.tensor([len(r.prefix) - 1 for r in reqs], device=self.device)
        logits = self._forward(step_ids, mask, next_pos.unsqueeze(-1), cache)[:, -1]

        gens = [Generation([], [], [], finish="length") for _ in reqs]
        rngs = [torch.Generator().manual_seed(r.seed) for r in reqs]
        rows = list(range(B))  # request index of each live batch row
        max_new = [min(r.max_new_tokens, self.max_length - len(r.prefix)) for r in reqs]
        stop_window = [max((len(s) for s in r.stop), default=0) + 2 for r in reqs]
        while rows:
            logp = torch.log_softmax(logits.float(), dim=-1)
            top5 = logp.topk(TOP_K, dim=-1).values.tolist()
            chosen = [self._sample(logits[b], logp[b], reqs[i], rngs[i]) for b, i in enumerate(rows)]
            chosen_lp = logp[torch.arange(len(rows)), torch.tensor(chosen)].tolist()
            keep = []
            for b, i in enumerate(rows):
                g = gens[i]
                g.token_ids.append(chosen[b])
                g.logprobs.append(chosen_lp[b])
                g.top_logprobs.append(top5[b])
                if chosen[b] in self.eos_ids:
                    g.finish = "eos"
                elif reqs[i].stop and (hit := next((s for s in reqs[i].stop
                                                    if s in self.decode(g.token_ids[-stop_window[i]:])), None)):
                    g.finish, g.stop = "stop", hit
                elif len(g.token_ids) < max_new[i]:
                    keep.append(b)
                    continue
                self._keep_finished(reqs[i], g, rows_kv[i][0], cache, b)
            if not keep:
                break
            if len(keep) < len(rows):  # drop finished rows from the batch and the cache
                sel = torch.tensor(keep, device=self.device)
                cache.batch_select_indices(sel)
                mask, next_pos = mask[sel], next_pos[sel]
                chosen = [chosen[b] for b in keep]
                rows = [rows[b] for b in keep]
            step_ids = torch.tensor(chosen, device=self.device).unsqueeze(-1)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=-1)
            next_pos = next_pos + 1
            logits = self._forward(step_ids, mask, next_pos.unsqueeze(-1), cache)[:, -1]
        if self.kv_reuse:
            self.kv.evict_to_cap()
        return gens

    def _keep_finished(self, req: Continue, gen: Generation, parent, cache, row: int) -> None:
        """Cache prefix + generated (its KV for all but the last token is in the batch now)
        so that expanding or rolling out from it later forwards only new tokens."""
        if not (self.kv_reuse and req.keep_cache) or gen.finish == "eos":
            return
        n = len(gen.token_ids)  # the row's last n positions: prefix[-1] and generated[:-1]
        segment = [(layer.keys[row: row + 1, :, -n:].clone(), layer.values[row: row + 1, :, -n:].clone())
                   for layer in cache.layers]
        self.kv.insert(tuple(req.prefix) + tuple(gen.token_ids), parent, segment)

    @staticmethod
    def _sample(logits: torch.Tensor, logp: torch.Tensor, req: Continue, rng: torch.Generator) -> int:
        if req.temperature == 0:
            return int(torch.argmax(logp))
        probs = torch.softmax(logits.float() / req.temperature, dim=-1)
        if req.top_p < 1.0:
            sorted_p, order = probs.sort(descending=True)
            drop = sorted_p.cumsum(-1) - sorted_p > req.top_p  # keep the smallest set reaching top_p
            sorted_p[drop] = 0.0
            probs = torch.zeros_like(probs).scatter_(0, order, sorted_p)
        return int(torch.multinomial(probs.cpu(), 1, generator=rng))

    # ------------------------------------------------------------------ scoring (loglikelihood)
    @torch.inference_mode()
    def score(self, context: list[int], continuation: list[int]) -> tuple[float, bool]:
        """log P(continuation | context) and whether greedy decoding would produce it."""
        seq = (context + continuation)[-self.max_length:]
        n_cont = len(continuation)
        ids = torch.tensor([seq], device=self.device)
        self.forwarded_tokens += ids.numel()
        logits = self.model(input_ids=ids).logits[0, -n_cont - 1: -1].float()
        logp = torch.log_softmax(logits, dim=-1)
        target = torch.tensor(seq[-n_cont:], device=self.device)
        total = float(logp.gather(-1, target.unsqueeze(-1)).sum())
        greedy = bool((logp.argmax(-1) == target).all())
        return total, greedy
