"""Settings from a dataclass schema, the one way entry points with a YAML read them:
defaults < YAML file < `key=value` overrides (dotted keys: `data.0.weight=2`), merged and
type-checked by OmegaConf; a mistake is a ConfigError of one line naming the key."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence, TypeVar

from marco_eval.errors import ConfigError, first_line

T = TypeVar("T")


def _config_error(where: str, e: Exception) -> ConfigError:
    key = getattr(e, "full_key", None)  # OmegaConf names the offending key
    return ConfigError(f"{where}: {f'{key}: ' if key else ''}{first_line(e)}")


def load_structured(schema: type[T], path: str | None, overrides: Sequence[str] = (), *, what: str,
                    examples: str, example_override: str) -> T:
    """Args:
        schema: a dataclass whose fields (with types and defaults) are every allowed key.
        path: the YAML file, or None for defaults and overrides only.
        overrides: `key=value` strings, values read as YAML (`2`, `true`, `[1, 2]`).
        what: how errors name the file ("training config").
        examples: where example files live, for the missing-file error.
        example_override: a `key=value` to show in the malformed-override error.
    Returns:
        The schema instance.
    """
    import yaml
    from omegaconf import OmegaConf

    cfg = OmegaConf.structured(schema)
    if path is not None:
        if not Path(path).is_file():
            raise ConfigError(f"{what} {path} does not exist; see {examples} for examples")
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.load(path))
        except Exception as e:
            raise _config_error(f"{what} {path}", e) from None
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r}: write key=value, e.g. {example_override}")
        if OmegaConf.select(cfg, key, default="\0missing") == "\0missing":
            raise ConfigError(f"override {item!r}: {key!r} is not a {what} key")
        try:
            OmegaConf.update(cfg, key, yaml.safe_load(value), merge=True)
        except Exception as e:
            raise _config_error(f"override {item!r}", e) from None
    try:
        return OmegaConf.to_object(cfg)
    except Exception as e:  # a required field left unset
        raise _config_error(what, e) from None
