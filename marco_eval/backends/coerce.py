"""vllm_args values converted to the types of vLLM's EngineArgs fields.

EngineArgs is no schema OmegaConf can structure (its annotations include Literal, unions
and vLLM's own config classes), so `check_engine_args` (backends/vllm.py) converts each
`vllm_args.NAME=VALUE` here: text or a number to the field's type, a type this does not
know left for vLLM to judge.
"""

from __future__ import annotations

import types
import typing

from marco_eval.errors import ConfigError
from marco_eval.structured import type_name


def coerce(key: str, value, typ, *, lenient: bool = False) -> object:
    """`value` (text or a number from model_args, or a YAML value) as type `typ`.

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
