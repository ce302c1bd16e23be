"""A scripted fake policy: one token per character, continuations chosen by a script.

`script(prefix_text, seed)` returns the text the "model" would write next (the whole rest
of its answer; "\x00" stands for end-of-sequence). The fake then applies the request's
stop strings and token limit exactly as a backend must, and gives every token the
log-probabilities `logprob_fn(prefix_text, seed)` returns.
"""

from __future__ import annotations

import math

from marco_eval.search.policy import Continue, Generation

EOS = 0
TOP5_HIGH = [math.log(0.6), math.log(0.2), math.log(0.1), math.log(0.05), math.log(0.02)]


def default_logprobs(prefix_text: str, seed: int) -> tuple[float, list[float]]:
    return TOP5_HIGH[0], list(TOP5_HIGH)  # the chosen token is the top-1 at p=0.6


class ScriptedPolicy:
    def __init__(self, script, logprob_fn=default_logprobs):
        self.script = script
        self.logprob_fn = logprob_fn
        self.calls: list[list[Continue]] = []
        self.outputs: list[Generation] = []

    def encode(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def decode(self, ids) -> str:
        return "".join(chr(i) for i in ids if i != EOS)

    def generate(self, requests):
        self.calls.append(list(requests))
        out = [self._one(r) for r in requests]
        self.outputs += out
        return out

    def _one(self, r: Continue) -> Generation:
        prefix = self.decode(r.prefix)
        text = self.script(prefix, r.seed)
        ids, lps, top5, finish, stop = [], [], [], "length", None
        for ch in text:
            if len(ids) >= r.max_new_tokens:
                break
            lp, t5 = self.logprob_fn(prefix + self.decode(ids), r.seed)
            ids.append(EOS if ch == "\x00" else ord(ch))
            lps.append(lp)
            top5.append(t5)
            if ch == "\x00":
                finish = "eos"
                break
            hit = next((s for s in r.stop if self.decode(ids).endswith(s)), None)
            if hit:
                finish, stop = "stop", hit
                break
        return Generation(ids, lps, top5, finish, stop)


class StreamingScriptedPolicy(ScriptedPolicy):
    """The same fake behind the continuous-batching interface: `capacity` rows at a time;
    each "step" every row emits one token and rows finish when their text is done, so
    short requests come back (and let their trees move on) before long ones."""

    def __init__(self, script, capacity=3, **kw):
        super().__init__(script, **kw)
        self.capacity = capacity
        self.max_live = 0

    def generate_stream(self, pull, push):
        live = []  # [key, request, finished generation, steps left]
        while True:
            for key, req in pull(self.capacity - len(live)):
                gen = self._one(req)
                self.outputs.append(gen)
                live.append([key, req, gen, max(1, len(gen.token_ids))])
            self.max_live = max(self.max_live, len(live))
            if not live:
                return
            for row in live:
                row[3] -= 1
            for row in [r for r in live if r[3] <= 0]:
                live.remove(row)
                push(row[0], row[2])


class FakeModelPolicy(StreamingScriptedPolicy):
    """The streaming fake with what MarcoMCTSLM asks of a loaded backend (no tokenizer:
    run the LM with chat_template=off)."""

    tokenizer, dtype, name, commit_hash, pad_id = None, "fake", "fake", None, 0

    def __init__(self, script, max_length: int = 4096, **kw):
        super().__init__(script, **kw)
        self.max_length = max_length

    def check_length(self, n_prefix: int) -> None:
        from marco_eval.backends.codec import TokenizerCodec

        TokenizerCodec.check_length(self, n_prefix)


def fake_lm(script=lambda prefix, seed: "Step one.\n\n<Output>3</Output>", max_length: int = 4096, **model_args):
    """A MarcoMCTSLM whose backend is the scripted fake (the model never loads)."""
    from marco_eval.lm import MarcoMCTSLM

    lm = MarcoMCTSLM(**{"pretrained": "test/fake", "chat_template": "off", "simulations": 1, **model_args})
    lm.engine._policy = FakeModelPolicy(script, max_length=max_length)
    return lm
