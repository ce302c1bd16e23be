"""One schema for a run: search knobs (SearchConfig) + model options (ModelOptions).

Precedence: dataclass defaults < `config=` YAML (model_configs/NAME.yaml or any path)
< `--model_args key=value` overrides. Every key is checked before any model loads: an
unknown key, a wrong type or an out-of-range value is a one-line ConfigError that names
the key and the fix.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path

from marco_eval.errors import ConfigError, first_line, need
from marco_eval.models import ALIASES
from marco_eval.paths import MODEL_CONFIGS_DIR
from marco_eval.search.config import SearchConfig

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
    answer: str = "number"  # how rollout answers are read for `vote`: number | output | none
    # A rollout's reward: "confidence" (Marco-o1's token confidence) or the folder of a
    # verifier checkpoint (`marco-eval verifier`), whose value of the whole rollout it becomes.
    reward: str = field(default="confidence", metadata={"added_later": True})
    # backend=vllm only (the transformers backend scales out with `accelerate launch -m lm_eval`):
    tensor_parallel_size: int = 1  # GPUs per vLLM engine
    data_parallel_size: int = 1  # engines, one persistent worker process each; problems split by whole trees
    gpu_memory_utilization: float = 0.9  # share of each GPU vLLM may take for weights + KV cache
    max_model_len: int | None = None  # context (and KV cache) cap for vLLM; default: the model's
    # More arguments for vLLM's engine (LLM(...)), e.g. {enforce_eager: true, max_num_seqs: 16};
    # in model_args one key each: vllm_args.enforce_eager=true. Checked against vLLM's EngineArgs.
    vllm_args: dict = field(default_factory=dict, metadata={"added_later": True})


DTYPES = ("auto", "float32", "bfloat16", "float16")
# Options that only say where outputs go: they never change an answer (store.fingerprint).
OUTPUT_ONLY = ("tree_dir", "store")

# lm-eval's CLI passes these to every model; we accept and map or ignore them.
LM_EVAL_PASSTHROUGH = {"batch_size", "max_batch_size"}
VLLM_ARGS_PREFIX = "vllm_args."  # model_args key vllm_args.NAME=VALUE -> vllm_args[NAME]
# Engine arguments marco-eval sets itself: from their own options, or fixed because the
# search depends on them (token-id prompts, shared prefixes, raw log-probs).
VLLM_OWN_ARGS = {"model": "pretrained", "revision": "revision", "trust_remote_code": "trust_remote_code",
                 "dtype": "dtype", "tensor_parallel_size": "tensor_parallel_size",
                 "gpu_memory_utilization": "gpu_memory_utilization", "max_model_len": "max_model_len",
                 "enable_prefix_caching": None, "logprobs_mode": None}


def known_keys() -> list[str]:
    return [f.name for f in fields(SearchConfig)] + [f.name for f in fields(ModelOptions)]


def coerce(key: str, value, typ, *, lenient: bool = False) -> object:
    """Values from model_args arrive as strings or numbers; YAML gives native types.

    Handles bool, int, float, str, list, dict, Literal and unions of them (Optional too).
    A type it does not know is an error, or with `lenient` (vLLM's engine arguments, whose
    types include vLLM's own config classes) the value unchanged, for vLLM to judge."""
    origin = typing.get_origin(typ)
    args = typing.get_args(typ)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        members = [a for a in args if a is not type(None)]
        if len(members) > 1:  # the member the value already is first, then the others in order
            members.sort(key=lambda a: not (isinstance(a, type) and type(value) is a))
            for member in members:
                try:
                    return coerce(key, value, member, lenient=lenient)
                except ConfigError:
                    continue
            raise ConfigError(f"{key}={value!r}: expected {type_name(typ)}")
        typ = members[0]
        origin, args = typing.get_origin(typ), typing.get_args(typ)
    if origin is typing.Literal:
        for option in args:
            if value == option or (isinstance(value, (str, int, float, bool)) and str(value) == str(option)):
                return option
    elif typ is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "1", "yes"):
            return True
        if str(value).lower() in ("false", "0", "no"):
            return False
    elif typ is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif typ is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        try:
            return float(value)
        except (TypeError, ValueError):
            pass
    elif typ is str:
        return str(value)
    elif origin is list:
        item = args[0] if args else str
        if isinstance(value, (list, tuple)):
            return [coerce(key, v, item, lenient=lenient) for v in value]
        if isinstance(value, str):
            return [coerce(key, value, item, lenient=lenient)]
    elif typ is dict or origin is dict:
        if isinstance(value, dict) and all(isinstance(k, str) for k in value):
            return dict(value)
    elif lenient:
        return value
    raise ConfigError(f"{key}={value!r}: expected {type_name(typ)}")


def type_name(typ) -> str:
    """A type as an error message names it: int, int or None, one of 'auto' or 'slow'."""
    if typing.get_origin(typ) is typing.Literal:
        return "one of " + ", ".join(map(repr, typing.get_args(typ)))
    if typing.get_origin(typ) in (typing.Union, types.UnionType):
        return " or ".join("None" if a is type(None) else type_name(a) for a in typing.get_args(typ))
    return getattr(typ, "__name__", str(typ))


