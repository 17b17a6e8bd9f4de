# `make repro` and `make test` are the README's two commands: each sets up .venv on
# first use (and again only when pyproject.toml changes), then does its job.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXTRAS ?= dev
# dvc.yaml runs `python stages/...`: that must be the environment's python.
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: repro test test-all install clean

repro: $(STAMP)
	$(BIN)/dvc repro

test: $(STAMP)
	$(BIN)/python -m pytest

test-all: $(STAMP)
	$(BIN)/python -m pytest -m ""

install:  # always (re)installs, e.g. `make install EXTRAS=dev,gpu`
	rm -f $(STAMP)
	$(MAKE) $(STAMP) EXTRAS=$(EXTRAS)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $(STAMP)

clean:
	rm -rf $(VENV)
