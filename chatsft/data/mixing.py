"""The training mixture: each source's max_samples, then its weight or its ratio.

Validation and test keep the sources' natural mix (a held-out set measures the data as it
is); only the training split is mixed.

- `weight` repeats a source's training records (a fraction is drawn per record).
- `ratio` sets each source's share of the training split, whose size stays what it would be
  without mixing (the sum of the sources' training records). A source gets its share by
  deterministic sampling: without replacement when it has more records than its share, else
  every record the same whole number of times plus a sample without replacement of the rest,
  so no record is repeated more than once beyond any other of its source.
  `data.ratio_unit: conversations` shares out conversations (exact up to rounding, one
  conversation in the split). `tokens` shares out supervised tokens, which the clean stage
  must estimate, since it runs before any tokenizer exists (the scratch model's tokenizer is
  trained on its output): words, CJK characters, digits and punctuation marks of the
  assistant turns and their tool calls, plus one end-of-turn token per turn. A BPE tokenizer
  splits text differently per language and domain, so the real shares differ by how far the
  sources' tokens-per-estimate differ (measured on the default data in tests/data/
  test_mixing.py). `data.ratio_tokenizer` (a hub id or tokenizer folder: the model's own, for
  a real model) counts with a real tokenizer instead: each assistant turn's text and tool calls
  tokenized, plus one end-of-turn token, which is what a ChatML-style template supervises.

Every draw is seeded by data.seed and the source's path, so the same params and data give
the same split. `mixture_report` is `metrics/clean.json`'s `mixture`: per data.raw entry,
the requested ratio and the achieved share of the training split in both units.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import orjson

from chatsft.config import EPOCH
from chatsft.data.report import SourceReport
from chatsft.errors import UserError
from chatsft.params import DataParams, Source

if TYPE_CHECKING:  # transformers is imported only when a tokenizer counts (load_counter)
    from transformers import PreTrainedTokenizerBase

_CJK = "\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff"
_PIECE = re.compile(rf"[{_CJK}]|[^\W\d_{_CJK}]+|\d|[^\w\s]|_")


@dataclass
class Kept:
    """One cleaned record: its output line, split and file's report."""

    line: bytes
    split: str
    report: SourceReport


@dataclass
class Pool:
    """The kept records of one data.raw entry (all its files)."""

    index: int
    source: Source
    kept: list[Kept] = field(default_factory=list)


def _assistant_texts(line: bytes) -> list[str]:
    """The supervised text of each assistant turn of one record: content and tool calls."""
    out = []
    for m in orjson.loads(line)["messages"]:
        if m["role"] == "assistant":
            calls = m.get("tool_calls")
            out.append(m["content"] + (orjson.dumps(calls).decode() if calls else ""))
    return out


def estimate_tokens(line: bytes) -> int:
    """Estimated supervised tokens of one record (see the module docstring)."""
    return sum(len(_PIECE.findall(text)) + 1 for text in _assistant_texts(line))


