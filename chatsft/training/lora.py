"""LoRA and QLoRA with peft: wrap the model, save adapters, merge them into a full model."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from chatsft.errors import UserError
from chatsft.logs import peft_deprecations_silenced
from chatsft.model.load import ModelLoadError, base_info, load_model
from chatsft.params import LoraParams, TrainParams

ADAPTER_DIR = "adapter"  # inside the output model directory


class LoraError(UserError):
    """LoRA/QLoRA cannot run as configured."""


def check_quantization(bits: int) -> None:
    """QLoRA needs bitsandbytes, and bitsandbytes needs a CUDA GPU: say so before loading."""
    if not torch.cuda.is_available():
        raise LoraError(
            f"train.method=qlora loads the base model in {bits}-bit with bitsandbytes, which "
            "needs a CUDA GPU, and none is available. Use train.method=lora (or full) on CPU."
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise LoraError(
            "train.method=qlora needs bitsandbytes: pip install 'bitsandbytes>=0.45'"
        )


def load_quantized(base_dir: str | Path, bits: int, compute_dtype: torch.dtype,
                   trust_remote_code: bool = False):
    """The base model with its linear layers quantized to 4-bit NF4 or 8-bit, ready for
    k-bit training (norms in fp32, inputs requiring grad)."""
    check_quantization(bits)
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    if bits == 4:
        quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                   bnb_4bit_use_double_quant=True,
                                   bnb_4bit_compute_dtype=compute_dtype)
    else:
        quant = BitsAndBytesConfig(load_in_8bit=True)
    info = base_info(base_dir)
    source = info.get("weights_from") or str(base_dir)
    kwargs = {"revision": info["revision"]} if info.get("weights_from") else {}
    try:
        model = AutoModelForCausalLM.from_pretrained(
            source, quantization_config=quant, dtype=compute_dtype, use_safetensors=True,
            trust_remote_code=trust_remote_code, **kwargs)
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"{source}: cannot load the quantized model: {err}") from None
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)


def base_reference(base_dir: str | Path) -> tuple[str, str | None]:
    """Where an adapter's base model is, valid from any working directory: the hub id and
    pinned revision `base.json` records, else the absolute path of the base directory (peft
    would record the path as it was given, such as `models/base`)."""
    info = base_info(base_dir)
    source = info.get("weights_from")
    if not source:
        return str(Path(base_dir).resolve()), None
    if Path(source).is_dir():  # a local directory: from_pretrained ignores revisions there
        return str(Path(source).resolve()), None
    return source, info.get("revision")


def apply_lora(model, lora: LoraParams, gradient_checkpointing: bool,
               base: tuple[str, str | None] | None = None,
               new_token_ids: list[int] | None = None):
    """Freeze the model and add trainable LoRA adapters to the target modules; `base` is
    what the saved adapter config records as its base model (name or path, revision). The
    embedding rows of tokens the chat template added (`new_token_ids`) train too (peft's
    trainable tokens: only those rows, saved with the adapter), or they would stay at their
    init."""
    from peft import LoraConfig, get_peft_model

    if gradient_checkpointing:
        # Frozen embeddings give checkpointed blocks inputs without grad; make them require
        # it so the adapters inside still get gradients.
        model.enable_input_require_grads()
    config = LoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
        target_modules=lora.target_modules, bias="none", task_type="CAUSAL_LM",
        trainable_token_indices=new_token_ids or None,
    )
    try:
        with peft_deprecations_silenced():
            peft_model = get_peft_model(model, config)
    except ValueError as err:  # e.g. a target module name that matches nothing
        raise LoraError(f"train.lora.target_modules={lora.target_modules!r}: {err}") from None
    if base is not None:
        saved = peft_model.peft_config["default"]
        saved.base_model_name_or_path, saved.revision = base
    return peft_model


def prepare_model(base_dir: str | Path, params: TrainParams, dtype: str,
                  device_map: str | None, precision: str, attn_implementation: str = "auto",
                  trust_remote_code: bool = False):
    """The model to train for train.method: full, lora or qlora."""
    if params.method == "qlora":
        compute = torch.float16 if precision == "fp16" else torch.bfloat16
        model = load_quantized(base_dir, params.lora.bits, compute, trust_remote_code)
    else:
        model = load_model(base_dir, dtype, device_map, attn_implementation,
                           trust_remote_code=trust_remote_code)
    if params.method == "full":
        return model
    return apply_lora(model, params.lora, params.gradient_checkpointing,
                      base_reference(base_dir), base_info(base_dir).get("added_token_ids"))


def merge_adapter(base_dir: str | Path, adapter_dir: Path, dtype: str, out_dir: Path,
                  trust_remote_code: bool = False) -> None:
    """Load the base unquantized, apply the saved adapter, merge it, save a full model."""
    from peft import PeftModel

    base = load_model(base_dir, dtype, trust_remote_code=trust_remote_code)
    with peft_deprecations_silenced():
        merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(out_dir)
