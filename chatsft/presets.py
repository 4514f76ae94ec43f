"""Recommended settings for Qwen2.5 and Llama-3 sizes, each for a stated GPU budget, with
the per-GPU memory estimate behind it.

Memory model (per GPU, bytes; P = parameters, N = GPUs, b x s = tokens per micro-batch):
- full fine-tuning in mixed precision with AdamW: 16 bytes per parameter (weights and
  gradients, fp32 master weights, two fp32 moments). Plain/DDP: 16P; ZeRO-2: 2P + 14P/N;
  FSDP (full shard): 16P/N; ZeRO-3 with CPU offload: parameters and optimizer in CPU RAM,
  the GPU holds at most DeepSpeed's stage3_max_live_parameters (1e9) gathered, in bf16.
- LoRA: the frozen base in bf16 (2P) plus 16 bytes per adapter parameter. QLoRA: linear
  layers in 4-bit NF4 with double quantization (~4.13 bits); embeddings and output layer
  stay unquantized, in fp32 after peft's k-bit preparation.
- activations with gradient checkpointing: each layer's input kept (2 b s h per layer) plus
  one layer recomputed at a time (34 b s h, Korthikanti et al. 2022 without the attention
  matrix, which SDPA/flash attention never materializes); without checkpointing 34 b s h
  per layer.
- loss: chatsft's chunked loss keeps at most 2^25 logits (fp32, three buffers); the model's
  own loss (FSDP, ZeRO-3) keeps the logits of the micro-batch: b s V x 10 bytes.
- 10% allocator overhead plus 1 GB for the CUDA context.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from pydantic import Field

from chatsft.params import DataParams, ModelParams, TokenizeParams, TrainParams

GB = 1e9


@dataclass(frozen=True)
class Architecture:
    vocab: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    tied: bool
    qkv_bias: bool

    def parameters(self) -> int:
        head_dim = self.hidden // self.heads
        kv = self.kv_heads * head_dim
        attention = 2 * self.hidden * self.hidden + 2 * self.hidden * kv
        if self.qkv_bias:
            attention += self.hidden + 2 * kv
        layer = attention + 3 * self.hidden * self.intermediate + 2 * self.hidden
        return self.embedding_parameters() + self.layers * layer + self.hidden

    def embedding_parameters(self) -> int:
        return self.vocab * self.hidden * (1 if self.tied else 2)

    def lora_parameters(self, r: int) -> int:
        """Adapters on every linear layer of every block (target_modules: all-linear)."""
        kv = self.kv_heads * self.hidden // self.heads
        h, i = self.hidden, self.intermediate
        shapes = [(h, h), (h, kv), (h, kv), (h, h), (h, i), (h, i), (i, h)]
        return self.layers * sum(r * (a + b) for a, b in shapes)


QWEN = dict(tied=False, qkv_bias=True)
LLAMA = dict(vocab=128256, tied=False, qkv_bias=False)
ARCHITECTURES = {
    "qwen2.5-0.5b": Architecture(151936, 896, 24, 14, 2, 4864, tied=True, qkv_bias=True),
    "qwen2.5-1.5b": Architecture(151936, 1536, 28, 12, 2, 8960, tied=True, qkv_bias=True),
    "qwen2.5-7b": Architecture(152064, 3584, 28, 28, 4, 18944, **QWEN),
    "qwen2.5-14b": Architecture(152064, 5120, 48, 40, 8, 13824, **QWEN),
    "qwen2.5-32b": Architecture(152064, 5120, 64, 40, 8, 27648, **QWEN),
    "qwen2.5-72b": Architecture(152064, 8192, 80, 64, 8, 29568, **QWEN),
    "llama-3-8b": Architecture(hidden=4096, layers=32, heads=32, kv_heads=8,
                               intermediate=14336, **LLAMA),
    "llama-3-70b": Architecture(hidden=8192, layers=80, heads=64, kv_heads=8,
                                intermediate=28672, **LLAMA),
}


@dataclass(frozen=True)
class Preset:
    name: str
    model: str  # hub id of the instruct model
    gpus: int
    gpu_memory_gb: int
    method: str  # full | lora | qlora
    learning_rate: float
    batch: int  # per device
    accumulation: int
    max_length: int
    distributed: str = "none"
    gradient_checkpointing: bool = True
    lora_r: int = 16
    epochs: float = 3.0
    note: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def arch(self) -> Architecture:
        return ARCHITECTURES[self.name]

    def overrides(self) -> dict:
        """The params.yaml values this preset sets (nested)."""
        lora = self.method != "full"
        train = {
            "method": self.method, "learning_rate": self.learning_rate, "epochs": self.epochs,
            "per_device_batch_size": self.batch, "gradient_accumulation_steps": self.accumulation,
            "gradient_checkpointing": self.gradient_checkpointing, "precision": "auto",
            "distributed": self.distributed, "warmup_ratio": 0.03, "lr_scheduler": "cosine",
            "weight_decay": 0.0 if lora else 0.01, "eval_steps": 100,
            "logging_steps": 5,
        }
        if lora:
            train["lora"] = {"r": self.lora_r, "alpha": 2.0 * self.lora_r, "dropout": 0.05,
                             "target_modules": "all-linear"}
        return {
            # Full fine-tuning keeps fp32 master weights (bf16 autocast); LoRA freezes a
            # bf16 base.
            "model": {"name_or_path": self.model, "dtype": "bfloat16" if lora else "float32"},
            "tokenize": {"max_length": self.max_length},
            "train": train,
        }


PRESETS = {p.name: p for p in [
    Preset("qwen2.5-0.5b", "Qwen/Qwen2.5-0.5B-Instruct", 1, 24, "full", 1e-5, 8, 4, 2048),
    Preset("qwen2.5-1.5b", "Qwen/Qwen2.5-1.5B-Instruct", 1, 40, "full", 1e-5, 4, 8, 2048),
    Preset("qwen2.5-7b", "Qwen/Qwen2.5-7B-Instruct", 8, 80, "full", 1e-5, 4, 2, 4096,
           distributed="zero2"),
    Preset("qwen2.5-14b", "Qwen/Qwen2.5-14B-Instruct", 8, 80, "full", 7e-6, 2, 4, 4096,
           distributed="fsdp"),
    Preset("qwen2.5-32b", "Qwen/Qwen2.5-32B-Instruct", 1, 48, "qlora", 1e-4, 1, 16, 2048,
           lora_r=16, epochs=2.0),
    Preset("qwen2.5-72b", "Qwen/Qwen2.5-72B-Instruct", 1, 80, "qlora", 1e-4, 1, 16, 2048,
           lora_r=16, epochs=2.0),
    Preset("llama-3-8b", "meta-llama/Meta-Llama-3-8B-Instruct", 2, 24, "full", 1e-5, 1, 32,
           2048, distributed="zero3_offload",
           note="needs ~150 GB of CPU RAM for the offloaded weights and optimizer state"),
    Preset("llama-3-70b", "meta-llama/Meta-Llama-3-70B-Instruct", 1, 80, "qlora", 1e-4, 1,
           16, 2048, lora_r=16, epochs=2.0),
]}


class PresetError(ValueError):
    pass


def get(name: str) -> Preset:
    try:
        return PRESETS[name.lower()]
    except KeyError:
        raise PresetError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}") from None


def estimate_memory(p: Preset) -> dict[str, float]:
    """Per-GPU peak memory in GB, by component (see the module docstring)."""
    parts = memory_parts(p, p.arch)
    total = 1.1 * sum(parts.values()) + 1 * GB
    return {k: round(v / GB, 1) for k, v in parts.items()} | {"total": round(total / GB, 1)}


def memory_parts(p: Preset, a: Architecture) -> dict[str, float]:
    """The memory model's components in bytes, before allocator overhead and CUDA context,
    for the recipe `p` on the architecture `a` (benchmarks/preset_memory.py measures them on
    scaled-down architectures)."""
    params, n = a.parameters(), p.gpus
    if p.method == "full":
        weights = {"none": 16 * params, "ddp": 16 * params, "zero2": 2 * params + 14 * params / n,
                   "fsdp": 16 * params / n, "zero3_offload": 0.0}[p.distributed]
        if p.distributed == "zero3_offload":
            # Gathered parameters: at most DeepSpeed's stage3_max_live_parameters (1e9), bf16.
            weights = 2 * min(params, 1e9)
        adapters = 0.0
    else:
        embed = a.embedding_parameters()
        if p.method == "lora":
            weights = 2.0 * params
        else:  # peft's k-bit preparation keeps the unquantized embeddings in fp32
            weights = 4.13 / 8 * (params - embed) + 4.0 * embed
        adapters = 16.0 * a.lora_parameters(p.lora_r)
    tokens = p.batch * p.max_length
    per_layer = 34 * tokens * a.hidden
    if p.gradient_checkpointing:
        activations = 2 * tokens * a.hidden * a.layers + per_layer
    else:
        activations = per_layer * a.layers
    chunked = p.distributed not in ("fsdp", "zero3_offload")
    loss = 3 * 4 * min(2**25, tokens * a.vocab) if chunked else 10 * tokens * a.vocab
    return {"weights_grads_optimizer": weights, "adapters": adapters,
            "activations": activations, "loss": loss}


class DataSection(DataParams):
    """What to train on: the clean stage's sources plus the tokenize settings."""

    tokenize: TokenizeParams = Field(default_factory=TokenizeParams,
                                     description="Tokenization (max_length, train_on).")


class Sections(NamedTuple):
    model: ModelParams
    data: DataSection
    training: TrainParams


def get_preset(name: str, data_path: str | None = None) -> Sections:
    """The model, data and training sections of a preset (chatsft's params types)."""
    o = get(name).overrides()
    data = DataSection(tokenize=TokenizeParams(**o["tokenize"]))
    if data_path:
        data = data.model_copy(update={"raw": [data_path]})
    return Sections(ModelParams(**o["model"]), data, TrainParams(**o["train"]))


def flatten(d: dict, prefix: str = "") -> dict[str, object]:
    out = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out |= flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def dvc_command(p: Preset) -> list[str]:
    """`dvc exp run -S key=value ...` applying the preset to an experiment."""
    args = ["dvc", "exp", "run", "-n", p.name]
    for key, value in flatten(p.overrides()).items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        args += ["-S", f"{key}={text}"]
    return args
