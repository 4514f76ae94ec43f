"""Blind A/B comparison of two models' replies: the pairs, the votes file, the summary, and the
export of votes as preference data for TRL's DPO trainer.

Each side is a model directory (its replies are generated here, greedy, with the training
encoding) or a predictions file: the evaluate stage's `metrics/eval_predictions.jsonl`
(`prompt`, `prediction`, `reference`) or `chatsft predict` output (`messages`, `reply`). Pairs
are matched by prompt. Votes are appended to a JSONL file and flushed to disk as they are cast,
each with the prompt and both replies, so a crash loses nothing, a restart skips what was
voted, and the file alone is enough to export preferences.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

from chatsft.errors import UserError
from chatsft.io import read_jsonl, write_jsonl

CHOICES = ("a", "b", "tie", "both_bad")


@dataclass
class Pair:
    id: str
    prompt: list[dict]
    reference: str | None
    replies: dict[str, str]  # {"a": ..., "b": ...}
    scores: dict[str, dict] | None = None  # {"a": {"bleu4", "rougeL"}, "b": ...} vs reference

    @property
    def left(self) -> str:
        """The side shown on the left: random per pair, and the same after a reload."""
        return "a" if hashlib.sha256(f"left:{self.id}".encode()).digest()[0] % 2 else "b"


def prompt_key(prompt: list[dict]) -> str:
    return json.dumps(prompt, ensure_ascii=False, sort_keys=True)


def pair_id(prompt: list[dict], a: str, b: str) -> str:
    return hashlib.sha256(json.dumps([prompt, a, b], ensure_ascii=False, sort_keys=True
                                     ).encode()).hexdigest()[:16]


def read_predictions(path: str) -> dict[str, tuple[list[dict], str, str | None]]:
    """{prompt key: (prompt, reply, reference)} from an evaluate or predict output file."""
    out = {}
    for n, row in enumerate(read_jsonl(path), start=1):
        if "prediction" in row and "prompt" in row:
            prompt, reply, ref = row["prompt"], row["prediction"], row.get("reference")
        elif "reply" in row and "messages" in row:
            prompt, reply, ref = row["messages"], row["reply"], None
        else:
            raise UserError(f"{path}: line {n}: a predictions row needs prompt+prediction "
                            "(metrics/eval_predictions.jsonl) or messages+reply "
                            "(chatsft predict)")
        out[prompt_key(prompt)] = (prompt, reply, ref)
    return out


def load_references(path: str) -> list[tuple[list[dict], str | None]]:
    """(prompt, reference) per record of a data file: a record ending with an assistant turn
    gives everything before it and that turn (the test split); one ending with a user turn
    is a prompt without reference."""
    from chatsft.evaluation.run import split_prompt
    from chatsft.inference.predict import load_prompts

    prompts = load_prompts(path, with_reply=True)
    bad = next((p for p in prompts if p.error), None)
    if bad is not None:
        raise UserError(f"{bad.where}: {bad.error}")
    return [split_prompt(p.messages) if p.messages[-1]["role"] == "assistant"
            else (p.messages, None) for p in prompts]


def build_pairs(side_a: dict[str, tuple], side_b: dict[str, tuple],
                data: list[tuple[list[dict], str | None]] | None = None) -> list[Pair]:
    """Pairs of the prompts both sides answered (in `data`'s order when given, else a's)."""
    refs = {prompt_key(p): r for p, r in data} if data is not None else {}
    keys = [prompt_key(p) for p, _ in data] if data is not None else list(side_a)
    pairs = []
    for k in keys:
        if k in side_a and k in side_b:
            prompt, a, ref = side_a[k]
            b, ref_b = side_b[k][1], side_b[k][2]
            pairs.append(Pair(pair_id(prompt, a, b), prompt, refs.get(k) or ref or ref_b,
                              {"a": a, "b": b}))
    if not pairs:
        raise UserError("the two sides have no prompt in common")
    return pairs


def add_scores(pairs: list[Pair]) -> None:
    """Sentence BLEU-4 and ROUGE-L of each side against the reference (the evaluate stage's
    per-sample metrics), for the pairs that have one."""
    from chatsft.evaluation.metrics import per_sample_scores

    scored = [p for p in pairs if p.reference]
    if not scored:
        return
    refs = [p.reference for p in scored]
    per_side = {s: per_sample_scores([p.replies[s] for p in scored], refs) for s in "ab"}
    for i, p in enumerate(scored):
        p.scores = {s: {k: round(per_side[s][i][k], 2) for k in ("bleu4", "rougeL")}
                    for s in "ab"}


class VoteLog:
    """The votes JSONL: one line per vote, appended and fsynced as it is cast."""

    def __init__(self, path: str | Path, names: dict[str, str]) -> None:
        self.path, self.names = Path(path), names
        self.votes: dict[str, dict] = {v["id"]: v for v in read_votes(self.path)}

    def add(self, pair: Pair, choice: str) -> dict:
        if choice not in CHOICES:
            raise ValueError(f"choice must be one of {', '.join(CHOICES)}")
        vote = {"id": pair.id, "choice": choice, "left": pair.left, "time": time.time(),
                "prompt": pair.prompt, "reference": pair.reference,
                "a": {"name": self.names["a"], "reply": pair.replies["a"]},
                "b": {"name": self.names["b"], "reply": pair.replies["b"]}}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(vote, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.votes[pair.id] = vote
        return vote


def read_votes(path: str | Path) -> list[dict]:
    """The votes of a file (none if it does not exist). A torn last line (a crash during the
    write) is skipped; a bad line elsewhere is an error naming it."""
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    votes = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            vote = json.loads(line)
            if vote["choice"] not in CHOICES:
                raise ValueError(f"unknown choice {vote['choice']!r}")
        except (ValueError, KeyError, TypeError) as err:
            if n == len(lines):
                continue
            raise UserError(f"{path}: line {n}: not a vote ({err})") from None
        votes.append(vote)
    return votes


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion k/n ((0, 1) when n is 0)."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def summarize(pairs: list[Pair], votes: dict[str, dict], names: dict[str, str]) -> dict:
    """Counts, A's win rate among decisive votes with its 95% interval, and per voted pair
    the metric deltas (A minus B) beside the vote."""
    by_id = {p.id: p for p in pairs}
    counts = dict.fromkeys(CHOICES, 0)
    rows, agree, decided_by_metric = [], 0, 0
    for vote in votes.values():
        counts[vote["choice"]] += 1
        pair = by_id.get(vote["id"])
        if pair is None or pair.scores is None:
            continue
        delta = {k: round(pair.scores["a"][k] - pair.scores["b"][k], 2)
                 for k in ("bleu4", "rougeL")}
        rows.append({"id": pair.id, "prompt": pair.prompt[-1]["content"][:200],
                     "choice": vote["choice"], "scores": pair.scores, "delta": delta})
        if vote["choice"] in ("a", "b") and delta["rougeL"] != 0:
            decided_by_metric += 1
            agree += (delta["rougeL"] > 0) == (vote["choice"] == "a")
    decisive = counts["a"] + counts["b"]
    low, high = wilson(counts["a"], decisive)
    return {
        "names": names, "total": len(pairs), "voted": len(votes), "counts": counts,
        "a_win_rate": counts["a"] / decisive if decisive else None,
        "a_win_rate_95": [round(low, 4), round(high, 4)],
        "metric_agreement": {"pairs": decided_by_metric,
                             "rougeL_agrees": agree / decided_by_metric
                             if decided_by_metric else None},
        "mean_delta": {k: round(sum(r["delta"][k] for r in rows) / len(rows), 2)
                       if rows else None for k in ("bleu4", "rougeL")},
        "rows": rows,
    }


def export_preferences(votes_path: str | Path, out_path: str | Path) -> int:
    """`{prompt, chosen, rejected}` records (TRL's conversational preference format: the
    prompt's messages, then the chosen and rejected assistant turns) from the decisive votes;
    ties and both-bad votes carry no preference and are left out."""
    rows = []
    for vote in {v["id"]: v for v in read_votes(votes_path)}.values():  # the last vote counts
        if vote["choice"] not in ("a", "b"):
            continue
        win, lose = (vote["a"], vote["b"]) if vote["choice"] == "a" else (vote["b"], vote["a"])
        rows.append({"prompt": vote["prompt"],
                     "chosen": [{"role": "assistant", "content": win["reply"]}],
                     "rejected": [{"role": "assistant", "content": lose["reply"]}]})
    return write_jsonl(out_path, rows)
