"""Every use of transformers' cache internals, in one place, with the contract they keep.

The transformers backend hands a model caches of its own making, so it depends on parts of
`transformers.cache_utils` that are not a stable API (they changed between 4.57 and 5.x):

- `Cache(layers=[...])`, a cache built from the layers given;
- `DynamicLayer`, subclassed by `BatchLayer`, whose keys/values are views of a `BatchKV`
  (kvtree.py), written in place: the model calls `update(key_states, value_states, ...)`,
  `get_seq_length()` and `get_mask_sizes(query_length)` and reads `keys`, `values` and
  `is_initialized`;
- `DynamicCache(ddp_cache_data=[(keys, values), ...])`, a one-row cache filled with a
  prefix's keys/values, whose `layers[i].keys` / `.values` hold them after a forward;
- the forward's keyword for the cache (`past_key_values`; `cache` in some model code).

`check_internals` checks those signatures and attributes once, before a model loads, and
fails in one line on a transformers whose internals differ; TESTED is the range the test
suite ran on (pyproject.toml pins it). `check_attention` refuses models whose layers do
not all attend to every earlier position (sliding-window, chunked or hybrid attention):
the batch cache hands every layer the whole window, so their masks would be wrong.
"""

from __future__ import annotations

import functools
import inspect

from marco_eval.backends.kvtree import KV, BatchKV
from marco_eval.errors import ConfigError, IncompatibleDependency

TESTED = ">=5.16.1,<5.26"  # the transformers the tests ran on: 5.16-5.19 (.venv-vllm), 5.25 (.venv)


def _params(function) -> list[str]:
    return list(inspect.signature(function).parameters)


@functools.cache
def check_internals() -> None:
    """Raise IncompatibleDependency (one line) unless the installed transformers has the
    cache internals this module relies on (module docstring)."""
    import transformers
    from transformers import DynamicCache
    from transformers.cache_utils import Cache, DynamicLayer

    layer = DynamicLayer()
    found = {
        "Cache(layers=...)": "layers" in _params(Cache.__init__),
        "DynamicCache(ddp_cache_data=...)": "ddp_cache_data" in _params(DynamicCache.__init__),
        "DynamicLayer()'s is_initialized": hasattr(layer, "is_initialized"),
        "DynamicLayer.update(key_states, value_states, ...)":
            _params(DynamicLayer.update)[:3] == ["self", "key_states", "value_states"],
        "DynamicLayer.get_seq_length()": _params(DynamicLayer.get_seq_length) == ["self"],
        "DynamicLayer.get_mask_sizes(query_length)": _params(DynamicLayer.get_mask_sizes) == ["self", "query_length"],
    }
    if missing := [name for name, ok in found.items() if not ok]:
        raise IncompatibleDependency(
            f"transformers {transformers.__version__} has other cache internals than the transformers backend "
            f"was made for (not as expected: {'; '.join(missing)}); install transformers{TESTED}")


def check_attention(config, name: str) -> None:
    """Raise ConfigError (one line) unless every layer of the model `name` (its config)
    attends to every earlier position, as the batch cache's mask assumes.

    Args:
        config: the model's config (its text config is read).
        name: how the error names the model (pretrained=...).
    """
    cfg = config.get_text_config()
    kinds = set(getattr(cfg, "layer_types", None) or ())
    if not kinds:  # no per-layer list: transformers infers one from these fields
        kinds = {"sliding_attention" if getattr(cfg, "sliding_window", None) is not None else
                 "chunked_attention" if getattr(cfg, "attention_chunk_size", None) is not None else "full_attention"}
    if other := sorted(kinds - {"full_attention"}):
        raise ConfigError(f"pretrained={name}: its layers use {', '.join(other)}, which the transformers backend's "
                          f"batch cache cannot mask; use backend=vllm, or a model with full attention only")


def cache_keyword(model) -> str:
    """The name under which the model's forward takes its cache."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def batch_cache(kv: BatchKV):
    """A transformers Cache whose layers keep their keys/values in `kv`, written in place."""
    from transformers.cache_utils import Cache

    return Cache(layers=[batch_layer_class()(kv, i) for i in range(kv.n_layers)])


def prefill_cache(kv: KV | None):
    """A one-row DynamicCache holding a prefix's keys/values (None: empty), for a forward
    that extends it."""
    from transformers import DynamicCache

    return DynamicCache(ddp_cache_data=kv) if kv is not None else DynamicCache()


def cache_kv(cache) -> KV:
    """The keys/values a DynamicCache holds, per layer [1, kv_heads, positions, head_dim]."""
    return [(layer.keys, layer.values) for layer in cache.layers]


@functools.cache
def batch_layer_class():
    """A transformers cache layer whose keys/values live in a BatchKV (written in place)."""
    from transformers.cache_utils import DynamicLayer

    class BatchLayer(DynamicLayer):
        def __init__(self, kv: BatchKV, index: int):
            super().__init__()
            self.kv, self.index, self.is_initialized = kv, index, True

        # the window as it stands (views, never held: a relayout can free the old buffers)
        keys = property(lambda self: self.kv.keys[self.index][:self.kv.rows, :, self.kv.start:self.kv.end],
                        lambda self, value: None)
        values = property(lambda self: self.kv.values[self.index][:self.kv.rows, :, self.kv.start:self.kv.end],
                          lambda self, value: None)

        def update(self, key_states, value_states, *args, **kwargs):
            return self.kv.write(self.index, key_states, value_states)

        def get_seq_length(self) -> int:
            return self.kv.end - self.kv.start

        def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
            return self.kv.end - self.kv.start + query_length, 0

    return BatchLayer
