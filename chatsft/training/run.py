"""One training run, shared by the train stage, `chatsft train` and the Python API:
resume from the last complete checkpoint, train, save the final model atomically, summarize.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.distributed as dist
from datasets import DatasetDict
from transformers import EarlyStoppingCallback, PreTrainedTokenizerBase, ProgressCallback

from chatsft.batching.packing import IGNORE
from chatsft.errors import UserError, disk_full_errors
from chatsft.io import check_output_kind, replace_output
from chatsft.model.load import add_chat_eos, check_finite_files, make_readable
from chatsft.params import Params
from chatsft.training import checkpoints
from chatsft.training.args import resolve_precision, training_arguments
from chatsft.training.callbacks import (
    ConsoleProgress,
    LiveCallback,
    LogLastStep,
    NoFinalCheckpoint,
    StopOnNonFinite,
    truncate_live_history,
)
from chatsft.training.data import (
    collator_for,
    epoch_blocks,
    row_stats,
    rows_fingerprint,
    split_rows,
)
from chatsft.training.lora import ADAPTER_DIR, merge_adapter, prepare_model
from chatsft.training.neftune import neftune
from chatsft.training.sources import SourceCurves, last_by_source, source_names
from chatsft.training.trackers import tracker_arguments, tracker_files
from chatsft.training.trainer import SFTTrainer


def run_training(
    params: Params,
    base_dir: str | Path,
    splits: DatasetDict,
    tokenizer: PreTrainedTokenizerBase,
    out_dir: str | Path,
    checkpoint_dir: str | Path,
    live_dir: str | Path | None = None,
    tracking_dir: str | Path = "logs",
) -> dict:
    """Train on `splits` from the model in `base_dir`; write `out_dir`; return the summary."""
    train_p, tok_p = params.train, params.tokenize
    base_dir, out_dir, checkpoint_dir = Path(base_dir), Path(out_dir), Path(checkpoint_dir)
    if train_p.torch_threads:
        torch.set_num_threads(train_p.torch_threads)
    precision = resolve_precision(train_p.precision)
    if precision == "fp16" and train_p.method == "full" and params.model.dtype == "float16":
        raise UserError("train.precision=fp16 scales the loss of fp32 master weights: with "
                        "full fine-tuning set model.dtype: float32 (or use bf16)")
    check_output_kind(out_dir, is_dir=True)  # before hours of training, not after
    train_rows, eval_rows = split_rows(splits, train_p, tok_p)
    blocks = epoch_blocks(train_rows)
    args = training_arguments(train_p, checkpoint_dir, precision, has_eval=bool(eval_rows),
                              trackers=tracker_arguments(train_p.report_to), draws=len(blocks))
    is_main = args.process_index == 0
    run_id = checkpoints.fingerprint(
        # IGNORE stands where the removed tokenize.ignore_index was: earlier checkpoints resume.
        train_p.model_dump(), tok_p.max_length, IGNORE, params.model.dtype,
        rows_fingerprint(train_rows), rows_fingerprint(eval_rows),
        checkpoints.files_fingerprint(base_dir), args.world_size,
    )
    resume = checkpoints.prepare(checkpoint_dir, run_id, is_main)
    model = prepare_model(base_dir, train_p, params.model.dtype, params.model.device_map,
                          precision, params.model.attn_implementation,
                          params.model.trust_remote_code)
    live_dir = Path(live_dir) if live_dir is not None and is_main else None
    callbacks = [LogLastStep(), NoFinalCheckpoint(), StopOnNonFinite(precision == "fp16"),
                 checkpoints.CompleteCheckpoints(train_p.save_total_limit, live_dir)]
    if train_p.early_stopping_patience and eval_rows:
        callbacks.append(EarlyStoppingCallback(train_p.early_stopping_patience,
                                               train_p.early_stopping_threshold))
    live_ctx = nullcontext()
    if live_dir is not None:
        from dvclive import Live

        if resume is not None:
            # DVC deletes metrics/train before the stage runs: the checkpoint's copy of the
            # history brings back the steps before it.
            checkpoints.restore_live_history(resume, live_dir)
            truncate_live_history(live_dir, _step(resume))
        else:
            shutil.rmtree(live_dir, ignore_errors=True)
        live_ctx = Live(str(live_dir), resume=resume is not None, save_dvc_exp=False,
                        dvcyaml=None, report=None)
    with live_ctx as live:
        if live is not None:
            callbacks += [LiveCallback(live), SourceCurves(live_dir)]
        trainer = SFTTrainer(
            model=model, args=args, train_dataset=train_rows, eval_dataset=eval_rows or None,
            data_collator=collator_for(model, tokenizer.pad_token_id), callbacks=callbacks,
            chunked_loss=use_chunked_loss(train_p.loss, train_p.distributed),
            eval_sources=source_names(splits["validation"]) if eval_rows else [],
            epoch_blocks=blocks,
        )
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(ConsoleProgress())
        if resume is not None and is_main:
            print(f"train: resuming from {resume}", flush=True)
        start = time.perf_counter()
        try:
            with disk_full_errors(checkpoint_dir), tracker_files(trainer, tracking_dir), \
                    neftune(trainer.model, train_p.neftune_alpha):
                trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        finally:
            if is_main:  # a checkpoint left half-written by an error is of no use
                checkpoints.remove_incomplete(checkpoint_dir)
        seconds = time.perf_counter() - start
    save_model(trainer, params, base_dir, tokenizer, out_dir)
    summary = summarize(trainer, seconds) | row_stats(train_rows, train_p, tok_p.max_length)
    summary |= last_by_source(trainer.state.log_history)
    summary |= {"precision": precision, "resumed_from_step": _step(resume) if resume else 0,
                "processes": args.world_size, "method": train_p.method}
    if is_main and not train_p.keep_checkpoints:
        checkpoints.clear(checkpoint_dir)
    return summary


def use_chunked_loss(choice: str, distributed: str) -> bool:
    """FSDP and ZeRO-3 shard the output layer outside the forward pass, where the chunked
    loss reads it; there the model computes its own loss."""
    sharded = distributed in ("fsdp", "zero3_offload") or os.environ.get(
        "ACCELERATE_USE_FSDP", "").lower() == "true" or os.environ.get(
        "ACCELERATE_DEEPSPEED_ZERO_STAGE") == "3"
    if choice == "chunked" and sharded:
        raise UserError("train.loss=chunked does not work with FSDP or ZeRO-3; use auto")
    return choice == "chunked" or (choice == "auto" and not sharded)


def save_model(trainer: SFTTrainer, params: Params, base_dir: Path,
               tokenizer: PreTrainedTokenizerBase, out_dir: Path) -> None:
    """Write the final model to a temporary sibling, then rename it onto `out_dir`.

    Every process takes part in `save_model` (FSDP/ZeRO-3 gather the weights); the main one
    writes. LoRA: the adapter goes to `adapter/`, and with `lora.merge` the merged full model
    to the top level, so later stages load it like any model.
    """
    tmp = out_dir.parent / f".{out_dir.name}.saving"
    is_main = trainer.args.process_index == 0
    if is_main:
        shutil.rmtree(tmp, ignore_errors=True)
    _barrier()
    lora = params.train.method != "full"
    merge = lora and params.train.lora.merge
    # Trainer turns the KV cache off for training (TrainingArguments.use_cache); the saved
    # model is for inference, where plain `generate` reads it from config.json.
    trainer.model.config.use_cache = True
    try:
        with disk_full_errors(out_dir.parent):
            trainer.save_model(str(tmp / ADAPTER_DIR if merge else tmp))
            if is_main:
                for pickled in tmp.rglob("training_args.bin"):  # a pickle: safetensors only
                    pickled.unlink()
                if merge:
                    merge_adapter(base_dir, tmp / ADAPTER_DIR, params.model.dtype, tmp,
                                  params.model.trust_remote_code)
                tokenizer.save_pretrained(tmp)
                add_chat_eos(tmp, tokenizer)
                make_readable(tmp)
                check_finite_files(tmp, str(out_dir))
                replace_output(tmp, out_dir, is_dir=True)
    finally:
        if is_main:
            shutil.rmtree(tmp, ignore_errors=True)
    _barrier()


def summarize(trainer: SFTTrainer, seconds: float) -> dict:
    history = trainer.state.log_history
    losses = [h["loss"] for h in history if "loss" in h]
    evals = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h]
    real, supervised = trainer.token_counts()
    session_real = real - trainer.tokens_before[0]
    peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else _peak_rss()
    best = min(evals, key=lambda e: e[1]) if evals else (None, math.nan)
    return {
        "steps": trainer.state.global_step,
        "final_loss": losses[-1] if losses else math.nan,
        "final_eval_loss": evals[-1][1] if evals else math.nan,
        "best_eval_loss": best[1],
        "best_step": best[0],
        "selected_step": _step(Path(trainer.state.best_model_checkpoint))
        if trainer.args.load_best_model_at_end and trainer.state.best_model_checkpoint
        else trainer.state.global_step,
        "train_seconds": round(seconds, 2),
        "real_tokens": real,
        "supervised_tokens": supervised,
        "tokens_per_second": round(session_real / max(seconds, 1e-9), 1),
        "peak_memory_mb": round(peak / 2**20, 1),
    }


def _step(checkpoint: Path) -> int:
    return int(checkpoint.name.rsplit("-", 1)[1])


def _peak_rss() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
