"""Training on one draw per epoch (data.resample_each_epoch): each draw is one epoch, in
order, shuffled within itself."""

from __future__ import annotations

from datasets import DatasetDict, concatenate_datasets

from chatsft.config import EPOCH
from chatsft.training.data import EpochBlockSampler
from chatsft.training.run import run_training
from chatsft.training.trainer import SFTTrainer
from tests.training.helpers import tiny_params


def test_the_sampler_shuffles_within_each_block_and_keeps_blocks_in_order():
    order = list(EpochBlockSampler([5, 7, 3], seed=1))
    assert sorted(order[:5]) == list(range(5)) and sorted(order[5:12]) == list(range(5, 12))
    assert sorted(order[12:]) == list(range(12, 15))
    assert order == list(EpochBlockSampler([5, 7, 3], seed=1))  # a resume sees the same order
    assert order != list(EpochBlockSampler([5, 7, 3], seed=2))
    assert order[:5] != list(range(5)) or order[5:12] != list(range(5, 12))


def test_two_draws_train_as_two_epochs_one_after_the_other(tmp_path, tiny_model_dir,
                                                            tiny_splits, chatml_tokenizer,
                                                            monkeypatch):
    train = tiny_splits["train"]
    draws = [train.select(range(0, 40)), train.select(range(40, 80))]
    splits = DatasetDict({
        "train": concatenate_datasets([d.add_column(EPOCH, [e] * len(d))
                                       for e, d in enumerate(draws)]),
        "validation": tiny_splits["validation"], "test": tiny_splits["test"]})
    seen: list[tuple[int, ...]] = []
    step = SFTTrainer.training_step

    def recording_step(self, model, inputs, num_items_in_batch=None):
        for ids, mask in zip(inputs["input_ids"], inputs["attention_mask"], strict=True):
            seen.append(tuple(ids[mask.bool()].tolist()))
        return step(self, model, inputs, num_items_in_batch)

    monkeypatch.setattr(SFTTrainer, "training_step", recording_step)
    params = tiny_params(epochs=2, max_steps=-1, packing="pad", per_device_batch_size=4,
                         eval_steps=100, save_steps=100)
    summary = run_training(params, tiny_model_dir, splits, chatml_tokenizer, tmp_path / "sft",
                           tmp_path / "ckpt")
    # 2 epochs = the 2 draws once each (not each draw twice): 80 rows in batches of 4.
    assert summary["steps"] == 20 and summary["epoch_draws"] == 2
    first, second = ({tuple(x) for x in d["input_ids"]} for d in draws)
    assert set(seen[:40]) == first and set(seen[40:]) == second
    assert seen[:40] != [tuple(x) for x in draws[0]["input_ids"]]  # shuffled within the draw