def load_counter(name: str) -> PreTrainedTokenizerBase:
    """data.ratio_tokenizer's tokenizer (never remote code: it only counts)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name, trust_remote_code=False)
    except (OSError, ValueError) as e:
        raise UserError(f"data.ratio_tokenizer: cannot load a tokenizer from {name!r} "
                        f"({type(e).__name__}: {str(e).splitlines()[0]})") from None


def count_tokens(lines: list[bytes], tokenizer: PreTrainedTokenizerBase | None) -> list[int]:
    """Supervised tokens of each record: the estimate, or counted by `tokenizer` (one batched
    call; +1 per turn for its end-of-turn token)."""
    if tokenizer is None:
        return [estimate_tokens(x) for x in lines]
    texts = [_assistant_texts(x) for x in lines]
    flat = [t for turns in texts for t in turns]
    lengths = iter(map(len, tokenizer(flat, add_special_tokens=False)["input_ids"]) if flat
                   else [])
    return [sum(next(lengths) + 1 for _ in turns) for turns in texts]


def mix(pools: list[Pool], params: DataParams, splits: dict[str, list[bytes]],
        epochs: int = 1) -> dict:
    """Append every pool's records to `splits`, the training ones as many times as the mixture
    says; count what was left out as unsampled. Returns the mixture report.

    With `epochs` > 1 (data.resample_each_epoch) the training draw is made once per epoch,
    epoch e+1 seeded by `epoch_seed`, and each training line says its epoch (`"epoch":e`, from
    0), which tokenize keeps and train turns into one block of rows per epoch. Epoch 1 is the
    draw made without resampling."""
    train: list[list[Kept]] = []
    for pool in pools:
        kept = _cap(pool, params.seed)
        for k in kept:
            if k.split != "train":
                splits[k.split].append(k.line)
                k.report.written[k.split] += 1
        train.append([k for k in kept if k.split == "train"])
    counter = load_counter(params.ratio_tokenizer) if params.ratio_tokenizer else None
    tokens = [count_tokens([k.line for k in records], counter) for records in train]
    draws = [_draw(pools, train, tokens, params, epoch_seed(params.seed, e))
             for e in range(epochs)]
    for e, copies in enumerate(draws):
        tag = b',"%s":%d}' % (EPOCH.encode(), e) if epochs > 1 else b"}"
        for records, counts in zip(train, copies, strict=True):
            for k, c in zip(records, counts, strict=True):
                splits["train"].extend([k.line[:-1] + tag] * c)
                k.report.written["train"] += c
    for n, records in enumerate(train):
        for i, k in enumerate(records):
            if not any(copies[n][i] for copies in draws):
                k.report.unsampled += 1
                k.report.kept -= 1
    total = [[sum(c) for c in zip(*per_record, strict=True)]
             for per_record in zip(*draws, strict=True)]
    report = mixture_report(pools, total, tokens, params.ratio_unit, params.ratio_tokenizer)
    if epochs > 1:
        report["epochs"] = [
            {"epoch": e + 1, "seed": epoch_seed(params.seed, e)}
            | {"sources": mixture_report(pools, copies, tokens, params.ratio_unit)["sources"]}
            for e, copies in enumerate(draws)]
    return report


def epoch_seed(seed: int, epoch: int) -> str:
    """The seed of an epoch's draw (from 0): the first epoch's is data.seed itself."""
    return str(seed) if epoch == 0 else f"{seed}/epoch{epoch + 1}"


def _draw(pools: list[Pool], train: list[list[Kept]], tokens: list[list[int]],
          params: DataParams, seed: str) -> list[list[int]]:
    """How many copies of each training record one draw (one epoch) takes."""
    if any(p.source.ratio is not None for p in pools):
        return _ratio_copies(pools, train, tokens, params.ratio_unit, seed)
    return [_weight_copies(p.source, len(t), seed) for p, t in zip(pools, train, strict=True)]


def _cap(pool: Pool, seed: int) -> list[Kept]:
    """A random subset of max_samples records (the rest counted as unsampled)."""
    kept, limit = pool.kept, pool.source.max_samples
    if limit is None or len(kept) <= limit:
        return kept
    rng = random.Random(f"{seed}:sample:{pool.source.path}")
    chosen = set(rng.sample(range(len(kept)), limit))
    for i, k in enumerate(kept):
        if i not in chosen:
            k.report.unsampled += 1
            k.report.kept -= 1
    return [k for i, k in enumerate(kept) if i in chosen]


def _weight_copies(source: Source, n: int, seed: str) -> list[int]:
    if source.weight == 1:
        return [1] * n
    rng = random.Random(f"{seed}:weight:{source.path}")
    whole, frac = int(source.weight), source.weight - int(source.weight)
    return [whole + (rng.random() < frac) for _ in range(n)]


def _targets(shares: list[float], total: int) -> list[int]:
    """Whole numbers proportional to `shares` summing to `total` (largest remainders)."""
    exact = [s / sum(shares) * total for s in shares]
    out = [int(x) for x in exact]
    by_remainder = sorted(range(len(exact)), key=lambda i: (out[i] - exact[i], i))
    for i in by_remainder[: total - sum(out)]:
        out[i] += 1
    return out


def _ratio_copies(pools: list[Pool], train: list[list[Kept]], tokens: list[list[int]],
                  unit: str, seed: str) -> list[list[int]]:
    for pool, records in zip(pools, train, strict=True):
        if not records:
            raise UserError(f"data.raw[{pool.index}] ({pool.source.path}): no training records "
                            f"to draw its ratio {pool.source.ratio} from (all are quarantined, "
                            "unsampled or in validation/test)")
    shares = [p.source.ratio for p in pools]
    by_tokens = unit == "tokens"
    sizes = [sum(t) for t in tokens] if by_tokens else [len(r) for r in train]
    out = []
    for pool, size, target, toks in zip(pools, sizes, _targets(shares, sum(sizes)), tokens,
                                        strict=True):
        rng = random.Random(f"{seed}:ratio:{pool.source.path}")
        whole, rest = divmod(target, size)
        copies = [whole] * len(toks)
        if by_tokens:
            # The fewest records of a random order that reach the rest of the target, within
            # half a record's tokens.
            order = rng.sample(range(len(toks)), len(toks))
            got = 0
            for i in order:
                if got + toks[i] / 2 > rest:
                    break
                copies[i] += 1
                got += toks[i]
        else:
            for i in rng.sample(range(len(toks)), rest):
                copies[i] += 1
        out.append(copies)
    return out


def mixture_report(pools: list[Pool], copies: list[list[int]], tokens: list[list[int]],
                   unit: str, counted_by: str | None = None) -> dict:
    """Per source: requested ratio, conversations and supervised tokens got, and their shares
    (`estimated_tokens` are counted by `tokens_counted_by` when that is not the estimate)."""
    convs = [sum(c) for c in copies]
    toks = [sum(c * t for c, t in zip(cs, ts, strict=True)) for cs, ts in zip(copies, tokens,
                                                                               strict=True)]
    sources = {}
    for pool, c, t in zip(pools, convs, toks, strict=True):
        sources[pool.source.path] = {
            "requested": pool.source.ratio,
            "conversations": c,
            "estimated_tokens": t,
            "share_conversations": round(c / max(sum(convs), 1), 6),
            "share_estimated_tokens": round(t / max(sum(toks), 1), 6),
        }
    return {"ratio_unit": unit, "tokens_counted_by": counted_by or "estimate",
            "sources": sources}


def format_mixture(mixture: dict) -> list[str]:
    """One line per source when ratios were asked for (the console summary)."""
    sources = mixture["sources"]
    if all(s["requested"] is None for s in sources.values()):
        return []
    return [f"mixture: {name}: requested {s['requested']:g} of {mixture['ratio_unit']}, got "
            f"{s['share_conversations']:.3f} of conversations, {s['share_estimated_tokens']:.3f}"
            " of estimated supervised tokens" for name, s in sources.items()]