def _parse_scalar(value):
    """A model_args value as YAML reads it: true -> True, 16 -> 16, 0.5 -> 0.5, else text."""
    if not isinstance(value, str):
        return value
    import yaml

    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        return value
    return parsed if isinstance(parsed, (bool, int, float, str)) or parsed is None else value


def _field_types(cls) -> dict[str, object]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls)}


def check_keys(keys, where: str) -> None:
    known = set(known_keys()) | LM_EVAL_PASSTHROUGH | {"config"}
    for key in keys:
        if key.startswith(VLLM_ARGS_PREFIX) and len(key) > len(VLLM_ARGS_PREFIX):
            continue  # one vLLM engine argument; vLLM's own names are checked when the engine is built
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(f"unknown key {key!r} in {where}; {hint}every key is in the README's "
                              "`--model_args` section (search knobs and model options)")


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


def load_yaml(path: Path) -> dict:
    from omegaconf import OmegaConf

    try:
        data = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except Exception as e:
        raise ConfigError(f"config file {path} is not valid YAML ({first_line(e)}); fix the file") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must be a mapping of key: value, not {type(data).__name__}")
    check_keys(data, f"config file {path}")
    return data


def build(config: str | None = None, **overrides) -> tuple[SearchConfig, ModelOptions]:
    """Defaults < YAML < overrides, validated. Returns (search config, model options)."""
    check_keys(overrides, "model_args")
    values: dict = {}
    if config:
        values.update(load_yaml(resolve_config_path(config)))
    values.update({k: v for k, v in overrides.items() if k not in LM_EVAL_PASSTHROUGH and k != "config"
                   and not k.startswith(VLLM_ARGS_PREFIX)})
    engine_args = {k[len(VLLM_ARGS_PREFIX):]: _parse_scalar(v) for k, v in overrides.items()
                   if k.startswith(VLLM_ARGS_PREFIX)}
    if engine_args:
        values["vllm_args"] = {**(values.get("vllm_args") or {}), **engine_args}
    out = []
    for cls in (SearchConfig, ModelOptions):
        types = _field_types(cls)
        kwargs = {k: coerce(k, v, types[k]) for k, v in values.items() if k in types}
        try:
            out.append(cls(**kwargs))
        except ValueError as e:
            raise ConfigError(str(e)) from None
    search, options = out
    validate_options(options)
    if options.token_cap is None and options.pretrained in ALIASES:
        options.token_cap = ALIASES[options.pretrained].token_cap
    return search, options


def validate_options(o: ModelOptions) -> None:
    need(o.backend in ("hf", "vllm"), f"backend={o.backend!r}: use hf (transformers) or vllm")
    validate_scale_out(o)
    need(o.max_batch > 0, f"max_batch={o.max_batch}: must be a positive integer")
    need(o.tree_batch > 0, f"tree_batch={o.tree_batch}: must be a positive integer")
    need(o.max_gen_toks > 0, f"max_gen_toks={o.max_gen_toks}: must be a positive integer")
    need(o.token_cap is None or o.token_cap > 0, f"token_cap={o.token_cap}: must be a positive integer (or unset)")
    need(o.kv_cache_mb >= 0, f"kv_cache_mb={o.kv_cache_mb}: must be >= 0 (0 keeps nothing between calls)")
    need(o.dtype in DTYPES, f"dtype={o.dtype!r}: use one of {', '.join(DTYPES)}")
    need(o.store != "", "store=: give a file path for the request store (e.g. store=results/run.jsonl)")
    need(o.chat_template in ("auto", "on", "off"), f"chat_template={o.chat_template!r}: use auto, on or off")
    need(o.answer in ("number", "output", "none"), f"answer={o.answer!r}: use number, output or none")
    need(o.reward == "confidence" or o.backend == "hf",
         f"reward={o.reward}: a verifier reward runs on the transformers backend; drop backend=vllm")


VLLM_ONLY = ("tensor_parallel_size", "data_parallel_size", "gpu_memory_utilization", "max_model_len", "vllm_args")


def validate_scale_out(o: ModelOptions) -> None:
    defaults = ModelOptions()
    for key in VLLM_ONLY:
        if o.backend != "vllm" and getattr(o, key) != getattr(defaults, key):
            raise ConfigError(f"{key}={getattr(o, key)} applies to backend=vllm; add backend=vllm, or for the "
                              "transformers backend run one process per GPU with `accelerate launch -m lm_eval ...`")
    for key in ("tensor_parallel_size", "data_parallel_size"):
        if getattr(o, key) < 1:
            raise ConfigError(f"{key}={getattr(o, key)}: must be a positive integer")
    if not 0 < o.gpu_memory_utilization <= 1:
        raise ConfigError(f"gpu_memory_utilization={o.gpu_memory_utilization}: must be in (0, 1], e.g. 0.9")
    if o.max_model_len is not None and o.max_model_len < 2:
        raise ConfigError(f"max_model_len={o.max_model_len}: must be a positive number of tokens (or unset)")
    for name in o.vllm_args:
        if name in VLLM_OWN_ARGS:
            own = VLLM_OWN_ARGS[name]
            raise ConfigError(f"vllm_args.{name}: " + (f"set it with its own option, {own}=..." if own else
                              "marco-eval sets it itself (the search depends on it); leave it out"))


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
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        if f.metadata.get("added_later") and values[f.name] == default:
            del values[f.name]
    return {k: v for k, v in values.items() if k not in OUTPUT_ONLY}
