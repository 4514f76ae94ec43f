"""`make mutants`: do the tests catch the bugs they are meant to catch?

Each entry of MUTATIONS is a realistic bug, written as one text replacement in one file,
with the tests that back the README claim it breaks. For each, this script copies the
checkout (tracked and new files, as git lists them) to a temporary directory, applies the
mutation there (the working tree is never edited), and runs the named tests in the copy with
its own PYTHONPATH. A mutation is caught when every named test fails. First the named tests
must pass on an unmutated copy; a mutation whose text is no longer in its file is reported as
stale, so an entry cannot silently stop testing anything.

    python tests/mutants.py            # all mutations, then a Markdown table of the results
    python tests/mutants.py --list     # names and claims
    python tests/mutants.py NAME ...   # some of them

Adding a mutation is one more `Mutation(...)` in MUTATIONS. Exit status 0 only when every
selected mutation is caught.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 1800  # seconds for one pytest run


@dataclass(frozen=True)
class Mutation:
    name: str
    claim: str  # the README claim the bug breaks
    path: str  # file to mutate, relative to the repository root
    old: str  # text that must occur exactly once in `path`
    new: str  # what replaces it
    tests: tuple[str, ...]  # pytest node ids; each must fail under the mutation


PACKED = "tests/test_packing.py::test_packed_loss_equals_unpacked_loss"
# test_attention ids: [offsets-per_sample]
VARLEN = "tests/test_attention.py::test_packed_rows_match_sdpa_in_loss_logits_and_gradients"
MEMORY = "tests/test_loss.py::test_step_memory_with_qwen25_vocabulary_is_under_60_percent_of_plain"

MUTATIONS = [
    Mutation(
        "eot-not-supervised",
        "the end-of-turn token that closes a reply is supervised",
        "chatsft/chat_template/masks.py",
        "            if ids[k] in self.control_ids:\n                return k + 1\n",
        "            if ids[k] in self.control_ids:\n                return k\n",
        ("tests/test_template.py::test_end_of_turn_is_supervised_when_pad_equals_eos",
         "tests/test_template.py::test_generation_markers_give_the_same_mask"),
    ),
    Mutation(
        "loss-per-micro-batch",
        "loss per supervised token of the optimizer step, with or without accumulation",
        "chatsft/training/trainer.py",
        "        loss = chunked_causal_lm_loss(hidden, weight, labels, num_items_in_batch)\n",
        # The naive loop: each micro-batch's own mean, averaged over the accumulation steps.
        "        loss = chunked_causal_lm_loss(hidden, weight, labels)"
        " / self.args.gradient_accumulation_steps\n",
        ("tests/training/test_trainer.py::test_accumulated_micro_batches_equal_one_batch[chunked]",),
    ),
    Mutation(
        "packed-attend-across-per-sample",
        "packed samples never attend to each other (sdpa_varlen, one SDPA call per sample)",
        "chatsft/model/attention.py",
        "        cuts = row.nonzero().view(-1).tolist() + [length]\n",
        "        cuts = [0, length]  # one causal call over the whole packed row\n",
        (f"{PACKED}[sdpa_varlen-False-per-sample]", f"{PACKED}[sdpa_varlen-True-per-sample]",
         f"{VARLEN}[True-True]", f"{VARLEN}[False-True]"),
    ),
    Mutation(
        "packed-attend-across-masked",
        "packed samples never attend to each other (sdpa_varlen, masked call for short samples)",
        "chatsft/model/attention.py",
        "        mask = (seq[:, :, None] == seq[:, None, :]).tril()[:, None]\n",
        "        mask = torch.ones_like(seq[:, :, None] == seq[:, None, :]).tril()[:, None]\n",
        (f"{PACKED}[sdpa_varlen-False-masked]", f"{PACKED}[sdpa_varlen-True-masked]",
         f"{VARLEN}[True-False]", f"{VARLEN}[False-False]"),
    ),
    Mutation(
        "chunked-loss-off",
        "the chunked loss needs under 60% of the plain loss's step memory (151,665 vocabulary)",
        "chatsft/training/trainer.py",
        "        self.chunked_loss = chunked_loss and _accepts(",
        "        self.chunked_loss = False and _accepts(",
        (MEMORY,),
    ),
    Mutation(
        "loss-in-one-chunk",
        "the chunked loss needs under 60% of the plain loss's step memory (151,665 vocabulary)",
        "chatsft/loss.py",
        "        return max(128, 2**20 // vocab_size)\n",
        "        return 2**31  # every supervised position in one chunk\n",
        (MEMORY,),
    ),
    Mutation(
        "resume-starts-over",
        "a killed run resumes from its last complete checkpoint and ends like an uninterrupted one",
        "chatsft/training/run.py",
        "        trainer.train(resume_from_checkpoint=str(resume) if resume else None)\n",
        "        trainer.train(resume_from_checkpoint=None)\n",
        ("tests/training/test_resume.py::test_killed_runs_resume_to_the_same_result",),
    ),
    Mutation(
        "unsampled-counted-as-kept",
        "kept + quarantined + unsampled = read, per source (max_samples leaves records out)",
        "chatsft/data/mixing.py",
        "            k.report.unsampled += 1\n            k.report.kept -= 1\n"
        "    return [k for",
        "            k.report.unsampled += 1\n    return [k for",
        ("tests/reliability/test_params_and_data.py::"
         "test_item9_kept_quarantined_and_unsampled_add_up_to_read",),
    ),
    Mutation(
        "hardest-attend-across",
        "the hardest pass scores each packed conversation as if it were alone",
        "chatsft/evaluation/hardest.py",
        "        pos += range(len(sample_ids))\n",
        "        pos += range(len(pos), len(pos) + len(sample_ids))\n",
        ("tests/evaluation/test_hardest.py::"
         "test_conversation_losses_match_each_conversation_alone",),
    ),
    Mutation(
        "checkpoint-verification-skipped",
        "a resumed checkpoint's files match the checksums recorded when it was written",
        "chatsft/training/checkpoints.py",
        "        if _sha256(f) != want[\"sha256\"]:\n",
        "        if False:  # checksums not checked\n",
        ("tests/reliability/test_checkpoints.py::test_item3_corrupted_checkpoint_is_not_resumed",),
    ),
    Mutation(
        "neftune-in-eval",
        "NEFTune noise only in training mode, never in evaluation or generation",
        "chatsft/training/neftune.py",
        "        if not module.training:\n            return None\n",
        "",
        ("tests/training/test_neftune.py::test_noise_only_in_training_mode_and_never_in_generation",
         "tests/training/test_neftune.py::"
         "test_training_with_neftune_changes_training_but_not_its_eval"),
    ),
    Mutation(
        "neftune-row-length",
        "NEFTune scales noise by each packed sample's length, not the row's",
        "chatsft/training/neftune.py",
        "        lengths = counts[ids].to(torch.float32)",
        "        lengths = torch.full((batch, width), float(width), device=device)",
        ("tests/training/test_neftune.py::test_packed_samples_get_their_unpacked_scale",),
    ),
    Mutation(
        "eval-rows-mix-sources",
        "eval loss per source: a validation row holds one source",
        "chatsft/training/data.py",
        "for k, part in by_source(splits[\"validation\"])",
        "for k, part in [(0, splits[\"validation\"])]",
        ("tests/training/test_sources.py::test_eval_rows_are_packed_one_source_at_a_time",
         "tests/training/test_sources.py::test_training_logs_the_eval_loss_per_source"),
    ),
]


def copy_checkout(dst: Path) -> None:
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.splitlines()
    for f in files:
        if (ROOT / f).is_file():
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dst / f)


def apply(mutation: Mutation, repo: Path) -> str | None:
    """Mutate the copy; the reason when the mutation no longer applies."""
    path = repo / mutation.path
    text = path.read_text(encoding="utf-8")
    count = text.count(mutation.old)
    if count != 1:
        return f"stale: its text occurs {count} times in {mutation.path}"
    path.write_text(text.replace(mutation.old, mutation.new), encoding="utf-8")
    return None


def run_tests(repo: Path, tests: list[str]) -> dict[str, str]:
    """Outcome (PASSED, FAILED, ERROR, ...) of each test, run in the copy `repo`, with
    pytest's one-line reason for a failure ("FAILED - AssertionError: ...")."""
    env = dict(os.environ, PYTHONPATH=str(repo), COLUMNS="300")  # wider failure reasons
    cmd = [sys.executable, "-m", "pytest", "-rA", "-p", "no:cacheprovider", *tests]
    try:
        proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True,
                              timeout=TIMEOUT)
        out = proc.stdout
    except subprocess.TimeoutExpired as err:
        out = err.stdout.decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
    outcomes = {}
    for line in out.splitlines():
        word, _, rest = line.partition(" ")
        if word in ("PASSED", "FAILED", "ERROR", "SKIPPED", "XFAIL", "XPASS"):
            test, _, reason = rest.partition(" - ")
            outcomes.setdefault(test, f"{word} - {reason}" if reason else word)
    return {t: outcomes.get(t, "NOT RUN") for t in tests}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="mutations to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the run of the named tests on the unmutated copy")
    args = parser.parse_args()
    by_name = {m.name: m for m in MUTATIONS}
    if args.list:
        for m in MUTATIONS:
            print(f"{m.name}: {m.claim} ({m.path})")
        return 0
    unknown = [n for n in args.names if n not in by_name]
    if unknown:
        parser.error(f"unknown mutation(s): {', '.join(unknown)}; see --list")
    selected = [by_name[n] for n in args.names] or MUTATIONS

    with tempfile.TemporaryDirectory(prefix="chatsft-mutants-") as tmp:
        pristine = Path(tmp) / "pristine"
        copy_checkout(pristine)
        if not args.no_baseline:
            tests = list(dict.fromkeys(t for m in selected for t in m.tests))
            start = time.perf_counter()
            outcomes = run_tests(pristine, tests)
            bad = {t: o for t, o in outcomes.items() if o != "PASSED"}
            print(f"baseline: {len(tests) - len(bad)}/{len(tests)} named tests pass unmutated "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
            if bad:
                for t, o in bad.items():
                    print(f"  {o}: {t}")
                return 1
        rows = []
        for m in selected:
            repo = Path(tmp) / m.name
            shutil.copytree(pristine, repo)
            start = time.perf_counter()
            problem = apply(m, repo)
            outcomes = {} if problem else run_tests(repo, list(m.tests))
            failed = [t for t, o in outcomes.items() if o.startswith("FAILED")]
            if problem:
                verdict = problem
            elif len(failed) == len(m.tests):
                verdict = "caught"
            else:
                verdict = "MISSED by " + ", ".join(f"{t} ({o})" for t, o in outcomes.items()
                                                   if not o.startswith("FAILED"))
            seconds = time.perf_counter() - start
            rows.append((m, verdict, len(failed), seconds))
            print(f"{m.name}: {verdict} ({len(failed)}/{len(m.tests)} named tests fail, "
                  f"{seconds:.0f} s)", flush=True)
            for t in failed:
                print(f"  {t.removeprefix('tests/')}: {outcomes[t][:160]}", flush=True)
            shutil.rmtree(repo, ignore_errors=True)

    print("\n| mutation | file | backing tests | failing | result |\n|---|---|---|---|---|")
    for m, verdict, failed, _ in rows:
        tests = "<br>".join(f"`{t.removeprefix('tests/')}`" for t in m.tests)
        print(f"| {m.name} | `{m.path}` | {tests} | {failed}/{len(m.tests)} | {verdict} |")
    caught = sum(verdict == "caught" for _, verdict, _, _ in rows)
    print(f"\n{caught} of {len(rows)} mutations caught")
    return 0 if caught == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
