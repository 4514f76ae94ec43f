"""Command-line flags derived from the params schema (`chatsft.params`).

A flag made from a params key takes its type, choices (a `Literal`), default and help from
the key's field, so the command line cannot drift from params.yaml. `--set KEY=VALUE`
reaches every key; its value is read as YAML, as `dvc exp run -S` does.
"""

from __future__ import annotations

import argparse
import difflib
import types
import typing
from collections.abc import Iterable, Iterator
from typing import Literal

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from chatsft.params import Params, deep_merge

_UNSET = object()


def _is_section(annotation: object) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def params_keys(model: type[BaseModel] = Params, prefix: str = "") -> Iterator[str]:
    """Every leaf key of the schema, dotted (`train.lora.r`)."""
    for name, field in model.model_fields.items():
        if _is_section(field.annotation):
            yield from params_keys(field.annotation, f"{prefix}{name}.")
        else:
            yield prefix + name


def _field(key: str) -> FieldInfo | None:
    """The schema field of a dotted key or section (`train.lora.r`, `train.lora`), or None."""
    model, field = Params, None
    for part in key.split("."):
        field = model.model_fields.get(part) if model else None
        if field is None:
            return None
        model = field.annotation if _is_section(field.annotation) else None
    return field


def is_key(key: str) -> bool:
    """A key or a section of the schema."""
    return _field(key) is not None


def field_of(key: str) -> FieldInfo:
    """The schema field of a dotted key (not a section); KeyError naming it when none."""
    field = _field(key)
    if field is None or _is_section(field.annotation):
        raise KeyError(key)
    return field


def _argparse_kind(annotation: object) -> tuple[type, list | None, bool]:
    """(value type, choices, repeatable) for a field's annotation."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return type(args[0]), list(args), False
    if origin in (types.UnionType, typing.Union) and len(args) == 1:  # X | None
        return _argparse_kind(args[0])
    if origin is list:  # a list of paths (data.raw): one flag per item
        return str, None, True
    if annotation in (int, float, str, bool):
        return annotation, None, False
    raise TypeError(f"no command-line flag for a field of type {annotation}; use --set")


class ArgumentContainer(typing.Protocol):
    """A parser or an argument group."""

    def add_argument(self, *names: str, **kwargs: typing.Any) -> argparse.Action: ...


def add_field_flag(parser: ArgumentContainer, flag: str, field: FieldInfo, dest: str,
                   default: object = _UNSET, text: str | None = None) -> None:
    """One flag for a schema field: its type and choices; `default` replaces the field's
    (None: "not given", for flags that override a params file), `text` its help."""
    default = field.default if default is _UNSET else default
    text = text or field.description or ""
    if default is not None:
        text += f" (default {default})"
    kind, choices, repeat = _argparse_kind(field.annotation)
    if kind is bool:
        parser.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction,
                            default=default, help=text)
    else:
        metavar = "PATH" if repeat else dest.rsplit(".", 1)[-1].upper()
        parser.add_argument(flag, dest=dest, type=kind, choices=choices, default=default,
                            action="append" if repeat else "store",
                            help=text + " (repeatable)" * repeat,
                            metavar=None if choices else metavar)


def add_key_flags(parser: argparse.ArgumentParser, title: str, keys: Iterable[str],
                  names: dict[str, str]) -> None:
    """A flag per params key, default None (not given); named `names[key]`, else after the
    key without its section (`train.lora.r`: --lora-r). Read back with `given_keys`."""
    group = parser.add_argument_group(title)
    for key in keys:
        name = names.get(key) or key.split(".", 1)[1]
        add_field_flag(group, "--" + name.replace("_", "-").replace(".", "-"), field_of(key),
                       dest=key, default=None, text=f"{field_of(key).description} [{key}]")


def given_keys(args: argparse.Namespace, keys: Iterable[str]) -> dict[str, object]:
    """{params key: value} of the flags `add_key_flags` made that were given."""
    return {key: getattr(args, key) for key in keys if getattr(args, key, None) is not None}


class SetAction(argparse.Action):
    """`--set KEY=VALUE` (repeatable): KEY any params key (or section, VALUE then a mapping
    merged into it), VALUE read as YAML. An unknown key is a usage error naming it (with the
    nearest key); the value is checked later, with everything else, by the schema."""

    def __call__(self, parser, namespace, value, option_string=None) -> None:
        key, sep, text = value.partition("=")
        key = key.strip()
        if not sep:
            parser.error(f"{option_string} {value}: expected KEY=VALUE, e.g. "
                         "train.warmup_ratio=0.1")
        if not is_key(key):
            near = difflib.get_close_matches(key, list(params_keys()), n=1)
            parser.error(f"{option_string} {value}: unknown params key {key!r}"
                         + (f" (did you mean {near[0]}?)" if near else ""))
        try:
            parsed = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError as err:
            parser.error(f"{option_string} {value}: the value is not valid YAML: {err}")
        setattr(namespace, self.dest, [*(getattr(namespace, self.dest, None) or []),
                                       (key, parsed)])


def add_set_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", dest="set", action=SetAction, metavar="KEY=VALUE", default=[],
                        help="set any params key, e.g. --set train.warmup_ratio=0.1 --set "
                        "train.lora.target_modules=[q_proj,v_proj] (YAML values, as `dvc exp "
                        "run -S`); applied after the other flags; repeatable")


def nested(assignments: Iterable[tuple[str, object]]) -> dict:
    """[("train.lora.r", 8)] -> {"train": {"lora": {"r": 8}}}; each assignment merges into
    the earlier ones ([("train.lora", {"r": 8}), ("train.lora.alpha", 16)] sets both)."""
    out: dict = {}
    for key, value in assignments:
        for part in reversed(key.split(".")):
            value = {part: value}
        out = deep_merge(out, value)
    return out
