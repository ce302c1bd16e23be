"""One schema for a run: search knobs (SearchConfig) + model options (ModelOptions).

Precedence: dataclass defaults < `config=` YAML (model_configs/NAME.yaml or any path)
< `--model_args key=value` overrides, merged by structured.merge like every other
settings file. Every key is checked before any model loads: an unknown key, a wrong type
or an out-of-range value is a one-line ConfigError that names the key and the fix.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field, fields
from pathlib import Path

from marco_eval.errors import ConfigError, InputError, need
from marco_eval.models import ALIASES
from marco_eval.paths import MODEL_CONFIGS_DIR
from marco_eval.readers import KINDS
from marco_eval.search.config import SearchConfig
from marco_eval.structured import Layer, field_default, merge, read_yaml

DEFAULT_SYSTEM_PROMPT = (
    "You are a careful problem solver. First think the problem through inside <Thought> and "
    "</Thought>, one reasoning step per paragraph, with a blank line between steps. Then write "
    "the final result inside <Output> and </Output>. Think mostly in English; write the Output "
    "in the language of the question."
)


@dataclass
class ModelOptions:
    pretrained: str = "qwen2.5-coder-0.5b"  # alias, local path or Hugging Face id
    backend: str = "hf"  # "hf" (transformers, CPU or GPU) or "vllm" (GPU; pip install 'marco-eval[vllm]')
    dtype: str = "auto"  # auto = bfloat16 where the CPU/GPU supports it, else float32
    device: str = "auto"  # auto: the first CUDA GPU when there is one, else the CPU
    revision: str | None = None
    trust_remote_code: bool = False
    max_batch: int = 16  # rows per forward pass in the backend
    kv_reuse: bool = True  # share the KV cache across the tree (off = naive recompute)
    kv_cache_mb: int = 2048  # cap on cached keys/values; least-recently-used entries are evicted
    tree_batch: int = 16  # problems searched at once; more than max_batch/children keeps the batch full
    max_gen_toks: int = 1024  # per-request token budget when the task gives none
    # A cap on every request's budget, the task's included; unset: the model alias's own
    # (smollm2-135m, which never stops on its own, 256 tokens), else none.
    token_cap: int | None = field(default=None, metadata={"added_later": True})
    chat_template: str = "auto"  # auto: wrap raw prompts in the tokenizer's chat template
    system_prompt: str = DEFAULT_SYSTEM_PROMPT  # "" for none
    response_prefix: str = ""  # text forced at the start of the assistant turn, e.g. "<Thought>\n"
    tree_dir: str | None = None  # write one JSON tree per request here
    store: str | None = None  # JSONL of finished requests: a rerun after a kill skips them (store.py)
    # How rollout answers are read (votes, candidates, the trace): auto (from lm-eval's task
    # name, readers.TASK_KINDS) | number | math | choice | output | none (readers.py).
    answer: str = "auto"
    # lm-eval's thinking conventions, with the meaning of its hf and vllm models: the text
    # returned is what follows the last think_end_token (a string, or a token id); a trace
    # that never closes is returned whole. enable_thinking and chat_template_args go to the
    # chat template; enable_thinking=true needs think_end_token.
    think_end_token: str | None = field(default=None, metadata={"added_later": True})
    enable_thinking: bool | None = field(default=None, metadata={"added_later": True})
    chat_template_args: dict = field(default_factory=dict, metadata={"added_later": True})
    # A rollout's reward: "confidence" (Marco-o1's token confidence) or the folder of a
    # verifier checkpoint (`marco-eval verifier`), whose value of the whole rollout it becomes.
    reward: str = field(default="confidence", metadata={"added_later": True})
    # The verifier's precision; auto: the policy's (on the transformers backend its value then
    # comes off the policy's own forward). float32 beside a bf16 policy loads it apart: bf16
    # values lay 0.4 log-odds from fp32 ones on average and picked worse (results/verifier).
    verifier_dtype: str = field(default="auto", metadata={"added_later": True})
    # backend=vllm only (the transformers backend scales out with `accelerate launch -m lm_eval`):
    tensor_parallel_size: int = 1  # GPUs per vLLM engine
    data_parallel_size: int = 1  # engines, one persistent worker process each; problems split by whole trees
    gpu_memory_utilization: float = 0.9  # share of each GPU vLLM may take for weights + KV cache
    max_model_len: int | None = None  # context (and KV cache) cap for vLLM; default: the model's
    # More arguments for vLLM's engine (LLM(...)), e.g. {enforce_eager: true, max_num_seqs: 16};
    # in model_args one key each: vllm_args.enforce_eager=true. Checked against vLLM's EngineArgs.
    vllm_args: dict = field(default_factory=dict, metadata={"added_later": True})

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError naming the option and the fix."""
        need(self.backend in ("hf", "vllm"), f"backend={self.backend!r}: use hf (transformers) or vllm")
        self._validate_scale_out()
        need(self.max_batch > 0, f"max_batch={self.max_batch}: must be a positive integer")
        need(self.tree_batch > 0, f"tree_batch={self.tree_batch}: must be a positive integer")
        need(self.max_gen_toks > 0, f"max_gen_toks={self.max_gen_toks}: must be a positive integer")
        need(self.token_cap is None or self.token_cap > 0,
             f"token_cap={self.token_cap}: must be a positive integer (or unset)")
        need(self.kv_cache_mb >= 0, f"kv_cache_mb={self.kv_cache_mb}: must be >= 0 (0 keeps nothing between calls)")
        need(self.dtype in DTYPES, f"dtype={self.dtype!r}: use one of {', '.join(DTYPES)}")
        need(self.verifier_dtype in DTYPES, f"verifier_dtype={self.verifier_dtype!r}: use one of {', '.join(DTYPES)}")
        need(self.verifier_dtype == "auto" or self.reward != "confidence",
             f"verifier_dtype={self.verifier_dtype} applies to a verifier; add reward=PATH (a verifier checkpoint) "
             "or leave verifier_dtype out")
        need(self.store != "", "store=: give a file path for the request store (e.g. store=results/run.jsonl)")
        need(self.chat_template in ("auto", "on", "off"), f"chat_template={self.chat_template!r}: use auto, on or off")
        need(self.answer in KINDS, f"answer={self.answer!r}: use one of {', '.join(KINDS)} (auto: from the task)")
        need(self.think_end_token != "", "think_end_token=: give the text (e.g. </think>) or token id that ends "
             "the thinking, or leave it out")
        need(not self.enable_thinking or self.think_end_token is not None,
             "enable_thinking=true needs think_end_token (e.g. think_end_token=</think>), as lm-eval's models do")

    def _validate_scale_out(self) -> None:
        defaults = {f.name: field_default(f) for f in fields(ModelOptions)}
        for key in VLLM_ONLY:
            need(self.backend == "vllm" or getattr(self, key) == defaults[key],
                 f"{key}={getattr(self, key)} applies to backend=vllm; add backend=vllm, or for the transformers "
                 "backend run one process per GPU with `accelerate launch -m lm_eval ...`")
        for key in ("tensor_parallel_size", "data_parallel_size"):
            need(getattr(self, key) >= 1, f"{key}={getattr(self, key)}: must be a positive integer")
        need(0 < self.gpu_memory_utilization <= 1,
             f"gpu_memory_utilization={self.gpu_memory_utilization}: must be in (0, 1], e.g. 0.9")
        need(self.max_model_len is None or self.max_model_len >= 2,
             f"max_model_len={self.max_model_len}: must be a positive number of tokens (or unset)")
        for name in self.vllm_args:
            if name in VLLM_OWN_ARGS:
                own = VLLM_OWN_ARGS[name]
                raise ConfigError(f"vllm_args.{name}: " + (f"set it with its own option, {own}=..." if own else
                                  "marco-eval sets it itself (the search depends on it); leave it out"))


