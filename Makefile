# One command sets up and runs the main job; one runs the tests (README.md).
PY ?= python3
VENV ?= .venv
SHARED ?= ../shared
BIN := $(VENV)/bin

.PHONY: setup demo quick test lint bench

setup: $(VENV)/.installed

# torch first, pinned: `pip install torch==2.13.0` takes the CPU build on this project's
# machines; an unpinned torch would pull several GB of CUDA build.
$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

# The main job: the smoke grid (4 tiny all-MiniLM-L6-v2 jobs on IMDB rows from $(SHARED),
# two at a time on the CPU, about a minute), then the sweep's status from its storage.
demo: setup
	WANDB_MODE=$${WANDB_MODE:-offline} $(BIN)/sweep grid grids/smoke.yaml --parallel 2 \
		--set model=$(SHARED)/models/all-MiniLM-L6-v2 --set data.name=$(SHARED)/data/imdb
	$(BIN)/sweep status smoke
	$(BIN)/sweep report smoke

# One real job in the foreground: 2,000 IMDB rows, 1 epoch (about 4 minutes on 2 cores).
quick: setup
	WANDB_MODE=$${WANDB_MODE:-offline} $(BIN)/sweep run jobs/minilm_imdb_quick.yaml --out runs/minilm_imdb_quick \
		--set model=$(SHARED)/models/all-MiniLM-L6-v2 --set data.name=$(SHARED)/data/imdb

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check trainer sweeper reports tests bench
	$(BIN)/mypy trainer sweeper reports
	$(BIN)/lint-imports

bench: setup
	$(BIN)/python bench/trainer_vs_hf.py --model $(SHARED)/models/all-MiniLM-L6-v2 --data $(SHARED)/data/imdb
