# pysparse: `make demo` and `make test` set everything up first (a fast no-op when done).
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMPS := .stamps
export NODE_PATH := /usr/share/nodejs

.PHONY: help setup build wheel npm-pack wasm demo-assets test test-fast demo bench bench-kernels bench-demo fuzz sparse-models clean

help:
	@echo "make demo    set up, build, and serve the demo on its built-in model"
	@echo "make test    set up, build, and run every test"
	@echo "make bench   speed figures (see docs/benchmarks.md)"
	@echo "make bench-kernels, make bench-demo, make fuzz, make sparse-models: see README.md"

## ---- set-up -----------------------------------------------------------------
setup: $(STAMPS)/apt $(STAMPS)/venv $(STAMPS)/npm $(STAMPS)/models

$(STAMPS)/apt: scripts/setup-apt.sh
	bash scripts/setup-apt.sh
	@mkdir -p $(STAMPS) && touch $@

$(STAMPS)/venv: requirements.lock pyproject.toml $(STAMPS)/apt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip uninstall -q -y pysparse 2>/dev/null || true  # the distribution's former name
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	@mkdir -p $(STAMPS) && touch $@

$(STAMPS)/npm: package.json package-lock.json $(STAMPS)/apt
	npm ci --no-audit --no-fund
	@mkdir -p $(STAMPS) && touch $@

$(STAMPS)/models: $(STAMPS)/npm $(STAMPS)/venv pysparse/assets.py
	$(PY) -m pysparse.assets
	@mkdir -p $(STAMPS) && touch $@

## ---- build ------------------------------------------------------------------
build: setup wasm wheel npm-pack demo-assets

wasm: setup
	$(MAKE) -C wasm all

demo-assets: setup
	$(PY) -m pysparse.demo_assets

# The wheel carries web/, web/dist/ and demo/ (setup.py), so the engine is built first.
wheel: setup wasm
	rm -rf dist build/lib && $(PY) -m pip wheel -q --no-deps --no-build-isolation -w dist .

# The npm package of the JS runtime, beside the wheel (tests/test_install.py installs both
# in fresh environments).
npm-pack: wheel
	npm pack --silent --pack-destination dist ./web

## ---- test -------------------------------------------------------------------
test: build
	$(PY) -m pytest

test-fast: build
	$(PY) -m pytest -m "not slow"

## ---- demo, benchmarks ---------------------------------------------------------
demo: build
	$(PY) -m pysparse.cli serve --open-demo

bench: build
	$(PY) -m pysparse.cli bench

bench-kernels: setup $(STAMPS)/bench-node
	$(MAKE) -C wasm bench-kernels

# The Node.js of the kernel benchmark (a current V8, like current Chromium's): npm's binary
# package, installed beside the benchmark only when it runs. It exists for Linux x64 only;
# elsewhere the benchmark runs on the system's node.
$(STAMPS)/bench-node: wasm/bench/node/package.json wasm/bench/node/package-lock.json
	npm ci --prefix wasm/bench/node --no-audit --no-fund || \
	  echo "no benchmark Node for this platform: the system's node runs the kernel benchmark"
	@mkdir -p $(STAMPS) && touch $@

bench-demo: build
	$(PY) -m pysparse.bench.demo

