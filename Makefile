# Two commands: `make demo` runs the whole tiny pipeline, `make test` runs the test suite.
# Each creates .venv on a fresh machine: torch first (the CPU build named below), then fidan.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
RUN    ?= demo

.PHONY: demo test lint bench clean browser bwrap

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/fidan pipeline --preset tiny --run.name=$(RUN)

# The web page test drives a real Chromium. Install Debian's package when we can (root, apt);
# otherwise that one test is skipped and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  { apt-get install -y -q chromium >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; }; }; } || \
	  echo "note: chromium could not be installed; tests/test_web.py will be skipped"

# The code sandbox isolates generated code with bubblewrap (user, mount, PID and network
# namespaces). Install Debian's package when we can (root, apt); otherwise the hostile-completion
# tests are skipped and say why.
bwrap:
	@command -v bwrap >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  { apt-get install -y -q bubblewrap >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q bubblewrap >/dev/null 2>&1; }; }; } || \
	  echo "note: bubblewrap could not be installed; the sandbox tests that need it will be skipped"

# ruff, configured in pyproject.toml: pycodestyle, pyflakes, import order, bugbear, pyupgrade
lint: $(BIN)/.installed
	$(BIN)/python -m ruff check src tests benchmarks

test: $(BIN)/.installed browser bwrap
	$(BIN)/python -m pytest -q

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/shakespeare_bpb.py

clean:
	rm -rf $(VENV) runs .pytest_cache
