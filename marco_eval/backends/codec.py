"""The tokenizer half of a Policy, shared by every backend (and by the parent process of a
data-parallel run, which tokenises prompts but holds no engine).

Needs `self.tokenizer` (a Hugging Face tokenizer) and `self.max_length` (the context size).
"""

from __future__ import annotations

from typing import Sequence

from marco_eval.errors import InputError


class TokenizerCodec:
    tokenizer = None
    max_length: int = 2048
    commit_hash: str | None = None  # the hub commit of the weights, where the backend knows it

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def decode(self, token_ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(token_ids), skip_special_tokens=True)

    def check_length(self, n_prefix: int) -> None:
        if n_prefix >= self.max_length:
            raise InputError(
                f"a prompt of {n_prefix} tokens does not fit the model's context of {self.max_length}; "
                "shorten the prompt (fewer few-shot examples) or use a longer-context model"
            )


def pad_token_id(tokenizer, eos_ids=()) -> int:
    """Padding, and the token that stands for an empty context: pad, else end-of-text."""
    if tokenizer.pad_token_id is not None:
        return tokenizer.pad_token_id
    eos = [*eos_ids, *([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])]
    return min(eos) if eos else 0


def load_tokenizer(pretrained: str, revision: str | None = None, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(pretrained, revision=revision, trust_remote_code=trust_remote_code)
