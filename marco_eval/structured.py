"""Settings from dataclass schemas, the one way every entry point reads them.

Layers, each over the ones before: the schema's defaults < a YAML file < `key=value`
overrides (lm-eval's model_args, `--set`, a training command's arguments). A dotted key
reaches inside a field (`data.0.weight`, `filters.dedup`, `vllm_args.enforce_eager`).
OmegaConf merges the layers and converts every value to its field's type; then each schema
checks its own values in `__post_init__`, which runs when the merged config becomes the
dataclass. Every mistake is a ConfigError of one line that names the key and the fix, and an
unknown key names the closest known one.

Command-line text is read as YAML reads a value (`8` an int, `true` a bool, `[4, 8]` a list),
except by a field that holds text (str, or a list of str), which takes it as written:
`answer_end=` is the empty string. A single value for a list field, on a command line or in
a YAML file, is a list of one (`step_delimiters=###`, `layers=8`): model_args cannot write a
list, its commas separate keys.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence, TypeVar

from marco_eval.errors import ConfigError, first_line

T = TypeVar("T")


@dataclass(frozen=True)
class Layer:
    """One source of values, over those of the layers before it."""

    where: str  # how errors name it: "model_args", "config file x.yaml", "override 'lr=1'"
    values: Mapping[str, Any]  # key (dotted to reach inside a field) -> value
    text: bool = False  # values typed on a command line: read as the module docstring says


def merge(schemas: Sequence[type], layers: Iterable[Layer], *, keys_doc: str) -> tuple:
    """Defaults < each layer in turn, type-checked; then every schema built, and so validated.

    Args:
        schemas: dataclasses whose fields are the allowed top-level keys. Several share one
            flat namespace (model_args takes SearchConfig's and ModelOptions' fields alike).
        layers: lowest first.
        keys_doc: where every key is listed, the end of the unknown-key error.
    Returns:
        One instance per schema, in order.
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import MissingMandatoryValue

    configs = [OmegaConf.structured(schema) for schema in schemas]
    owner = {name: i for i, schema in enumerate(schemas) for name in field_types(schema)}
    every_field = {name: typ for schema in schemas for name, typ in field_types(schema).items()}
    for layer in layers:
        for key, value in layer.values.items():
            try:
                i = owner.get(key.split(".", 1)[0])
                if i is None:
                    _type_at(every_field, key)  # raises _UnknownKey, with the closest field of any schema
                _put(configs[i], field_types(schemas[i]), key, value, layer.text)
            except _UnknownKey as e:
                hint = f"did you mean {e.closest!r}? " if e.closest else ""
                raise ConfigError(f"unknown key {e.key!r} in {layer.where}; {e.note or hint + keys_doc}") from None
            except _BadValue as e:
                raise ConfigError(f"{e.key}={e.value!r}: {e.expected} (from {layer.where})") from None
    out = []
    for cfg in configs:
        try:
            out.append(OmegaConf.to_object(cfg))
        except MissingMandatoryValue as e:
            raise ConfigError(f"{_dotted(e.full_key)} has no value and no default; set it") from None
        except ValueError as e:  # the schema's own check (__post_init__): one line naming the key
            raise ConfigError(first_line(e)) from None
    return tuple(out)


def load_structured(schema: type[T], path: str | None, overrides: Sequence[str] = (), *, what: str,
                    examples: str, example_override: str) -> T:
    """A schema's settings from a YAML file and `key=value` overrides.

    Args:
        schema: a dataclass whose fields (with types and defaults) are every allowed key.
        path: the YAML file, or None for defaults and overrides only.
        overrides: `key=value` strings, command-line text (the module docstring).
        what: how errors name the file ("training config").
        examples: where example files live, for the missing-file error.
        example_override: a `key=value` to show in the malformed-override error.
    Returns:
        The schema instance.
    """
    layers = []
    if path is not None:
        if not Path(path).is_file():
            raise ConfigError(f"{what} {path} does not exist; see {examples} for examples")
        layers.append(Layer(f"{what} {path}", read_yaml(Path(path), what)))
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r}: write key=value, e.g. {example_override}")
        layers.append(Layer(f"override {item!r}", {key: value}, text=True))
    keys_doc = f"the keys are the fields of {schema.__name__} ({schema.__module__}); examples in {examples}"
    (out,) = merge((schema,), layers, keys_doc=keys_doc)
    return out


def read_yaml(path: Path, what: str) -> dict:
    """A YAML file's top-level mapping; `what` names the file in errors ("config file")."""
    from omegaconf import OmegaConf

    try:
        data = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except Exception as e:  # noqa: BLE001 - any parse error is the file's: one line naming it
        raise ConfigError(f"{what} {path} is not valid YAML ({first_line(e)}); fix the file") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {path} must be a mapping of key: value, not {type(data).__name__}")
    return data


class _UnknownKey(Exception):
    """A key no schema has; merge words the error, naming the layer."""

    def __init__(self, key: str, closest: str | None = None, note: str = ""):
        super().__init__(key)
        self.key, self.closest, self.note = key, closest, note


