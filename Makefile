# The two set-up commands: `make demo` (the main job on digits) and `make test`.
# Each creates .venv and installs what it needs; nothing has to be installed by hand.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch: the CPU build by default; on a GPU box install the CUDA build you want first.
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test test-hubs lint bench compat install clean

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

# the real torchvision and timm, which do not import beside the CPU torch above: their
# pretrained weights from prepared caches, in an environment of their own
HUBS ?= .venv-hubs
$(HUBS)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(HUBS)
	$(HUBS)/bin/python -m pip install -q --disable-pip-version-check torch==2.14.1 \
		torchvision==0.29.1 timm
	$(HUBS)/bin/python -m pip install -q --disable-pip-version-check -e ".[extract,test]"
	touch $@

test-hubs: $(HUBS)/.installed
	$(HUBS)/bin/python -m pytest -q -s tests/torch/test_pretrained_real.py

bench: $(VENV)/.installed
	$(PY) -m benchmarks

# the declared minimum versions and the newest this Python installs, each in its own
# environment under benchmarks/out/ (docs/store.md, "Versions")
compat: $(VENV)/.installed
	$(PY) -m benchmarks compat

clean:
	rm -rf $(VENV) $(HUBS) runs .pytest_cache .ruff_cache
