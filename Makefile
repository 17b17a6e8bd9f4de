# `make repro` and `make test` are the README's two commands: each sets up .venv on
# first use (and again only when pyproject.toml changes), then does its job. `make repro`
# installs only what the pipeline needs; `make test` adds the `dev` extra (pytest, Ray,
# pandas, polars, duckdb, hypothesis).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
EXTRAS ?= dev
# dvc.yaml runs `python stages/...`: that must be the environment's python.
export PATH := $(CURDIR)/$(BIN):$(PATH)

PLOTS_TEMPLATE := .dvc/tmp/plots-offline.html
NODE_MODULES := .dvc/tmp/vega/node_modules

.PHONY: repro test test-all lint install clean plots docs git-clone peers-env

repro: git-clone $(VENV)/.installed-base
	$(BIN)/dvc repro

# DVC keeps the pipeline's state (dvc.lock, experiments) in git: outside a clone it fails
# with a bare "not a git repository". Say what to do instead, before installing anything.
git-clone:
	@git rev-parse --is-inside-work-tree >/dev/null 2>&1 || { \
	  echo "error: $(CURDIR) is not a git repository; this project runs as a git clone (DVC records" \
	       "the pipeline in git). Use 'git clone <url>', or for a copy without history run:" \
	       "git init && git add -A && git commit -m 'start'" >&2; exit 2; }

# The suite runs in TEST_WORKERS processes (pytest-xdist), one test file per process at a
# time, so that a file's fixtures are built once (the shared pipeline run and DVC repository
# once per run, whatever the workers): most tests wait on imports and subprocesses, which
# two workers overlap on two cores. Files go out in the order tests/conftest.py sets (xdist
# would otherwise hand them out by their number of tests, the longest last).
TEST_WORKERS ?= 2
PARALLEL = -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder
# The explorer page's test opens it in Debian's headless Chromium, driven by its chromedriver.
CHROMEDRIVER := /usr/bin/chromedriver
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
test: $(VENV)/.installed-dev $(CHROMEDRIVER)
	$(BIN)/python -m pytest $(PARALLEL)

test-all: $(VENV)/.installed-dev $(CHROMEDRIVER)
	$(BIN)/python -m pytest $(PARALLEL) -m ""

# ruff, configured in pyproject.toml (tests/pipeline/test_dvc_yaml.py runs it in `make test` too)
lint: $(VENV)/.installed-dev
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

$(CHROMEDRIVER):
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium chromium-driver \
	  || { $(SUDO) apt-get update && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium chromium-driver; }

# docs/reference/ from the code (tests/pipeline/test_docs.py fails when it is stale)
docs: $(VENV)/.installed-base
	$(BIN)/python -m pipeline.reference

install:  # always (re)installs, e.g. `make install EXTRAS=dev,gpu`
	rm -f $(VENV)/.installed-*
	$(MAKE) $(VENV)/.installed-$(EXTRAS)

# .installed-base: the package alone; .installed-<extras>: with those extras (dev, cluster, gpu, ...)
$(VENV)/.installed-%: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".$(if $(filter base,$*),,[$*])"
	touch $@

# `dvc plots show` as one HTML page that renders offline (scripts inlined, not from a CDN).
plots: $(VENV)/.installed-base $(PLOTS_TEMPLATE)
	$(BIN)/dvc plots show --html-template $(PLOTS_TEMPLATE) -o dvc_plots

$(PLOTS_TEMPLATE):
	npm install --silent --no-save --no-audit --no-fund --prefix .dvc/tmp/vega vega@5 vega-lite@5 vega-embed@6
	$(BIN)/vae-pipeline plots-template $(NODE_MODULES) $(PLOTS_TEMPLATE)

# benchmarks/peers.py's second environment: pythae on a CPU build of PyTorch (and mnist1d, the
# data benchmarks/signals.py generates; scikit-image, whose bundled photos benchmarks/photos.py
# and flops.py crop). Benchmark-only:
# nothing in `make repro` or `make test` needs it. torch 2.13.0 is the CPU build pip finds on
# these machines' disk; elsewhere pip may fetch a CUDA build.
peers-env:
	test -x .venv-peers/bin/python || $(PYTHON) -m venv .venv-peers
	.venv-peers/bin/python -m pip install --quiet torch==2.13.0 pythae==0.1.2 mnist1d==0.0.2.post1 \
		scikit-image==0.26.0 scikit-learn pyod==3.6.7 tqdm scvi-tools==1.4.2 scib-metrics==0.5.10

clean:
	rm -rf $(VENV)
