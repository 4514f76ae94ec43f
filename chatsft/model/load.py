"""The starting model: a tiny Qwen2 built from scratch (`chatsft.model.scratch`), or any
causal LM from the hub or disk.

`models/base/` always holds a tokenizer with a chat template and a `base.json` saying where
the weights come from; scratch weights are saved there, hub weights are loaded by pinned
revision rather than copied (a 72B checkpoint should not be duplicated into the pipeline).

`model.chat_template` gives a base checkpoint (no template of its own) one: a built-in
(`chatsft.builtin_templates`) or a `.jinja` file. Control tokens the template writes and the
tokenizer lacks (ChatML's `<|im_start|>` on Llama) are added as special tokens; `base.json`
records their ids, and `load_model` grows the embeddings to fit them, each new row (input and
output) the mean of the existing token rows: a neutral start that trains like the others.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import torch
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from safetensors import safe_open
from tokenizers import (
    AddedToken,
)
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    PreTrainedTokenizerBase,
)

from chatsft import builtin_templates
from chatsft.chat_template.encoder import ChatEncoder
from chatsft.errors import UserError
from chatsft.io import atomic_path, read_jsonl, write_json
from chatsft.logs import loading_bar_for
from chatsft.model.attention import NAME as VARLEN_SDPA
from chatsft.model.attention import supports_varlen_sdpa
from chatsft.model.scratch import (
    CHATML_TEMPLATE,
    build_scratch_model,
    tokenizer_texts,
    train_tokenizer,
)
from chatsft.params import ModelParams


class ModelLoadError(UserError):
    """The model or tokenizer cannot be loaded; the message says which and why."""


class NonFiniteError(UserError):
    """A loss, gradient norm or weight is NaN or infinite."""


BUILTIN_TEMPLATES = {"chatml": CHATML_TEMPLATE, "llama3": builtin_templates.LLAMA31_TEMPLATE,
                     "qwen2.5": builtin_templates.QWEN25_TEMPLATE}


def chat_template_source(choice: str, tokenizer: PreTrainedTokenizerBase, where: str) -> str:
    """The template `model.chat_template` names: the tokenizer's own (auto), a built-in, or
    the text of a .jinja file."""
    if choice == "auto":
        if not tokenizer.chat_template:
            raise ModelLoadError(
                f"{where}: the tokenizer has no chat template (a base checkpoint?); set "
                f"model.chat_template to one of {', '.join(BUILTIN_TEMPLATES)} or a .jinja file")
        return tokenizer.get_chat_template()
    if choice in BUILTIN_TEMPLATES:
        return BUILTIN_TEMPLATES[choice]
    path = Path(choice)
    if path.suffix != ".jinja" or not path.is_file():
        raise ModelLoadError(f"model.chat_template={choice!r}: not auto, a built-in "
                             f"({', '.join(BUILTIN_TEMPLATES)}) or an existing .jinja file")
    return path.read_text(encoding="utf-8")


def apply_chat_template_choice(tokenizer: PreTrainedTokenizerBase, choice: str, where: str
                               ) -> list[int]:
    """Set the chosen template on the tokenizer and add the control tokens it writes that
    the tokenizer lacks; returns the new tokens' ids."""
    source = chat_template_source(choice, tokenizer, where)
    vocab = tokenizer.get_vocab()
    missing = [t for t in builtin_templates.template_specials(source) if t not in vocab]
    if missing:
        tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in missing],
                             special_tokens=True)
    tokenizer.chat_template = source
    return tokenizer.convert_tokens_to_ids(missing)


def grow_embeddings(model, new_ids: list[int], old_vocab: int) -> None:
    """Make room for the token ids the chat template added (`apply_chat_template_choice`),
    each new input and output row the mean of the first `old_vocab` rows."""
    need = max(new_ids) + 1
    if model.get_input_embeddings().weight.shape[0] < need:
        model.resize_token_embeddings(need, mean_resizing=False)
    with torch.no_grad():
        for layer in {id(m): m for m in (model.get_input_embeddings(),
                                         model.get_output_embeddings()) if m is not None}.values():
            layer.weight[new_ids] = layer.weight[:old_vocab].float().mean(0).to(
                layer.weight.dtype)


