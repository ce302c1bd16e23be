"""CoT SFT with TRL's SFTTrainer, from one OmegaConf YAML plus key=value overrides:
full-parameter, or LoRA adapters merged on save (`lora.r=16`); a standard checkpoint either way.

    marco-eval train training/configs/sft_cpu_small.yaml max_steps=20 output_dir=checkpoints/try
    accelerate launch --config_file training/accelerate/zero3.yaml -m marco_eval.train.sft \\
        training/configs/sft_qwen2_7b.yaml

Precedence: TrainConfig defaults < YAML < overrides (dotted keys: `data.0.weight=2`). Unknown
keys and wrong types fail before anything loads, with one line naming the key.

The run trains into OUTPUT_DIR.tmp/ and only when the model, tokenizer (with its chat
template) and training_summary.json are all written renames OUTPUT_DIR.tmp/final to
OUTPUT_DIR, so a killed run never leaves a directory that `pretrained=` would load.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from marco_eval.errors import ConfigError, InputError, UserError, first_line, need
from marco_eval.settings import DEFAULT_SYSTEM_PROMPT
from marco_eval.store import checkpoint_digest
from marco_eval.structured import load_structured
from marco_eval.train.data import FilterConfig, Row, SourceConfig, build_mix, conversation, counts_table

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass
class LoraSettings:
    """Low-rank adapters (peft) in place of full-parameter training. The adapters are merged
    into the base weights in fp32 when training ends, so the output is a standard checkpoint
    either way (the adapters alone are kept beside it, in adapter/)."""
    r: int = 0  # adapter rank; 0 = full-parameter SFT
    alpha: int = 32  # the update is scaled by alpha / r
    dropout: float = 0.05
    targets: str = "all-linear"  # peft target_modules: "all-linear" (every linear but the head) or a regex

    def __post_init__(self):
        need(self.r >= 0, f"lora.r={self.r}: use 0 (full-parameter) or a positive rank")
        need(0 <= self.dropout < 1, f"lora.dropout={self.dropout}: must be in [0, 1)")


@dataclass
class TrainConfig:
    model: str = "qwen2.5-coder-0.5b"  # alias, local checkpoint or Hugging Face id
    output_dir: str = "checkpoints/marco-o1-cot"
    data: list[SourceConfig] = field(default_factory=list)
    filters: FilterConfig = field(default_factory=FilterConfig)
    # The system turn of every training conversation. None = the one marco_mcts prompts with
    # (marco_eval.settings.DEFAULT_SYSTEM_PROMPT), so training and evaluation contexts agree; "" = none.
    system_prompt: str | None = None
    max_length: int = 2048  # tokens per sequence (prompt + completion)
    learning_rate: float = 1e-5
    lr_scheduler: str = "cosine"
    warmup: float = 0.03  # < 1: fraction of the steps; >= 1: a number of steps
    weight_decay: float = 0.0
    epochs: float = 2.0
    max_steps: int = -1  # > 0 stops after this many optimizer steps (overrides epochs)
    per_device_batch_size: int = 1
    gradient_accumulation_steps: int = 8
    seed: int = 42
    precision: str = "auto"  # auto: bf16 on a GPU that has it, else fp32 | fp32 | bf16 | fp16
    model_dtype: str = "float32"  # weights as loaded: fp32 master weights under bf16 autocast/ZeRO
    gradient_checkpointing: bool = False
    logging_steps: int = 1
    save_steps: int = 0  # > 0: checkpoints in OUTPUT_DIR.tmp/ every N steps (resume=true picks them up)
    resume: bool = False  # continue from the newest checkpoint in OUTPUT_DIR.tmp/
    overwrite: bool = False  # replace an existing OUTPUT_DIR
    report_to: str = "none"  # none | tensorboard | wandb ...
    trust_remote_code: bool = False
    # lora.r > 0 trains adapters instead (with model_dtype=bfloat16 the frozen base is half the
    # memory traffic of fp32 master weights under autocast)
    lora: LoraSettings = field(default_factory=LoraSettings)
    trainer_args: dict = field(default_factory=dict)  # any other SFTConfig / TrainingArguments key

    def __post_init__(self):
        """Every instance is checked (structured.merge builds it once every layer is merged)."""
        need(self.data, "no data sources: list at least one under `data:` (path, format, weight)")
        need(self.precision in PRECISIONS, f"precision={self.precision!r}: use one of {', '.join(PRECISIONS)}")
        need(self.model_dtype in ("float32", "bfloat16", "float16"),
             f"model_dtype={self.model_dtype!r}: use float32, bfloat16 or float16")
        need(self.max_length > 0, f"max_length={self.max_length}: must be a positive number of tokens")
        need(self.learning_rate > 0, f"learning_rate={self.learning_rate}: must be positive")
        need(self.per_device_batch_size > 0 and self.gradient_accumulation_steps > 0, "batch sizes must be positive")
        need(self.epochs > 0 or self.max_steps > 0, "set epochs > 0 or max_steps > 0")
        need(self.output_dir.strip() not in ("", ".", "/"), f"output_dir={self.output_dir!r}: name a new directory")


# ---------------------------------------------------------------------- config
def load_config(path: str | None, overrides: list[str] = ()) -> TrainConfig:
    """Defaults < YAML < `key=value` overrides, type-checked and validated; a ConfigError names the bad key."""
    return load_structured(TrainConfig, path, overrides, what="training config", examples="training/configs/",
                           example_override="learning_rate=2e-5")


def resolved_precision(precision: str) -> str:
    import torch

    if precision != "auto":
        return precision
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"


# ---------------------------------------------------------------------- data
def token_counter(tokenizer, system_prompt: str, max_length: int):
    """A `too_long(row)` check: the conversation as the trainer will tokenise it."""
    def too_long(row: Row) -> bool:
        ex = conversation(row, system_prompt)
        ids = tokenizer.apply_chat_template(ex["prompt"] + ex["completion"], tokenize=True)["input_ids"]
        return len(ids) > max_length
    return too_long


def load_tokenizer(base: str, trust_remote_code: bool):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base, trust_remote_code=trust_remote_code)
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(f"{base} has no chat template; use an instruct/chat model or add a template to its tokenizer")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def prepare_data(c: TrainConfig, tokenizer, log=print):
    """The merged conversational dataset and the per-source counts (printed as a table)."""
    import datasets

    system_prompt = DEFAULT_SYSTEM_PROMPT if c.system_prompt is None else c.system_prompt
    too_long = token_counter(tokenizer, system_prompt, c.max_length) if c.filters.drop_overlong else None
    rows, counts = build_mix(c.data, c.filters, c.seed, too_long)
    log(counts_table(counts))
    if not rows:
        raise InputError("every row was filtered out; see the counts above and loosen `filters:` or fix the data")
    log(f"training rows: {len(rows)}")
    return datasets.Dataset.from_list([conversation(r, system_prompt) for r in rows]), counts


# ---------------------------------------------------------------------- training
def checkpointing_args(c: TrainConfig, names) -> dict:
    """Activation checkpointing under the name this transformers knows (renamed in v5)."""
    key = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    if not c.gradient_checkpointing:
        return {}
    return {key: True, f"{key}_kwargs": {"use_reentrant": False}}


def sft_args(c: TrainConfig, staging: Path):
    import dataclasses

    from trl import SFTConfig

    precision = resolved_precision(c.precision)
    kwargs = dict(
        output_dir=str(staging), num_train_epochs=c.epochs, max_steps=c.max_steps,
        per_device_train_batch_size=c.per_device_batch_size, gradient_accumulation_steps=c.gradient_accumulation_steps,
        learning_rate=c.learning_rate, lr_scheduler_type=c.lr_scheduler, warmup_steps=c.warmup,
        weight_decay=c.weight_decay, seed=c.seed, data_seed=c.seed,
        bf16=precision == "bf16", fp16=precision == "fp16",
        **checkpointing_args(c, {f.name for f in dataclasses.fields(SFTConfig)}),
        logging_steps=c.logging_steps, logging_first_step=True,
        save_strategy="steps" if c.save_steps > 0 else "no", save_steps=c.save_steps or 500, save_total_limit=1,
        report_to=c.report_to, max_length=c.max_length,
        completion_only_loss=True,  # loss on the assistant's CoT only, never on the prompt
        packing=False, model_init_kwargs={"dtype": c.model_dtype, "trust_remote_code": c.trust_remote_code},
        trust_remote_code=c.trust_remote_code,
    )
    if precision == "bf16" and not _has_accelerator():
        # bf16 autocast on a CPU (fast where it has avx512_bf16/AMX); transformers refuses it
        # unless told the run is on the CPU on purpose
        kwargs["use_cpu"] = True
    kwargs.update(c.trainer_args)
    try:
        return SFTConfig(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"trainer settings: {first_line(e)}") from None


def _has_accelerator() -> bool:
    import torch

    xpu = getattr(torch, "xpu", None)
    return torch.cuda.is_available() or torch.backends.mps.is_available() or bool(xpu and xpu.is_available())


def newest_checkpoint(staging: Path) -> str | None:
    found = sorted(staging.glob("checkpoint-*"), key=lambda p: int(p.name.rsplit("-", 1)[-1]))
    return str(found[-1]) if found else None


def train(c: TrainConfig, log=print, command: str | None = None) -> dict:
    """Train, save atomically to c.output_dir, return the summary written beside the weights
    (with `command`, the command line that ran it, when given)."""
    from trl import SFTTrainer

    from marco_eval.models import resolve

    final = Path(c.output_dir).expanduser()
    staging = final.with_name(final.name + ".tmp")
    if final.exists() and not c.overwrite:
        raise ConfigError(f"{final} already exists; pass overwrite=true or pick another output_dir")
    started = time.perf_counter()
    base = resolve(c.model)
    args = sft_args(c, staging)  # before the model loads: ZeRO-3 must see its config first
    resume_from = newest_checkpoint(staging) if c.resume and staging.is_dir() else None
    if staging.exists() and resume_from is None and args.process_index == 0:
        shutil.rmtree(staging)  # leftovers of a killed run
    tokenizer = load_tokenizer(base, c.trust_remote_code)
    dataset, counts = prepare_data(c, tokenizer, log)
    if c.lora.r and args.world_size > 1:
        raise ConfigError("lora.r > 0 trains on one process; launch without accelerate's multi-process "
                          "config, or set lora.r=0 for full-parameter training")
    trainer = SFTTrainer(model=base, args=args, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=lora_config(c.lora) if c.lora.r else None)
    result = trainer.train(resume_from_checkpoint=resume_from)
    done_dir = staging / "final"
    if c.lora.r:
        save_merged(trainer, base, tokenizer, done_dir, c.trust_remote_code)
    else:
        trainer.save_model(str(done_dir))  # weights, config, generation config, tokenizer + chat template
    summary = {
        "base_model": c.model, "base_model_path": base, "config": asdict(c),
        "data": {label: asdict(n) for label, n in counts.items()}, "train_rows": len(dataset),
        "steps": trainer.state.global_step, "epochs": trainer.state.epoch,
        "losses": [{"step": e["step"], "loss": e["loss"]} for e in trainer.state.log_history if "loss" in e],
        "train_loss": result.training_loss, "train_seconds": round(result.metrics.get("train_runtime", 0.0), 1),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "versions": versions(),
    }
    if command:
        summary["command"] = command
    trainer.accelerator.wait_for_everyone()  # every rank's part of the weights is written
    if trainer.accelerator.is_main_process:
        summary["checkpoint_sha256"] = checkpoint_digest(done_dir)  # what --assemble compares with
        (done_dir / "training_summary.json").write_text(json.dumps(summary, indent=1, default=str), encoding="utf-8")
        publish(done_dir, final, staging)
    trainer.accelerator.wait_for_everyone()
    return summary


def lora_config(lora: LoraSettings):
    from peft import LoraConfig

    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=lora.targets,
                      task_type="CAUSAL_LM")


def save_merged(trainer, base: str, tokenizer, done_dir: Path, trust_remote_code: bool) -> None:
    """The adapters in done_dir/adapter, and merged into the base as a standard checkpoint in done_dir."""
    trainer.model.save_pretrained(str(done_dir / "adapter"))
    merge_adapter(base, done_dir / "adapter", tokenizer, done_dir, trust_remote_code)


def merge_adapter(base: str, adapter: Path, tokenizer, out: Path, trust_remote_code: bool) -> None:
    """Adapters merged into the base weights loaded again in fp32 (a bf16 base would round the
    small updates away), saved with the tokenizer as a standard checkpoint. Training and
    --assemble both merge here, so the same adapters give the same weights."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32, trust_remote_code=trust_remote_code)
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    merged.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))


