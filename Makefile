# Two commands: `make demo` runs the whole tiny pipeline, `make test` runs the test suite.
# Each creates .venv on a fresh machine: torch first (the CPU build named below), then fidan.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
RUN    ?= demo

.PHONY: demo test bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/fidan pipeline --preset tiny --run.name=$(RUN)

test: $(BIN)/.installed
	$(BIN)/python -m pytest -q

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/shakespeare_bpb.py

clean:
	rm -rf $(VENV) runs .pytest_cache