DTYPES = ("auto", "float32", "bfloat16", "float16")


def verifier_dtype_for(requested: str, policy_dtype: str) -> str:
    """The precision a verifier values in: `requested` (one of DTYPES), or for "auto" the
    policy's own `policy_dtype` ("bfloat16", no "torch." prefix): only in the policy's
    precision can a verifier share the policy's body and keys/values."""
    return policy_dtype if requested == "auto" else requested


# Options that only say where outputs go: they never change an answer (store.fingerprint).
OUTPUT_ONLY = ("tree_dir", "store")

# lm-eval's CLI passes these to every model; we accept and map or ignore them.
LM_EVAL_PASSTHROUGH = {"batch_size", "max_batch_size"}
# Engine arguments marco-eval sets itself: from their own options, or fixed because the
# search depends on them (token-id prompts, shared prefixes, raw log-probs).
VLLM_OWN_ARGS = {"model": "pretrained", "revision": "revision", "trust_remote_code": "trust_remote_code",
                 "dtype": "dtype", "tensor_parallel_size": "tensor_parallel_size",
                 "gpu_memory_utilization": "gpu_memory_utilization", "max_model_len": "max_model_len",
                 "enable_prefix_caching": None, "logprobs_mode": None}
VLLM_ONLY = ("tensor_parallel_size", "data_parallel_size", "gpu_memory_utilization", "max_model_len", "vllm_args")
KEYS_DOC = "every key is in the README's `--model_args` section (search knobs and model options)"