# Distils the demo's sparse hand landmark models from the dense one, each sparser model
# pruned on from a less sparse one while it learns (long: see docs/pruning.md): 70%; 80%
# from it, then with the first three 1x1 layers pruned too in six runs, then trained on
# from those weights with a fresh optimiser on a larger pool (the demo's 80% model); 90%
# from the first 80% one, in three runs; block 4: 70% from the unstructured 70% model,
# 80% and 90% each from the one before, then the 80% one trained on in two runs. The
# steps in between, with the checkpoints the next runs start from, go to $(SPARSE_STEPS).
# On a CUDA machine `pysparse distill` trains on more images by itself.
SPARSE_MODELS := demo/finetuned
SPARSE_STEPS := build/sparse-models
DISTILL := $(VENV)/bin/pysparse distill --batch 16 --pool 5000 --feature-weight 0.3
FIRST_LAYERS := 'model_1/model/conv2d_[123]/*'
HAND := hand_landmark_full
sparse-models: setup
	mkdir -p $(SPARSE_STEPS)
	$(DISTILL) --sparsity 0.7 --steps 1200 --lr 6e-4 -o $(SPARSE_MODELS)/$(HAND).s70.spnn
	$(DISTILL) --sparsity 0.8 --start-from $(SPARSE_MODELS)/$(HAND).s70.spnn --ramp 1000 --steps 3000 \
	  --lr 4e-4 -o $(SPARSE_STEPS)/$(HAND).s80.spnn
	$(DISTILL) --sparsity 0.8 --include $(FIRST_LAYERS) --start-from $(SPARSE_STEPS)/$(HAND).s80.spnn \
	  --ramp 400 --steps 1000 --lr 3e-4 -o $(SPARSE_STEPS)/$(HAND).s80i.spnn
	$(DISTILL) --sparsity 0.8 --include $(FIRST_LAYERS) --resume --steps 2500 --lr 2e-4 \
	  -o $(SPARSE_STEPS)/$(HAND).s80i.spnn
	$(DISTILL) --sparsity 0.8 --include $(FIRST_LAYERS) --resume --steps 5000 --lr 2e-4 --logit-weight 0.2 \
	  -o $(SPARSE_STEPS)/$(HAND).s80i.spnn
	$(DISTILL) --sparsity 0.8 --include $(FIRST_LAYERS) --resume --steps 8000 --lr 5e-4 --logit-weight 0.2 \
	  -o $(SPARSE_STEPS)/$(HAND).s80i.spnn
	$(DISTILL) --sparsity 0.8 --include $(FIRST_LAYERS) --resume --steps 11000 --lr 7e-4 --logit-weight 0.2 \
	  -o $(SPARSE_STEPS)/$(HAND).s80i.spnn
	$(DISTILL) --sparsity 0.8 --include $(FIRST_LAYERS) --resume --steps 15000 --lr 6e-4 --logit-weight 0.2 \
	  --landmark-loss hand --ema 0.998 -o $(SPARSE_STEPS)/$(HAND).s80i.spnn
	$(DISTILL) --sparsity 0.8 --include $(FIRST_LAYERS) --start-from $(SPARSE_STEPS)/$(HAND).s80i.spnn \
	  --ramp 100 --steps 4000 --pool 8000 --lr 1.5e-4 --logit-weight 0.2 --landmark-loss hand --ema 0.998 \
	  -o $(SPARSE_MODELS)/$(HAND).s80.spnn
	$(DISTILL) --sparsity 0.9 --start-from $(SPARSE_STEPS)/$(HAND).s80.spnn --ramp 600 --steps 1000 \
	  --lr 4e-4 -o $(SPARSE_MODELS)/$(HAND).s90.spnn
	$(DISTILL) --sparsity 0.9 --start-from $(SPARSE_STEPS)/$(HAND).s80.spnn --ramp 600 --resume --steps 2000 \
	  --lr 3e-4 -o $(SPARSE_MODELS)/$(HAND).s90.spnn
	$(DISTILL) --sparsity 0.9 --start-from $(SPARSE_STEPS)/$(HAND).s80.spnn --ramp 600 --resume --steps 3500 \
	  --lr 6e-4 --landmark-loss hand --ema 0.998 -o $(SPARSE_MODELS)/$(HAND).s90.spnn
	$(DISTILL) --sparsity 0.7 --block 4 --start-from $(SPARSE_MODELS)/$(HAND).s70.spnn --ramp 600 \
	  --steps 1500 --lr 4e-4 -o $(SPARSE_MODELS)/$(HAND).s70b4.spnn
	$(DISTILL) --sparsity 0.8 --block 4 --start-from $(SPARSE_MODELS)/$(HAND).s70b4.spnn --ramp 800 \
	  --steps 1500 --lr 4e-4 -o $(SPARSE_MODELS)/$(HAND).s80b4.spnn
	$(DISTILL) --sparsity 0.9 --block 4 --start-from $(SPARSE_MODELS)/$(HAND).s80b4.spnn --ramp 600 \
	  --steps 1000 --lr 4e-4 -o $(SPARSE_MODELS)/$(HAND).s90b4.spnn
	$(DISTILL) --sparsity 0.8 --block 4 --start-from $(SPARSE_MODELS)/$(HAND).s70b4.spnn --ramp 800 \
	  --resume --steps 3000 --lr 3e-4 -o $(SPARSE_MODELS)/$(HAND).s80b4.spnn
	$(DISTILL) --sparsity 0.8 --block 4 --start-from $(SPARSE_MODELS)/$(HAND).s70b4.spnn --ramp 800 \
	  --resume --steps 5000 --lr 6e-4 --landmark-loss hand --ema 0.998 \
	  -o $(SPARSE_MODELS)/$(HAND).s80b4.spnn

fuzz: setup
	$(MAKE) -C wasm fuzz FUZZ_SECONDS=600

clean:
	rm -rf dist build web/dist $(STAMPS)
	-$(MAKE) -C wasm clean
