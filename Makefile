# Two set-up commands: `make demo` (install, then the main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= report

.PHONY: install demo test test-slow test-browser bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	# plotly.js' cartesian partial bundle from the npm registry (a third of plotly's full bundle); optional
	$(BIN)/python -m probekit.viz.bundle || true
	touch $@

demo: install
	$(BIN)/probekit demo --out $(OUT)

test: install
	$(BIN)/python -m pytest -m "not slow and not gpu" -q

test-slow: install
	$(BIN)/python -m pytest -m slow -q

test-browser: install
	$(BIN)/python -m pytest -m browser -q

bench: install
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache
