"""A run's manifest: its run.json (system, model, config, the exact command), or, for a run
folder lm-eval wrote without one (`lm_eval --output_path results/make_eval`), one derived
from the results file itself, so that `marco-eval report results/make_eval` just works."""

from __future__ import annotations

from pathlib import Path

from marco_eval.errors import ReportError
from marco_eval.report.reading import read_json
from marco_eval.report.schema import MANIFEST, MANIFEST_OPTIONAL, MANIFEST_REQUIRED, Manifest

# Where the README documents run.json; error messages send the reader there.
README_SECTION = "README, 'Report: marco-eval report'"


def load_manifest(path: Path) -> Manifest:
    """Read and check a run.json.

    Args:
        path: the run.json file.

    Returns:
        The manifest; ReportError (one line) for unknown, missing, empty or mistyped keys.
    """
    doc = read_json(path, "run.json")
    if not isinstance(doc, dict):
        raise ReportError(f"{path}: must be a JSON object (see {README_SECTION})")
    known = {**MANIFEST_REQUIRED, **MANIFEST_OPTIONAL}
    for key in doc:
        if key not in known:
            raise ReportError(f"{path}: unknown key {key!r} (known: {', '.join(known)})")
    for key, kind in known.items():
        if key in MANIFEST_REQUIRED and key not in doc:
            raise ReportError(f"{path}: missing {key!r} (required: {', '.join(MANIFEST_REQUIRED)})")
        if key in doc and (not isinstance(doc[key], kind) or isinstance(doc[key], bool)):
            raise ReportError(f"{path}: {key!r} has the wrong type ({type(doc[key]).__name__})")
        if key in MANIFEST_REQUIRED and not doc[key].strip():
            raise ReportError(f"{path}: {key!r} is empty")
    if doc.get("wall_seconds") is not None and doc["wall_seconds"] < 0:
        raise ReportError(f"{path}: 'wall_seconds' must be >= 0")
    return Manifest(path=path, **doc)


def find_manifest(results_file: Path, root: Path) -> Path | None:
    """The run.json in the results file's folder or the nearest folder above it, up to root."""
    for folder in results_file.parents:
        if (folder / MANIFEST).is_file():
            return folder / MANIFEST
        if folder.resolve() == root.resolve():
            break
    return None


def manifest_for(results_file: Path, doc: dict, root: Path) -> Manifest:
    """The run.json that governs results_file, checked against what the run recorded; without
    one, a manifest derived from the results file (derive_manifest)."""
    path = find_manifest(results_file, root)
    if path is None:
        return derive_manifest(results_file, doc, root)
    manifest = load_manifest(path)
    check_manifest_matches(doc, manifest, results_file)
    return manifest


def model_args_dict(config: dict) -> dict:
    """lm-eval 0.4.13 stores model_args as a dict; older versions as "k=v,k=v"."""
    args = config.get("model_args") or {}
    if isinstance(args, str):
        args = dict(part.split("=", 1) for part in args.split(",") if "=" in part)
    return args if isinstance(args, dict) else {}


def ran_config(doc: dict) -> str | None:
    """The config= a run used, as lm-eval's results file recorded it (marco_mcts writes the file)."""
    config = doc.get("config") or {}
    return (config.get("marco_eval_config_file") or doc.get("marco_eval_config_file")
            or model_args_dict(config).get("config"))


def check_manifest_matches(doc: dict, manifest: Manifest, path: Path) -> None:
    """A run.json copied into the wrong folder is the mix-up this catches."""
    pretrained = model_args_dict(doc.get("config") or {}).get("pretrained")
    if pretrained and manifest.model not in (pretrained, Path(str(pretrained)).name):
        raise ReportError(f"{path}: ran pretrained={pretrained} but {manifest.path} says model "
                          f"{manifest.model!r}: set run.json 'model' to the pretrained= value")
    config = ran_config(doc)
    if config and Path(str(config)).stem != Path(manifest.config).stem:
        raise ReportError(f"{path}: ran config={config} but {manifest.path} says config "
                          f"{manifest.config!r}: fix run.json or move the run")


def derive_manifest(results_file: Path, doc: dict, root: Path) -> Manifest:
    """A manifest for a run without run.json, from what lm-eval recorded in its results file.

    lm-eval does not record its command line, so the command is rebuilt from the recorded
    model, model_args, tasks and limit, and the manifest is marked derived (the Runs table
    says so); run.json is still what a committed run should carry.

    Args:
        results_file: the lm-eval results JSON.
        doc: its parsed content.
        root: the results folder the report reads.

    Returns:
        The derived manifest; its folder (where a request store or tokens.json is looked for)
        is lm-eval's --output_path, the folder above the <model> folder the file sits in.
    """
    config = doc.get("config") if isinstance(doc.get("config"), dict) else {}
    args = model_args_dict(config)
    marco = config.get("marco_eval_config") if isinstance(config.get("marco_eval_config"), dict) else {}
    model = str(args.get("pretrained") or marco.get("pretrained") or doc.get("model_name") or config.get("model")
                or "unknown-model")
    config_name = Path(str(ran_config(doc))).stem if ran_config(doc) else ("defaults" if marco else
                                                                         str(config.get("model") or "unknown"))
    model_args = ",".join(f"{key}={value}" for key, value in args.items())
    limit = config.get("limit")
    command = " ".join(["lm_eval", "--model", str(config.get("model") or "?")]
                       + (["--model_args", model_args] if model_args else [])
                       + ["--tasks", ",".join(sorted(doc.get("results") or {}))]
                       + (["--limit", f"{limit:g}"] if isinstance(limit, (int, float)) else []))
    folder = results_file.parent
    if folder.resolve() != root.resolve() and folder.parent.resolve().is_relative_to(root.resolve()):
        folder = folder.parent
    return Manifest(path=results_file, system=f"{Path(model).name} / {config_name}", model=model, config=config_name,
                    command=command, notes=f"no {MANIFEST}: system, model, config and command derived from the "
                                           f"results file (lm-eval does not record its command line)",
                    derived=True, folder=folder)