def check_model_source(name_or_path: str) -> None:
    """A local directory must exist and hold safetensors weights; anything else must be a
    hub id. Says so before transformers does, with a message about the real problem (its
    own, for a missing directory, is "Repo id must be in the form ...")."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not any(path.glob("*.safetensors")) and any(path.glob("pytorch_model*.bin")):
            raise ModelLoadError(
                f"{name_or_path}: holds only pytorch_model.bin (a pickle, which can run code "
                "when loaded); chatsft loads safetensors only: convert with `python -c \"from "
                "transformers import AutoModelForCausalLM as M; M.from_pretrained('"
                f"{name_or_path}', use_safetensors=False).save_pretrained('"
                f"{name_or_path}-safetensors')\"` if you trust the file, and use that folder")
        return
    if path.exists():
        raise ModelLoadError(f"{name_or_path}: not a model directory (a file)")
    try:
        validate_repo_id(name_or_path)
    except HFValidationError:
        raise ModelLoadError(f"{name_or_path}: no such model directory (and not a hub id "
                             "such as Qwen/Qwen2.5-0.5B-Instruct)") from None


def load_pretrained_tokenizer(params: ModelParams) -> tuple[PreTrainedTokenizerBase, str]:
    """Tokenizer of a hub id or local directory, and the resolved revision (commit)."""
    check_model_source(params.name_or_path)
    try:
        where = {"revision": params.revision, "trust_remote_code": params.trust_remote_code}
        tok = AutoTokenizer.from_pretrained(params.name_or_path, **where)
        config = AutoConfig.from_pretrained(params.name_or_path, **where)
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"model.name_or_path={params.name_or_path!r}: {err}") from None
    if tok.pad_token is None:
        # Our labels come from template spans, never from pad positions, so pad == eos is safe.
        tok.pad_token = tok.eos_token
    revision = getattr(config, "_commit_hash", None) or params.revision
    return tok, revision


def add_chat_eos(model_dir: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    """Add the template's end-of-turn tokens to the saved generation config's eos, so plain
    transformers `generate` stops where a reply ends (a base model's eos is end-of-text)."""
    path = Path(model_dir) / "generation_config.json"
    if not path.is_file():
        return  # an adapter-only output: the base model's config applies
    config = GenerationConfig.from_pretrained(model_dir)
    eos = config.eos_token_id
    current = eos if isinstance(eos, list) else [] if eos is None else [eos]
    ends = sorted(ChatEncoder(tokenizer).end_of_turn_ids().difference(current))
    if ends:
        config.eos_token_id = current + ends
        config.save_pretrained(model_dir)


def attention_implementation(choice: str = "auto", config=None) -> str:
    """`auto`: flash attention 2 on CUDA when flash-attn is installed; on CPU `sdpa_varlen`
    (SDPA per packed sample, chatsft/model/attention.py) for models with full attention in every
    layer; else PyTorch SDPA (a block-diagonal mask on packed rows). Each keeps packed samples
    apart."""
    if choice != "auto":
        return choice
    if torch.cuda.is_available():
        return "flash_attention_2" if importlib.util.find_spec("flash_attn") else "sdpa"
    return VARLEN_SDPA if config is not None and supports_varlen_sdpa(config) else "sdpa"


BASE_INFO = "base.json"  # in models/base: where the weights are (see prepare_base)


def base_info(model_dir: str | Path) -> dict:
    """What `prepare_base` recorded in `model_dir` ({} for a directory it did not write, such
    as models/sft or any saved model)."""
    path = Path(model_dir) / BASE_INFO
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def load_model(base_dir: str | Path, dtype: str = "float32", device_map: str | None = None,
               attn_implementation: str = "auto", *, trust_remote_code: bool = False):
    """Load the model `models/base` (or a trained `models/sft`) refers to, safetensors only.

    `trust_remote_code` comes from the user's params or flags of this invocation, never from
    the model folder: a downloaded folder must not be able to switch on its own code.
    """
    base_dir = Path(base_dir)
    existing_dir(base_dir)
    info = base_info(base_dir)
    source = info.get("weights_from") or str(base_dir)
    where = {"trust_remote_code": trust_remote_code}
    if info.get("weights_from"):
        check_model_source(source)
        where["revision"] = info.get("revision")
    kwargs = {
        "dtype": "auto" if dtype == "auto" else getattr(torch, dtype),
        "use_safetensors": True,
        **where,
    }
    if device_map:
        kwargs["device_map"] = device_map
    try:
        # Only `auto` looks at the architecture (sliding windows rule out sdpa_varlen).
        config = AutoConfig.from_pretrained(_config_source(source), **where) if (
            attn_implementation == "auto") else None
        kwargs["attn_implementation"] = attention_implementation(attn_implementation, config)
        with loading_bar_for(source):
            model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"{source}: cannot load the model: {err}") from None
    if info.get("added_token_ids") and info.get("weights_from"):
        grow_embeddings(model, info["added_token_ids"], info["vocab_before_template"])
    return model