def known_keys() -> list[str]:
    return [f.name for f in fields(SearchConfig)] + [f.name for f in fields(ModelOptions)]


def resolve_config_path(name: str) -> Path:
    """`config=` takes a path, or a name in model_configs/ (with or without .yaml)."""
    path = Path(name).expanduser()
    for candidate in (path, MODEL_CONFIGS_DIR / name, MODEL_CONFIGS_DIR / f"{name}.yaml"):
        if candidate.is_file():
            return candidate
    names = sorted(p.stem for p in MODEL_CONFIGS_DIR.glob("*.yaml"))
    close = difflib.get_close_matches(Path(name).stem, names, n=2)
    hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
    raise ConfigError(f"config {name!r} not found; {hint}give a YAML path or one of: {', '.join(names)}")


def build(config: str | None = None, **overrides) -> tuple[SearchConfig, ModelOptions]:
    """Defaults < `config` YAML < overrides (model_args), merged and validated.

    Args:
        config: a name in model_configs/ or a YAML path, or None.
        overrides: model_args as lm-eval parsed them (text, numbers, bools) or Python values;
            lm-eval's own batch_size and max_batch_size are ignored.
    Returns:
        (search config, model options); token_cap unset takes the model alias's.
    """
    layers = []
    if config:
        path = resolve_config_path(config)
        layers.append(Layer(f"config file {path}", read_yaml(path, "config file")))
    layers.append(Layer("model_args", {k: v for k, v in overrides.items() if k not in LM_EVAL_PASSTHROUGH}, text=True))
    search, options = merge((SearchConfig, ModelOptions), layers, keys_doc=KEYS_DOC)
    if options.token_cap is None and options.pretrained in ALIASES:
        options.token_cap = ALIASES[options.pretrained].token_cap
    return search, options


def parse_overrides(pairs: list[str]) -> dict[str, str]:
    """`--set KEY=VALUE` pairs (the CLI's commands that build an engine) as model_args for build()."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--set {pair!r}: write key=value, e.g. --set simulations=4")
        out[key.strip()] = value
    return out


def as_dict(search: SearchConfig, options: ModelOptions) -> dict:
    return {**dataclasses.asdict(search), **dataclasses.asdict(options)}


def answer_settings(search: SearchConfig, options: ModelOptions) -> dict:
    """The settings that can change an answer, for the request store's fingerprint.

    Options that only say where outputs go are left out. So is every field added after
    stores were first written (field metadata `added_later`) while it keeps its default:
    a store written before the field existed then still matches, and setting the field
    away from its default still makes a new fingerprint."""
    values = as_dict(search, options)
    for f in (*fields(SearchConfig), *fields(ModelOptions)):
        if f.metadata.get("added_later") and values[f.name] == field_default(f):
            del values[f.name]
    return {k: v for k, v in values.items() if k not in OUTPUT_ONLY}
