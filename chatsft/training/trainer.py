"""transformers' Trainer with chatsft's loss, evaluation and token accounting.

Loss per supervised token: the sum over supervised tokens divided by the supervised tokens
of the whole optimizer step (all micro-batches, all processes). Trainer counts that
denominator (`num_items_in_batch`, over `labels[..., 1:]`, gathered across processes with
`average_tokens_across_devices`) and scales each process's loss by the process count so
that DDP's gradient averaging gives the global per-token mean; the model's own loss and the
chunked loss below both divide by it.
"""

from __future__ import annotations

import inspect
import time

import torch
import torch.nn.functional as F
from transformers import Trainer, TrainerCallback

from chatsft.loss import IGNORE, chunked_causal_lm_loss, chunked_token_losses
from chatsft.training.data import EpochBlockSampler
from chatsft.training.sharding import drop_tied_copies
from chatsft.training.sources import SourceTotals


class SFTTrainer(Trainer):
    """Trainer that counts real/supervised tokens, can use the chunked loss, and evaluates
    the eval loss per token."""

    def __init__(self, *args, chunked_loss: bool = False, eval_sources: list[str] = (),
                 epoch_blocks: list[int] | None = None, **kwargs) -> None:
        self.epoch_blocks = epoch_blocks  # rows per epoch's draw (data.resample_each_epoch)
        super().__init__(*args, **kwargs)
        self.eval_sources = list(eval_sources)  # names of the eval rows' source_index
        self.chunked_loss = chunked_loss and _accepts(self._base_model(), "logits_to_keep")
        if self.chunked_loss:
            # Our loss takes num_items_in_batch and shifts labels like ForCausalLMLoss: make
            # Trainer count the step's supervised tokens over labels[..., 1:] and not divide
            # again by the accumulation steps.
            self.model_accepts_loss_kwargs = True
            self._loss_shifts_labels = True
        self.real_tokens = torch.zeros((), dtype=torch.long, device=self.args.device)
        self.supervised_tokens = torch.zeros((), dtype=torch.long, device=self.args.device)
        self.tokens_before = (0, 0)  # counts restored from a checkpoint's log history
        self.started = time.perf_counter()
        self.add_callback(_SessionStart(self))

    def _get_train_sampler(self, train_dataset=None):
        if self.epoch_blocks and len(self.epoch_blocks) > 1:
            return EpochBlockSampler(self.epoch_blocks, self.args.data_seed or self.args.seed)
        return super()._get_train_sampler(train_dataset)

    def _base_model(self):
        model = self.accelerator.unwrap_model(self.model)
        return model.get_base_model() if hasattr(model, "get_base_model") else model

    def _issue_warnings_after_load(self, load_result) -> None:
        # Trainer recognises tied weights only by the old `_keys_to_ignore_on_save`, which
        # transformers 5 models leave empty (`all_tied_weights_keys` lists them). Checkpoints
        # omit a tied output layer, so resuming would warn "missing keys ['lm_head.weight']"
        # although nothing is missing: drop those keys and re-tie, as Trainer meant to.
        tied = set(getattr(self._base_model(), "all_tied_weights_keys", None) or ())
        missing = [k for k in load_result.missing_keys if k not in tied]
        if len(missing) < len(load_result.missing_keys):
            self._base_model().tie_weights()
        super()._issue_warnings_after_load(load_result._replace(missing_keys=missing))

    def _save(self, output_dir=None, state_dict=None):
        super()._save(output_dir, drop_tied_copies(state_dict, self._base_model()))

    def training_step(self, model, inputs, num_items_in_batch=None):
        # Counted on the device, read only when logging: no host sync per micro-batch.
        real = inputs.pop("num_real_tokens")
        self.real_tokens += real.to(self.real_tokens.device)
        self.supervised_tokens += (inputs["labels"][:, 1:] != IGNORE).sum().to(
            self.supervised_tokens.device)
        return super().training_step(model, inputs, num_items_in_batch)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not self.chunked_loss or return_outputs:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        # Logits only at supervised positions (a quarter of the tokens in the default data),
        # never the full (tokens x vocab) tensor: the last hidden states come out of the
        # model's forward (so DDP/accelerate hooks run) and the loss is computed from them.
        labels = inputs["labels"]
        rest = {k: v for k, v in inputs.items() if k != "labels"}
        outputs = model(**rest, logits_to_keep=1, output_hidden_states=True)
        weight = self._base_model().get_output_embeddings().weight
        hidden = outputs.hidden_states[-1].to(weight.dtype)
        loss = chunked_causal_lm_loss(hidden, weight, labels, num_items_in_batch)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes
        return loss

    def token_counts(self) -> tuple[int, int]:
        """(real, supervised) tokens trained on so far, all processes, resumed runs included."""
        counts = torch.stack([self.real_tokens, self.supervised_tokens])
        counts = self.accelerator.reduce(counts, reduction="sum")
        return int(counts[0]) + self.tokens_before[0], int(counts[1]) + self.tokens_before[1]

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        # Every process calls log() at the same points, so the reduction cannot deadlock.
        if "loss" in logs:
            real, supervised = self.token_counts()
            elapsed = max(time.perf_counter() - self.started, 1e-9)
            logs["tokens_per_second"] = (real - self.tokens_before[0]) / elapsed
            logs["real_tokens"] = real
            logs["supervised_tokens"] = supervised
        super().log(logs, start_time)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        """Eval loss = sum of token losses / supervised tokens over the whole eval set.

        Trainer's own eval loss averages per-batch means weighted by rows, so it depends on
        how the eval set is batched; early stopping and best-checkpoint selection compare
        this one instead.
        """
        loader = self.get_eval_dataloader(eval_dataset)
        model = self.model_wrapped
        was_training = model.training
        model.eval()
        total = torch.zeros((), dtype=torch.float64, device=self.args.device)
        count = torch.zeros((), dtype=torch.long, device=self.args.device)
        by_source = SourceTotals(self.eval_sources, self.args.device)
        with torch.no_grad():
            for batch in loader:
                batch = self._prepare_inputs(batch)
                batch.pop("num_real_tokens", None)
                source = batch.pop("source_index", None)
                labels = batch.pop("labels")
                out = model(**batch, logits_to_keep=1, output_hidden_states=True) if (
                    self.chunked_loss) else model(**batch)
                sums, counts = _row_losses(self, out, labels)
                # gather_for_metrics drops the rows repeated to even out the last batches.
                sums, counts = self.accelerator.gather_for_metrics((sums, counts))
                total += sums.sum()
                count += counts.sum()
                if source is not None and self.eval_sources:
                    by_source.add(self.accelerator.gather_for_metrics(source), sums, counts)
        model.train(was_training)
        metrics = {
            f"{metric_key_prefix}_loss": float(total / count.clamp(min=1)),
            f"{metric_key_prefix}_supervised_tokens": int(count),
        } | by_source.metrics(metric_key_prefix)
        if self.state.epoch is not None:
            metrics["epoch"] = self.state.epoch
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control,
                                                         metrics)
        return metrics


