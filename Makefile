# Set-up, tests, lint and benchmarks. Everything runs from the repository's own .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# torch is pinned to the release this project is developed against (see DEVELOPERS.md);
# override on other machines, e.g. `make install TORCH_SPEC="torch torchvision"`.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed

.PHONY: install demo test test-brainscore lint docs bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/mmcr pretrain

test: $(STAMP)
	$(PY) -m pytest -q

# The Brain-Score check runs in an environment of its own (brainscore-vision 2.4.x pins numpy<2 and
# scikit-learn<1.6), built once outside the project's .venv and kept in the cache.
BS_VENV ?= $(or $(MMCR_CACHE),$(HOME)/.cache/mmcr)/brainscore-venv
BS_PYTHON ?= $(shell command -v python3.11 || command -v python3)
BS_STAMP := $(BS_VENV)/.installed-brainscore-2.4

$(BS_STAMP):
	test -x $(BS_VENV)/bin/python || $(BS_PYTHON) -m venv $(BS_VENV)
	$(BS_VENV)/bin/python -m pip install --quiet "brainscore-vision==2.4.*" $(TORCH_SPEC) "safetensors>=0.4" pytest
	touch $(BS_STAMP)

test-brainscore: $(STAMP) $(BS_STAMP)
	PYTHONPATH=$(CURDIR)/src $(PY) tests/brainscore/check_plugins.py --brainscore-python $(BS_VENV)/bin/python

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks docs/hooks.py hubconf.py

# The documentation site (mkdocs.yml, docs/), strict: a broken reference or a docstring that does not
# parse fails the build. Output in site/ (ignored); open site/index.html or `python -m http.server -d site`.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

bench: $(STAMP)
	$(PY) benchmarks/bench_objectives.py
	$(PY) benchmarks/bench_augment.py
	$(PY) benchmarks/bench_geometry.py
	$(PY) benchmarks/bench_train.py
	$(PY) benchmarks/bench_linear_probe.py

clean:
	rm -rf $(VENV) build dist site src/*.egg-info .pytest_cache .ruff_cache
