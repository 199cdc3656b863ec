# The two commands a new user runs: `make quickstart` then `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: quickstart test test-all bench docs install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,atmosphere,scale,docs]"
	touch $(STAMP)

install: $(STAMP)

quickstart: $(STAMP)
	$(BIN)/nemic quickstart

# the default suite on both cores (pytest-xdist); `make test-all` adds the tests marked slow
test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" -q -n 2

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -n 2

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[test,bench]"
	for f in benchmarks/*.py; do $(BIN)/python $$f || exit 1; done

# the documentation site into site/, every tutorial and how-to executed (results cached in build/tutorials/)
docs: $(STAMP)
	$(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) runs build site src/*.egg-info
