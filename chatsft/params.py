"""The typed schema of `params.yaml`: the single source of truth for every key.

Each stage calls `load_params()` first; an unknown key, a wrong type or an out-of-range
value stops the stage with a message naming the key, before any work is done.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from chatsft.errors import UserError


class ParamsError(UserError, ValueError):
    """A user mistake in params.yaml; the message names the key."""


class _Section(BaseModel):
    # allow_inf_nan: `.inf` and `.nan` are valid YAML floats but no valid setting
    # (train.epochs: .inf would crash deep inside Trainer).
    model_config = ConfigDict(extra="forbid", protected_namespaces=(), allow_inf_nan=False)


class Source(_Section):
    path: str = Field(description="A file, glob or directory of JSON/JSONL records.")
    format: Literal["auto", "chatml", "sharegpt", "alpaca"] = Field(
        "auto", description="Record format; 'auto' detects it per record."
    )
    weight: float = Field(
        1.0, gt=0, description="Copies of each train record (fractions drawn at random)."
    )
    max_samples: int | None = Field(
        None, ge=1, description="Keep a random subset of at most this many records."
    )
    ratio: float | None = Field(
        None, gt=0, le=1, description="Target share of the training split (the alternative "
        "to weight; set on every source or none, summing to 1), in data.ratio_unit."
    )


class DataParams(_Section):
    raw: list[str | Source] = Field(
        ["data/demo.jsonl"], min_length=1,
        description="Raw sources: paths or Source entries (one path alone is a list of one)."
    )
    seed: int = Field(42, description="Seed of the deterministic split and sampling.")
    validation_fraction: float = Field(0.05, ge=0, lt=0.5, description="Share for validation.")
    test_fraction: float = Field(0.05, ge=0, lt=0.5, description="Share for test.")
    max_chars: int = Field(32000, ge=1, description="Reject conversations with more characters.")
    max_turns: int = Field(64, ge=2, description="Reject conversations with more messages.")
    control_chars: Literal["remove", "reject"] = Field(
        "remove", description="What to do with control characters other than tab and newline."
    )
    special_tokens: Literal["reject", "escape"] = Field(
        "reject", description="What to do with special-token strings inside content."
    )
    extra_special_tokens: list[str] = Field(
        [], description="More special-token strings to treat like <|im_start|> in content."
    )
    near_duplicates: bool = Field(
        True, description="Also drop duplicates after NFKC, whitespace and case folding."
    )
    tool_calls: Literal["keep", "reject"] = Field(
        "keep", description="Tool-call records: keep them for the template (tokenize renders "
        "or quarantines them) or reject them as 'unsupported role'."
    )
    ratio_unit: Literal["conversations", "tokens"] = Field(
        "conversations", description="What raw[].ratio shares out: conversations, or "
        "supervised tokens (estimated at clean time: see chatsft/data/mixing.py)."
    )
    ratio_tokenizer: str | None = Field(
        None, description="Tokenizer (hub id or folder) that counts the mixture's supervised "
        "tokens; null = the estimate (the only choice for the scratch model)."
    )
    resample_each_epoch: bool = Field(
        False, description="Draw the ratio/weight mixture afresh for each epoch (train.epochs "
        "rounded up; seeds in metrics/clean.json); false = one draw for every epoch."
    )
    system_prompts: list[str] = Field(
        [], description="System prompts given, one chosen by a hash of the record id, to "
        "conversations that have none."
    )

    @field_validator("raw", mode="before")
    @classmethod
    def _one_source(cls, value: object) -> object:
        # `dvc exp run -S data.raw=chats.jsonl` sets a plain string.
        return [value] if isinstance(value, str | dict) else value

    @field_validator("extra_special_tokens")
    @classmethod
    def _non_empty(cls, value: list[str]) -> list[str]:
        if any(len(s.strip()) < 2 for s in value):
            raise ValueError("special-token strings need at least two characters")
        return value

    @model_validator(mode="after")
    def _ratios(self) -> DataParams:
        ratios = [s.ratio for s in self.sources()]
        for i, s in enumerate(self.sources()):
            if s.ratio is not None and "weight" in s.model_fields_set:
                raise ValueError(f"raw[{i}]: ratio and weight are alternatives; set one of them")
        if all(r is None for r in ratios):
            if self.resample_each_epoch and all(float(s.weight).is_integer()
                                                for s in self.sources()):
                raise ValueError("resample_each_epoch: no source has a ratio or a fractional "
                                 "weight, so every epoch would draw the same records")
            return self
        missing = [f"raw[{i}].ratio" for i, r in enumerate(ratios) if r is None]
        if missing:
            raise ValueError(f"{', '.join(missing)}: not set; ratios are shares of the training "
                             "split, so every source needs one (or use weight on all)")
        if abs(sum(ratios) - 1) > 0.01:
            raise ValueError(f"raw[].ratio: {' + '.join(map(str, ratios))} = {sum(ratios):g}; "
                             "the shares must sum to 1")
        return self

    def sources(self) -> list[Source]:
        return [Source(path=s) if isinstance(s, str) else s for s in self.raw]


class ScratchModel(_Section):
    vocab_size: int = Field(3000, ge=300, description="BPE vocabulary size incl. specials.")
    hidden_size: int = Field(192, ge=8, description="Model width.")
    num_hidden_layers: int = Field(4, ge=1, description="Transformer blocks.")
    num_attention_heads: int = Field(6, ge=1, description="Query heads.")
    num_key_value_heads: int = Field(2, ge=1, description="Key/value heads (GQA).")
    intermediate_size: int = Field(512, ge=8, description="MLP width.")
    max_position_embeddings: int = Field(1024, ge=16, description="Longest sequence.")
    rope_theta: float = Field(10000.0, gt=0, description="RoPE base.")
    tie_word_embeddings: bool = Field(True, description="Share input and output embeddings.")
    seed: int = Field(0, description="Seed for the weight init and tokenizer training.")

    @model_validator(mode="after")
    def _heads_divide(self) -> ScratchModel:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError("hidden_size must be a multiple of num_attention_heads")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_attention_heads must be a multiple of num_key_value_heads")
        return self


class ModelParams(_Section):
    name_or_path: str = Field(
        "scratch", description="'scratch', a hub id or a local directory."
    )
    revision: str = Field("main", description="Hub revision (branch, tag or commit).")
    trust_remote_code: bool = Field(False, description="Run model code from the hub (unsafe).")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "float32", description="Weights dtype when loading."
    )
    device_map: str | None = Field(None, description="transformers device_map, e.g. 'auto'.")
    attn_implementation: Literal["auto", "sdpa_varlen", "sdpa", "eager", "flash_attention_2"] = (
        Field("auto", description="auto: flash_attention_2 on CUDA when flash-attn is installed, "
              "sdpa_varlen (SDPA per packed sample) on CPU, else sdpa; packed samples never "
              "attend to each other with any of them."))
    chat_template: str = Field(
        "auto", description="auto: the tokenizer's own; a built-in (chatml, llama3, qwen2.5); or "
        "a path to a .jinja file. Special tokens it needs are added to the tokenizer and model.")
    scratch: ScratchModel = Field(default_factory=ScratchModel, description="Scratch sizes.")


class TokenizeParams(_Section):
    max_length: int = Field(
        512, ge=16, description="Longest sample (tokens), also the packed row length; longer "
        "conversations lose their oldest exchanges, or are quarantined if the last one won't fit."
    )
    train_on: Literal["all", "last"] = Field(
        "all", description="Supervise all assistant turns or only the last."
    )
    audit_samples: int = Field(
        8, ge=0, description="Train samples rendered in metrics/mask_audit.html."
    )
    template_kwargs: dict = Field(
        {}, description="Chat-template variables (e.g. date_string), saved with the model and "
        "used identically by evaluate, predict and chat.")
    enable_thinking: bool | None = Field(
        None, description="Qwen3-style templates: false renders an empty think block in the "
        "prompt (for data without reasoning); null: the template's default.")
    template_date: str | None = Field(
        "2026-01-01", description="What the template's strftime_now returns (ISO date), so the "
        "output does not change from day to day; null: today's date.")
    train_on_reasoning: bool = Field(
        True, description="Supervise the reasoning (think block) of assistant turns; false: "
        "the model reads it but is not trained to write it.")
    mask_empty_think: bool = Field(
        False, description="No loss on empty think blocks (turns without reasoning that the "
        "template renders with <think></think>).")
    max_parity_failures: float = Field(
        0.01, ge=0, le=1, description="Quarantine records whose training tokens differ from "
        "inference's; stop if more than this fraction of a split does.")
    num_proc: int = Field(0, ge=0, description="Tokenizer processes (0: one per CPU core).")

    @field_validator("template_date")
    @classmethod
    def _iso_date(cls, value: str | None) -> str | None:
        if value is not None:
            datetime.date.fromisoformat(value)
        return value

    def chat_template_kwargs(self) -> dict:
        """`template_kwargs`, with `enable_thinking` when set."""
        extra = {} if self.enable_thinking is None else {"enable_thinking": self.enable_thinking}
        return {**self.template_kwargs, **extra}


class LoraParams(_Section):
    r: int = Field(16, ge=1, description="LoRA rank.")
    alpha: float = Field(32.0, gt=0, description="LoRA scaling numerator (scale = alpha / r).")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: str | list[str] = Field(
        "all-linear", description="Modules to adapt, or 'all-linear' (every linear but lm_head)."
    )
    bits: Literal[4, 8] = Field(4, description="QLoRA: quantize the frozen base to 4 or 8 bits.")
    merge: bool = Field(
        True, description="Save models/sft as the base with adapters merged (else adapters only)."
    )


class TrainParams(_Section):
    seed: int = Field(42, description="Seed for init, data order and dropout.")
    epochs: float = Field(5.0, gt=0, description="Passes over the training split.")
    max_steps: int = Field(-1, ge=-1, description="Stop after this many optimizer steps (-1: off).")
    per_device_batch_size: int = Field(4, ge=1, description="Micro-batch size per device.")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Micro-batches per step.")
    learning_rate: float = Field(3e-3, gt=0, lt=1, description="Peak learning rate.")
    weight_decay: float = Field(0.01, ge=0, description="AdamW decay (not biases or norms).")
    warmup_ratio: float = Field(0.05, ge=0, lt=1, description="Share of steps warming up.")
    lr_scheduler: Literal["linear", "cosine", "constant_with_warmup"] = Field(
        "cosine", description="Decay after warmup."
    )
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 on capable GPUs, fp16 on older ones, fp32 on CPU."
    )
    packing: Literal["pad", "pack"] = Field(
        "pack", description="Pad batches (grouped by length) or pack rows of max_length."
    )
    loss: Literal["auto", "chunked", "model"] = Field(
        "auto", description="chunked: logits on supervised tokens only; auto: chunked unless "
        "FSDP/ZeRO-3 shard the output layer; model: the model's own loss."
    )
    gradient_checkpointing: bool = Field(False, description="Recompute activations.")
    method: Literal["full", "lora", "qlora"] = Field(
        "full", description="Train all weights, LoRA adapters, or LoRA on a quantized base."
    )
    lora: LoraParams = Field(default_factory=LoraParams, description="LoRA/QLoRA settings.")
    eval_steps: int = Field(200, ge=1, description="Evaluate every N optimizer steps.")
    select_best: bool = Field(
        True, description="Finish with the checkpoint of lowest eval loss (not the last)."
    )
    early_stopping_patience: int = Field(
        3, ge=0, description="Stop after N evals without improvement (0: off)."
    )
    early_stopping_threshold: float = Field(
        0.0, ge=0, description="Smallest eval-loss decrease that counts as improvement."
    )
    save_steps: int | None = Field(
        None, ge=1, description="Checkpoint (for resume) every N steps (null: at every eval)."
    )
    save_total_limit: int = Field(2, ge=1, description="Complete checkpoints kept (plus the best).")
    keep_checkpoints: bool = Field(
        False, description="Keep models/checkpoints after a successful run (else emptied)."
    )
    logging_steps: int = Field(1, ge=1, description="Log every N optimizer steps.")
    distributed: Literal["none", "ddp", "fsdp", "zero2", "zero3_offload"] = Field(
        "none", description="Launch with configs/accelerate/<name>.yaml (multi-GPU)."
    )
    num_processes: int = Field(0, ge=0, description="Processes to launch (0: one per GPU).")
    dataloader_workers: int = Field(0, ge=0, description="DataLoader worker processes.")
    torch_threads: int = Field(0, ge=0, description="CPU threads for torch (0: torch default).")
    neftune_alpha: float | None = Field(
        None, gt=0, description="NEFTune: noise on input embeddings in training, scaled "
        "alpha/sqrt(L*d) per sample (null: off; the paper uses 5-15)."
    )
    report_to: list[Literal["dvclive", "tensorboard", "mlflow", "wandb"]] = Field(
        ["dvclive"], description="Trackers (dvclive is always on); run name: $DVC_EXP_NAME."
    )

    @field_validator("save_steps")
    @classmethod
    def _checkpoints_at_evals(cls, value: int | None, info: ValidationInfo) -> int | None:
        d = info.data
        best = d.get("select_best") or d.get("early_stopping_patience")
        if value is not None and best and "eval_steps" in d and value % d["eval_steps"]:
            raise ValueError(
                f"must be a multiple of eval_steps ({d['eval_steps']}) when select_best or "
                "early_stopping_patience is on, so that the best checkpoint is saved"
            )
        return value

    def checkpoint_steps(self) -> int:
        return self.save_steps or self.eval_steps


class GenerationParams(_Section):
    batch_size: int = Field(32, ge=1, description="Prompts per generation batch (left-padded).")
    max_new_tokens: int = Field(64, ge=1, description="Longest reply, in tokens.")
    do_sample: bool = Field(False, description="Sample instead of greedy decoding.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature (do_sample only).")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass (do_sample only).")
    top_k: int = Field(0, ge=0, description="Top-k sampling (0: off; do_sample only).")
    repetition_penalty: float = Field(1.0, gt=0, description="1.0 means no penalty.")
    seed: int = Field(0, description="Seed for sampling (the same seed gives the same replies).")


class EvaluateParams(_Section):
    generation: GenerationParams = Field(
        default_factory=GenerationParams, description="Decoding of the test replies."
    )
    max_samples: int | None = Field(
        None, ge=1, description="Generate for at most N test prompts (perplexity uses all)."
    )
    bleu_style: Literal["corpus", "llamafactory"] = Field(
        "corpus", description="Corpus BLEU/ROUGE (default) or LLaMA-Factory's averaged "
        "character BLEU and jieba ROUGE, to compare with its numbers."
    )
    compare_base: bool = Field(True, description="Also score the untrained base model.")


class HardestParams(_Section):
    samples: int = Field(20, ge=1, description="Training conversations of highest loss under "
                         "the final model shown in metrics/hardest.{md,jsonl}.")


class PredictParams(_Section):
    input: str = Field("data/predict.jsonl", description="ChatML prompts ending with a user turn.")
    generation: GenerationParams = Field(
        default_factory=GenerationParams, description="Decoding of the replies."
    )
    strict: bool = Field(
        False, description="Fail (exit 1) when any prompt gets an error line instead of a reply."
    )


class Params(_Section):
    data: DataParams = Field(default_factory=DataParams)
    model: ModelParams = Field(default_factory=ModelParams)
    tokenize: TokenizeParams = Field(default_factory=TokenizeParams)
    train: TrainParams = Field(default_factory=TrainParams)
    evaluate: EvaluateParams = Field(default_factory=EvaluateParams)
    hardest: HardestParams = Field(default_factory=HardestParams)
    predict: PredictParams = Field(default_factory=PredictParams)


# Keys of earlier versions, and why they went (an old params.yaml names them).
REMOVED = {"tokenize.ignore_index": "removed: the label of unsupervised tokens is always -100 "
           "(chatsft.batching.packing.IGNORE), what PyTorch's loss ignores"}


def _describe(err: ValidationError, path: str) -> str:
    lines = [f"{path}: invalid parameters"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            lines.append(f"  {key}: " + REMOVED.get(key, "unknown key"))
        else:
            lines.append(f"  {key}: {e['msg']} (got {e.get('input')!r})")
    return "\n".join(lines)


def parse_params(raw: dict, path: str = "params.yaml") -> Params:
    """Validate a params mapping; raise ParamsError naming each bad key."""
    try:
        return Params.model_validate(raw or {})
    except ValidationError as err:
        raise ParamsError(_describe(err, path)) from None


def load_params(path: str | Path = "params.yaml", overrides: dict | None = None,
                require: Iterable[str] = ()) -> Params:
    """Read and validate params.yaml, with optional nested overrides merged on top.

    `require` names the sections the caller reads: a file without them is an error naming
    them, rather than a silent run on the schema's defaults."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ParamsError(f"{path}: file not found") from None
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping of sections at the top level")
    missing = [name for name in require if name not in raw]
    absent = (f"missing section{'s' * (len(missing) > 1)} {', '.join(missing)} (a stage reads "
              "its sections from the file, not from defaults; see the shipped params.yaml)")
    try:
        params = parse_params(deep_merge(raw, overrides or {}), str(path))
    except ParamsError as err:
        if missing:  # a misspelt section name is both unknown and missing
            raise ParamsError(f"{err}\n  {absent}") from None
        raise
    if missing:
        raise ParamsError(f"{path}: {absent}")
    return params


def deep_merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def default_params_yaml() -> str:
    """params.yaml with every key at its default. The shipped params.yaml is exactly this text
    (a test checks it): after changing a default, `python -m chatsft.params > params.yaml`."""
    return yaml.safe_dump(Params().model_dump(), sort_keys=False, allow_unicode=True)


if __name__ == "__main__":
    print(default_params_yaml(), end="")