class _BadValue(Exception):
    """A value OmegaConf cannot convert to its field's type; merge words the error."""

    def __init__(self, key: str, value, expected: str):
        super().__init__(key)
        self.key, self.value, self.expected = key, value, expected


def _put(cfg, fields: dict, key: str, value, text: bool) -> None:
    """Merge one value at a dotted key: a mapping into a dataclass field key by key (so every
    key is checked), a list of dataclasses item by item (so an error names the item)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    given, typ = value, _type_at(fields, key, cfg)
    if text and isinstance(value, str) and not _holds_text(typ):
        value = _read_text(value)
    if text and isinstance(value, float) and value.is_integer() and _unwrap(typ) is int:
        value = int(value)  # lm-eval reads "-5" as -5.0: the number the user typed is an int
    item = _list_item(typ)
    if item is not None and isinstance(value, (str, int, float)):  # bool is an int
        value = [value]
    if _schema_fields(typ) is not None and isinstance(value, Mapping):
        for sub, v in value.items():
            _put(cfg, fields, f"{key}.{sub}", v, False)
        return
    if item is not None and _schema_fields(item) is not None and isinstance(value, list):
        OmegaConf.update(cfg, key, [OmegaConf.structured(_unwrap(item)) for _ in value], merge=False)
        for i, v in enumerate(value):
            _put(cfg, fields, f"{key}.{i}", v, False)
        return
    try:
        OmegaConf.update(cfg, key, value, merge=True)
    except OmegaConfBaseException as e:
        path = _dotted(e.full_key) or key  # deeper than `key` when an item of a list is wrong
        try:
            expected = f"expected {type_name(_type_at(fields, path))}"
        except _UnknownKey:
            expected = first_line(e)
        raise _BadValue(path, given if path == key else e.value, expected) from None


def _type_at(fields: dict, key: str, cfg=None):
    """The declared type at a dotted key, from the field types of the top level. Every step
    must exist: a field of a dataclass, an index of a list (below its length in `cfg`, when
    given), any key of a dict; otherwise _UnknownKey, with the closest field."""
    from omegaconf import OmegaConf

    parts = key.split(".")
    typ: Any = None
    for n, part in enumerate(parts):
        here = ".".join(parts[:n])
        if fields is not None:
            if part not in fields:
                close = difflib.get_close_matches(part, sorted(fields), n=1)
                raise _UnknownKey(key, ".".join([*parts[:n], close[0]]) if close else None)
            typ = fields[part]
        elif (item := _list_item(typ)) is not None:
            length = len(OmegaConf.select(cfg, here) or ()) if cfg is not None else None
            if not part.isdigit() or (length is not None and int(part) >= length):
                raise _UnknownKey(key, note=f"{here} has {length} item(s), numbered from 0" if length else "")
            typ = item
        elif _is_mapping(typ) and part:
            typ = Any
        else:
            raise _UnknownKey(key)
        fields = _schema_fields(typ)
    return typ


@functools.cache
def field_types(schema: type) -> dict[str, Any]:
    """A dataclass's field names and their types, annotations resolved."""
    hints = typing.get_type_hints(schema)
    return {f.name: hints[f.name] for f in dataclasses.fields(schema)}


def field_default(f: dataclasses.Field):
    """A field's default value (a fresh one from its default_factory)."""
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def type_name(typ) -> str:
    """A type as an error message names it: int, int or None, list of str, one of 'a', 'b'."""
    origin, args = typing.get_origin(typ), typing.get_args(typ)
    if origin is typing.Literal:
        return "one of " + ", ".join(map(repr, args))
    if origin in (typing.Union, types.UnionType):
        return " or ".join("None" if a is type(None) else type_name(a) for a in args)
    if origin is list and args:
        return f"list of {type_name(args[0])}"
    if dataclasses.is_dataclass(typ):
        return f"mapping ({typ.__name__})"
    if typ is dict or origin is dict:  # on a command line a mapping is written one key at a time
        return "a mapping: give one key at a time, KEY.NAME=VALUE"
    return getattr(typ, "__name__", str(typ))


def _dotted(full_key: str | None) -> str:
    """OmegaConf's key path (`data[1].weight`) as overrides write it (`data.1.weight`)."""
    return re.sub(r"\[(\d+)\]", r".\1", full_key or "")


def _unwrap(typ):
    """`X | None` -> X; any other type unchanged."""
    if typing.get_origin(typ) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(typ) if a is not type(None)]
        if len(members) == 1:
            return members[0]
    return typ


def _list_item(typ):
    typ = _unwrap(typ)
    if typ is list:
        return Any
    return (typing.get_args(typ) or (Any,))[0] if typing.get_origin(typ) is list else None


def _is_mapping(typ) -> bool:
    typ = _unwrap(typ)
    return typ is dict or typing.get_origin(typ) is dict or typ is Any


def _schema_fields(typ) -> dict | None:
    typ = _unwrap(typ)
    return field_types(typ) if isinstance(typ, type) and dataclasses.is_dataclass(typ) else None


def _holds_text(typ) -> bool:
    return _unwrap(typ) is str or _list_item(typ) is str


def _read_text(text: str):
    """Command-line text as a YAML value; text YAML cannot read stays text."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text
