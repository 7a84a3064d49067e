# The two set-up commands: `make demo` (the main job on digits) and `make test`.
# Each creates .venv and installs what it needs; nothing has to be installed by hand.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch: the CPU build by default; on a GPU box install the CUDA build you want first.
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test lint bench compat install clean

# the demo's environment: ncprobe with the extract extra (torch) and nothing test-only
$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check "$(TORCH_SPEC)"
	$(PY) -m pip install -q --disable-pip-version-check -e ".[extract]"
	touch $@

# the tests' environment adds the test and dev extras
$(VENV)/.tested: $(VENV)/.installed
	$(PY) -m pip install -q --disable-pip-version-check -e ".[extract,test,dev]"
	# torchattacks is a test oracle only; --no-deps keeps its torchvision pin out
	$(PY) -m pip install -q --disable-pip-version-check --no-deps "torchattacks==3.5.1"
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/nc-demo --out runs/demo

lint: $(VENV)/.tested
	$(VENV)/bin/ruff check .

test: $(VENV)/.tested lint
	$(PY) -m pytest --doctest-modules data analyze tests -q

bench: $(VENV)/.installed
	$(PY) -m benchmarks

# the declared minimum versions and the newest this Python installs, each in its own
# environment under benchmarks/out/ (docs/store.md, "Versions")
compat: $(VENV)/.installed
	$(PY) -m benchmarks compat

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