class _SessionStart(TrainerCallback):
    """At train begin (after a checkpoint's state is loaded): start the tokens/s clock and
    continue the token counts of the resumed run."""

    def __init__(self, trainer: SFTTrainer) -> None:
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        logged = [h for h in state.log_history if "real_tokens" in h]
        if logged:
            self.trainer.tokens_before = (logged[-1]["real_tokens"],
                                          logged[-1]["supervised_tokens"])
        self.trainer.started = time.perf_counter()


def _row_losses(trainer: SFTTrainer, out, labels: torch.Tensor):
    """Per-row (sum of supervised token losses, supervised token count)."""
    targets = labels[:, 1:]
    keep = targets != IGNORE
    sums = torch.zeros(labels.shape[0], dtype=torch.float64, device=labels.device)
    if trainer.chunked_loss:
        weight = trainer._base_model().get_output_embeddings().weight
        hidden = out.hidden_states[-1][:, :-1][keep].to(weight.dtype)
        losses = chunked_token_losses(hidden, weight, targets[keep])
        sums.index_add_(0, keep.nonzero()[:, 0], losses.double())
    else:
        logits = out.logits[:, :-1].float()
        loss = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=IGNORE,
                               reduction="none")
        sums = loss.double().sum(dim=1)
    return sums, keep.sum(dim=1)


def _accepts(model, name: str) -> bool:
    return name in inspect.signature(model.forward).parameters
