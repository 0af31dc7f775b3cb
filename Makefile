# Every target sets itself up: a fresh machine needs only Python 3.10+.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.invgen-installed

.PHONY: setup demo app test test-slow lint bench clean

$(STAMP): pyproject.toml
	@echo ">> setting up $(VENV) (torch 2.14.1 + invgen[app,dev]); first time takes a few minutes"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e '.[app,dev]'
	@touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(PY) -m invgen.cli demo --out runs/demo

# The browser app over runs/ (RUNS=... PORT=... to change); stop it with Ctrl-C.
RUNS ?= runs
app: setup
	$(PY) -m invgen.cli app --runs $(RUNS) $(if $(PORT),--port $(PORT))

test: setup
	$(PY) -m pytest -q

test-slow: setup
	$(PY) -m pytest -q -m slow

lint: setup
	$(VENV)/bin/ruff check .

bench: setup
	$(PY) scripts/bench_metrics.py
	$(PY) scripts/bench_invdiff.py
	$(PY) scripts/bench_cdvg.py
	$(PY) scripts/bench_views.py

clean:
	rm -rf runs .pytest_cache
