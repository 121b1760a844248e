# ecomgen: one command to set up and serve, one to test.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup serve build test test-unit test-integration lint format check-repository \
	train-product-gan eval-product-gan train-tryon eval-tryon train-sr eval-sr train-vae eval-vae train-cutout eval-cutout \
	bench bench-models bench-gpu soak clean

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
	$(BIN)/mypy client/ecomgen_client export ecomgen benchmarks

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

train-sr:
	$(BIN)/python -m training.sr

eval-sr:
	$(BIN)/python -m training.sr_eval

# The colour predictor is trained on the VAE's own decodes: retrain it after the VAE.
train-vae:
	$(BIN)/python -m training.vae
	$(BIN)/python -m training.vae_colour

eval-vae:
	$(BIN)/python -m training.vae_eval

train-cutout:
	$(BIN)/python -m training.cutout

eval-cutout:
	$(BIN)/python -m training.cutout_eval

# The committed benchmark results, in order (~1 h on 2 cores; keep the machine quiet).
bench: setup
	$(BIN)/python -m benchmarks.roofline
	$(BIN)/python -m benchmarks.tune
	$(BIN)/python -m benchmarks.compare
	$(BIN)/python -m benchmarks.tryon
	$(BIN)/python -m benchmarks.hotpath

# The ensembles: each against the sum of its steps, load at 1/8/32 users, batching per step.
bench-models: setup
	for m in upscale product_detail personalize ad_creative; do \
		$(BIN)/python -m benchmarks.ensemble --model $$m --concurrency 1 8 32 || exit 1; done
	$(BIN)/python -m benchmarks.ads

# On a GPU host with torch (no TensorRT needed): eager / fp16 / CUDA graphs / torch.compile.
bench-gpu:
	$(BIN)/python -m benchmarks.gpu

# Twice the measured capacity through the real launcher for 5 minutes (not in CI).
soak: build
	$(BIN)/python -m benchmarks.soak --minutes 5

clean:
	rm -rf build runs .pytest_cache .mypy_cache .ruff_cache
