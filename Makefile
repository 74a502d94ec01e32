# Two commands on a fresh machine: `make demo`, then `make test`.
# Override the torch pin with e.g. `make install TORCH_SPEC=torch==2.5.1`.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-all lint bench data clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/denoise --overwrite pretrained/example-noisy.flac demo-denoised.flac
	@echo "demo: denoised pretrained/example-noisy.flac -> $(CURDIR)/demo-denoised.flac"

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m "slow or not slow"

lint: $(STAMP)
	$(BIN)/ruff check audiodenoise tests bench data_prep

bench: $(STAMP)
	$(BIN)/python bench/bench_inference.py
	$(BIN)/python bench/bench_batch.py
	$(BIN)/python bench/bench_training.py

data: $(STAMP)
	$(BIN)/python data_prep/build_corpus.py

clean:
	rm -rf $(VENV) build dist *.egg-info demo-denoised.flac
