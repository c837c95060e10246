# Two commands do all the set-up on a fresh machine with Python 3.11:
#   make demo   - end-to-end run on real PBMC data shipped inside scanpy (no network at run time)
#   make test   - the test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test test-fast lint bench clean

$(VENV)/.installed: pyproject.toml constraints.txt src/stformer/_native.c
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -c constraints.txt torch==2.13.0
	$(VENV)/bin/pip install -q -c constraints.txt -e ".[all]"
	touch $@

demo: $(VENV)/.installed
	$(PY) examples/demo.py --out demo_output

test: $(VENV)/.installed
	$(PY) -m pytest -q

test-fast: $(VENV)/.installed  # skips the end-to-end tests marked slow
	$(PY) -m pytest -q -m "not slow"

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests benchmarks examples

clean:
	rm -rf $(VENV) demo_output
