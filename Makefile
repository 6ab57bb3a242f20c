# fittingroom: `make train` reproduces the tutorial, `make test` runs the tests.
# Both set everything up first (a virtual environment in .venv, the dataset) and are idempotent.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install --disable-pip-version-check -q -c constraints.txt
FR     := $(VENV)/bin/fittingroom
ARGS   ?=

.PHONY: setup setup-test data browser train test test-fast lint bench-keras clean

setup: $(VENV)/.installed data

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip setuptools wheel
	$(PIP) -e '.[all,dev]'
	$(PY) -m fittingroom.training.native
	touch $@

# The dataset: found where it is (see `fittingroom data info`); on Debian, installed from the
# dataset-fashion-mnist package; elsewhere downloaded into the user cache and verified.
data: $(VENV)/.installed
	@$(FR) data info >/dev/null 2>&1 || ./scripts/get-data.sh $(FR)

train: setup
	$(FR) train --preset seed $(ARGS)

# Tests keep their compiled (assertion-rewritten) modules in __pycache__ even where PYTHONDONTWRITEBYTECODE is set:
# collecting them again then takes half the time.
test: setup-test
	env -u PYTHONDONTWRITEBYTECODE $(PY) -m pytest $(ARGS)

# The unit tests only, in under a minute: no tests of a second or more (slow: real data, training runs that go on
# to predict, evaluate or export), no Chromium (browser), no CLI,
# training or kernel processes (subprocess), no property-based fuzzing (fuzz); `make test` runs them all.
# One process per core (pytest-xdist), one PyTorch thread each.
test-fast: setup
	env -u PYTHONDONTWRITEBYTECODE OMP_NUM_THREADS=1 $(PY) -m pytest -n auto \
		-m "not slow and not browser and not subprocess and not fuzz" $(ARGS)

# The tests also drive a real browser: Debian's chromium (Playwright uses it; it downloads no browser).
setup-test: setup
	@command -v chromium >/dev/null 2>&1 || ./scripts/get-chromium.sh

# Style, the layers of the package (import-linter) and dead code (vulture); their settings are in pyproject.toml.
lint: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/lint-imports
	$(VENV)/bin/vulture

# The tutorial's own Keras code against the seed preset, same epochs, same machine (see README).
bench-keras: setup
	$(PY) benchmarks/keras_vs_fittingroom.py $(ARGS)

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