def assemble(summary_path: str | Path, out: str | Path, log=print) -> Path:
    """The checkpoint a LoRA run's training_summary.json describes, rebuilt from its base model
    and the adapter/ folder beside the summary (both small enough to commit; the merged
    checkpoint is not). Written to OUT.tmp, then renamed; an existing OUT is refused."""
    from marco_eval.models import resolve

    summary_path = Path(summary_path)
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
        config = summary["config"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"{summary_path}: not a training_summary.json of `marco-eval train` ({first_line(e)}); "
                          "give the one copied out of the trained checkpoint") from None
    adapter = summary_path.parent / "adapter"
    if not config.get("lora", {}).get("r"):
        raise ConfigError(f"{summary_path}: not a LoRA run's summary; --assemble rebuilds a checkpoint from "
                          "adapters (lora.r > 0) kept beside the summary")
    if not (adapter / "adapter_config.json").is_file():
        raise ConfigError(f"{adapter}: no adapter_config.json; copy the adapter/ folder of the trained "
                          f"checkpoint beside {summary_path.name}")
    out = Path(out).expanduser()
    if out.exists():
        raise ConfigError(f"{out} already exists; remove it or pick another OUTPUT_DIR")
    staging = out.with_name(out.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    base, trust_remote_code = resolve(config["model"]), bool(config.get("trust_remote_code"))
    merge_adapter(base, adapter, load_tokenizer(base, trust_remote_code), staging, trust_remote_code)
    shutil.copytree(adapter, staging / "adapter")
    shutil.copy(summary_path, staging / "training_summary.json")
    digest, trained = checkpoint_digest(staging), summary.get("checkpoint_sha256")
    manifest = summary_path.parent / "run.json"  # where older summaries, written without it, keep it
    if trained is None and manifest.is_file():
        trained = json.loads(manifest.read_text(encoding="utf-8")).get("checkpoint_sha256")
    staging.rename(out)
    if trained is None:
        log(f"{out}: assembled (sha256 {digest}); the summary records no digest to compare with")
    elif digest == trained:
        log(f"{out}: assembled, the same weights as the trained checkpoint (sha256 {digest})")
    else:
        log(f"{out}: assembled, but its weights differ from the trained checkpoint's in the last bits "
            f"(sha256 {digest}, trained {trained}): this CPU rounds the fp32 merge differently")
    return out


def publish(done_dir: Path, final: Path, staging: Path) -> None:
    """Rename the finished checkpoint into place; an old one (overwrite=true) goes only after."""
    old = final.with_name(final.name + ".old")
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
    done_dir.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(staging, ignore_errors=True)


def versions() -> dict:
    import torch
    import transformers
    import trl

    return {"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__}


def dry_run(c: TrainConfig, log=print) -> dict:
    """Read, filter and mix the data, print the counts: no model weights loaded."""
    from marco_eval.models import resolve

    _, counts = prepare_data(c, load_tokenizer(resolve(c.model), c.trust_remote_code), log)
    return {label: asdict(n) for label, n in counts.items()}


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="marco-eval train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", nargs="?", help="training YAML (see training/configs/)")
    p.add_argument("overrides", nargs="*", help="key=value, e.g. max_steps=20 data.0.weight=2")
    p.add_argument("--data-only", action="store_true", help="read, filter and count the data; do not train")
    p.add_argument("--assemble", nargs=2, metavar=("SUMMARY", "OUTPUT_DIR"),
                   help="rebuild a LoRA run's checkpoint from its training_summary.json and the adapter/ beside it")
    argv = sys.argv[1:] if argv is None else argv
    args = p.parse_intermixed_args(argv)
    if not args.assemble and not args.config:
        p.error("give a training YAML (see training/configs/), or --assemble SUMMARY OUTPUT_DIR")
    try:
        if args.assemble:
            assemble(*args.assemble)
            return 0
        c = load_config(args.config, args.overrides)
        if args.data_only:
            dry_run(c)
            return 0
        threads = os.environ.get("OMP_NUM_THREADS")
        command = (f"OMP_NUM_THREADS={threads} " if threads else "") + shlex.join(["marco-eval", "train", *argv])
        summary = train(c, command=command)
    except UserError as e:  # bad input; anything else is a bug and keeps its traceback
        print(f"marco-eval train: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({k: summary[k] for k in ("train_rows", "steps", "train_loss", "train_seconds", "wall_seconds")}
                     | {"output_dir": c.output_dir}))
    return 0


if __name__ == "__main__":  # `accelerate launch -m marco_eval.train.sft CONFIG ...`
    sys.exit(main())