def _config_source(source: str) -> str:
    """Where the model's config lives: an unmerged LoRA adapter's is its base model's."""
    adapter = Path(source) / "adapter_config.json"
    return json.loads(adapter.read_text())["base_model_name_or_path"] if adapter.is_file() \
        else source


def existing_dir(path: str | Path) -> Path:
    """`path`, which must be an existing directory (models/base, models/sft, --model-path)."""
    path = Path(path)
    if not path.is_dir():
        raise ModelLoadError(f"{path}: no such model directory")
    return path


def load_tokenizer(path: str | Path, *, trust_remote_code: bool = False
                   ) -> PreTrainedTokenizerBase:
    """The tokenizer saved in a model directory; remote code only when the user asks for it
    in this invocation (see `load_model`)."""
    try:
        return AutoTokenizer.from_pretrained(str(existing_dir(path)),
                                             trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"{path}: cannot load the tokenizer: {err}") from None


def check_finite_files(directory: str | Path, what: str) -> None:
    """Refuse a model whose saved weights hold NaN or infinity (a diverged run, a corrupted
    file): every stage checks what it wrote before renaming it into place. Reads the
    safetensors files one tensor at a time, so any model size fits in memory."""
    for file in sorted(Path(directory).rglob("*.safetensors")):
        with safe_open(file, framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 (safe_open has no __iter__)
                tensor = f.get_tensor(name)
                if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                    raise NonFiniteError(
                        f"{what}: weight {name} holds NaN or infinite values; the model was "
                        "not saved (training diverged, or its input model is corrupted)")


def make_readable(folder: str | Path) -> None:
    """Give `folder` and everything in it the permissions the umask allows (usually 0755 and
    0644), as a plain write would: safetensors writes weights 0600 and a temporary folder is
    0700, which would hide a model in a shared folder from its other users."""
    umask = os.umask(0)
    os.umask(umask)
    folder = Path(folder)
    for path in [folder, *folder.rglob("*")]:
        if not path.is_symlink():
            path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def prepare_base(params: ModelParams, train_split: str | Path, out_dir: str | Path) -> dict:
    """Write the starting point to `out_dir` atomically and return what `base.json` records.

    scratch: a tokenizer trained on the training split's texts and a new Qwen2 model. Otherwise
    only the tokenizer and a pinned reference (hub id or directory, resolved revision): the
    weights are read from there at train time rather than copied.
    """
    with atomic_path(out_dir, is_dir=True) as tmp:
        if params.name_or_path == "scratch":
            tokenizer = train_tokenizer(tokenizer_texts(read_jsonl(train_split)),
                                        params.scratch.vocab_size,
                                        params.scratch.max_position_embeddings)
            apply_chat_template_choice(tokenizer, params.chat_template, "scratch")
            model = build_scratch_model(tokenizer, params.scratch)
            model.save_pretrained(tmp)
            check_finite_files(tmp, str(out_dir))
            info = {"name_or_path": "scratch", "parameters": model.num_parameters(),
                    "vocab_size": len(tokenizer)}
        else:
            tokenizer, revision = load_pretrained_tokenizer(params)
            before = len(tokenizer)
            added = apply_chat_template_choice(tokenizer, params.chat_template,
                                               params.name_or_path)
            # No trust_remote_code here: it is read from the user's params at each load.
            info = {"name_or_path": params.name_or_path, "weights_from": params.name_or_path,
                    "revision": revision}
            if added:
                info |= {"added_token_ids": added, "vocab_before_template": before}
        tokenizer.save_pretrained(tmp)
        write_json(tmp / BASE_INFO, info)
        make_readable(tmp)
    return info
