# Two commands do all the set-up on a fresh machine with Python 3.11:
#   make demo   - end-to-end run on real PBMC data shipped inside scanpy (no network at run time)
#   make demo-spatial - four Visium DLPFC slices (fetched once from PyPI: paste2's source distribution)
#   make test   - the test suite
#   make docs   - the documentation site (site/), warnings and broken links as errors
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo demo-spatial test test-fast docs lint bench clean

$(VENV)/.installed: pyproject.toml constraints.txt src/stformer/_native.c
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -c constraints.txt torch==2.13.0
	$(VENV)/bin/pip install -q -c constraints.txt -e ".[all]"
	touch $@

demo: $(VENV)/.installed
	$(PY) examples/demo.py --out demo_output

SPATIAL_ARCHIVE := demo_spatial_output/paste2-1.0.1.tar.gz

$(SPATIAL_ARCHIVE):  # set-up, not run time: the data ship in this PyPI source distribution (BSD-3)
	mkdir -p demo_spatial_output
	$(VENV)/bin/pip download -q --no-deps --no-binary :all: paste2==1.0.1 -d demo_spatial_output

demo-spatial: $(VENV)/.installed $(SPATIAL_ARCHIVE)
	$(PY) examples/demo_spatial.py --archive $(SPATIAL_ARCHIVE) --out demo_spatial_output

test: $(VENV)/.installed
	$(PY) -m pytest -q

test-fast: $(VENV)/.installed  # skips the end-to-end tests marked slow
	$(PY) -m pytest -q -m "not slow"

docs: $(VENV)/.installed  # mkdocs-material + mkdocstrings; the references are generated (docs/hooks.py)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict  # not --quiet: it hides the warnings that --strict fails on

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests benchmarks examples

clean:
	rm -rf $(VENV) demo_output demo_spatial_output site
