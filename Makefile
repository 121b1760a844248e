# ecomgen: one command to set up and serve, one to test.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup serve build test test-unit test-integration lint format typecheck check-repository train-product-gan eval-product-gan train-tryon eval-tryon bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch is pinned to the local CPU wheel (pip finds it via find-links); keep it first so
# nothing pulls a CUDA build from the index.
setup: $(BIN)/python
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ./client
	$(BIN)/pip install --quiet -e ".[dev]"

# As root the launcher runs Triton as `nobody`; --allow-root keeps root only where `nobody`
# cannot read the Python runtime (a pyenv under /root, as on the build machines).
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)

serve: setup
	$(BIN)/python -m ecomgen serve $(ROOT_FLAG)

build: setup
	$(BIN)/python -m ecomgen build

test: setup
	$(BIN)/python -m pytest -q tests

test-unit:
	$(BIN)/python -m pytest -q tests/unit

test-integration:
	$(BIN)/python -m pytest -q tests/integration

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy client/ecomgen_client export ecomgen

format:
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .
	$(BIN)/python -m export.repository

check-repository:
	$(BIN)/python -m export.repository --check

train-product-gan:
	$(BIN)/python -m training.product_gan

eval-product-gan:
	$(BIN)/python -m training.metrics

train-tryon:
	$(BIN)/python -m training.tryon

eval-tryon:
	$(BIN)/python -m training.tryon_eval

# The committed benchmark results, in order (~1 h on 2 cores; keep the machine quiet).
bench: setup
	$(BIN)/python -m benchmarks.roofline
	$(BIN)/python -m benchmarks.tune
	$(BIN)/python -m benchmarks.compare
	$(BIN)/python -m benchmarks.tryon

clean:
	rm -rf build runs .pytest_cache .mypy_cache .ruff_cache
