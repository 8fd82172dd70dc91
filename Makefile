# pysparse: `make demo` and `make test` set everything up first (a fast no-op when done).
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMPS := .stamps
export NODE_PATH := /usr/share/nodejs

.PHONY: help setup build wheel wasm test test-fast demo bench bench-kernels fuzz clean

help:
	@echo "make demo    set up, build, and serve the demo on its built-in model"
	@echo "make test    set up, build, and run every test"
	@echo "make bench   speed figures (see docs/benchmarks.md)"

## ---- set-up -----------------------------------------------------------------
setup: $(STAMPS)/apt $(STAMPS)/venv $(STAMPS)/npm $(STAMPS)/models

$(STAMPS)/apt: scripts/setup-apt.sh
	bash scripts/setup-apt.sh
	@mkdir -p $(STAMPS) && touch $@

$(STAMPS)/venv: requirements.lock pyproject.toml $(STAMPS)/apt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	@mkdir -p $(STAMPS) && touch $@

$(STAMPS)/npm: package.json package-lock.json $(STAMPS)/apt
	npm ci --no-audit --no-fund
	@mkdir -p $(STAMPS) && touch $@

$(STAMPS)/models: $(STAMPS)/npm $(STAMPS)/venv pysparse/assets.py
	$(PY) -m pysparse.assets
	@mkdir -p $(STAMPS) && touch $@

## ---- build ------------------------------------------------------------------
build: setup wasm wheel

wasm: setup
	$(MAKE) -C wasm all

wheel: setup
	rm -rf dist && $(PY) -m pip wheel -q --no-deps --no-build-isolation -w dist .

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

bench-kernels: setup
	$(MAKE) -C wasm bench-kernels

fuzz: setup
	$(MAKE) -C wasm fuzz FUZZ_SECONDS=600

clean:
	rm -rf dist build web/dist $(STAMPS)
	-$(MAKE) -C wasm clean
