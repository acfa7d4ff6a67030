# `make demo` and `make test` each set up .venv on first use (see scripts/setup_venv.sh).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test bench setup clean

$(VENV)/.installed: pyproject.toml scripts/setup_venv.sh
	bash scripts/setup_venv.sh $(VENV)
	touch $@

setup: $(VENV)/.installed

demo: $(VENV)/.installed
	$(PY) examples/demo.py

# Test modules run in parallel worker processes (pytest-xdist), each module in one worker so that
# the kernels a module compiles are compiled once.
test: $(VENV)/.installed
	$(PY) -m pytest -q -p no:cacheprovider -n auto --maxprocesses 4 --dist loadfile

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
