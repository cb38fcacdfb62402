# rasteret: set-up, tests and the demo. Every install step lives here.
SHELL := /bin/bash
.DEFAULT_GOAL := test

VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The oldest Python the package supports (requires-python), core only (no torch
# extra): `make test` also runs the core suite there whenever a 3.11 is found.
VENV311 := .venv311
STAMP311 := $(VENV311)/.installed
# Test files left out of the 3.11 run (--ignore) if `make test` outgrows the CI budget
# of 25 minutes on 2 cores. None today: measured on a shared, loaded 2-core machine,
# the fresh .venv311 takes about 2 min and the 3.11 core run 4.5 min (the slowest file,
# tests/read/test_gdal_conformance.py, 1.6 min of it), beside ~3 min for .venv and ~8 min
# for the main suite.
CORE311_SKIP :=
AZURITE := .cache/azurite/node_modules/.bin/azurite-blob
PYTEST_ARGS ?= -q
ARCH := $(shell uname -m)
# The test environments install from these locks: exact versions and hashes of every
# package, transitive ones included, per Python and architecture (the torch pins of
# each architecture are in locks/torch-ARCH.in). `make lock` regenerates them.
LOCK312 := locks/py312-$(ARCH).txt
LOCK311 := locks/py311-$(ARCH).txt
LOCK_ARCHES := x86_64 aarch64
UV_VENV := .cache/uv
UV := $(UV_VENV)/bin/uv
export UV_CACHE_DIR := $(CURDIR)/.cache/uv-cache
# `make lock` takes the newest versions pyproject.toml allows; `make lock LOCK_ARGS=`
# keeps the locked ones and only adds or changes what pyproject.toml now asks for.
LOCK_ARGS ?= --upgrade
# The throwaway venv of `make test-latest` (newest allowed versions, no lock).
LATEST := .cache/venv-latest
RANDOM_RUNS ?= 5
# For the docs builds (mkdocs.yml): silences the theme's notice about its successor.
MKDOCS_ENV := NO_MKDOCS_2_WARNING=1

# A Python 3.12 (torchgeo 0.10 needs >= 3.12; the locks are made for 3.12): a working
# python3.12 on PATH, else pyenv's 3.12, else python3 if it is >= 3.11 (core only, from
# the 3.11 lock, with a warning).
define find_python
for candidate in python3.12 "PYENV_VERSION=3.12.1 python3.12"; do \
  if env $$candidate -c 'import sys; assert sys.version_info >= (3, 12)' 2>/dev/null; then \
    echo "env $$candidate"; exit 0; fi; \
done; \
if command -v pyenv >/dev/null 2>&1; then \
  for version in $$(pyenv versions --bare 2>/dev/null | grep -E '^3\.12\.[0-9]+$$' | sort -rV); do \
    bin="$$(pyenv prefix $$version)/bin/python3"; \
    if [ -x "$$bin" ]; then echo "$$bin"; exit 0; fi; \
  done; \
fi; \
if python3 -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then \
  echo "python3"; exit 0; fi; \
echo "none"
endef

# A Python 3.11: a working python3.11 on PATH, else pyenv's newest 3.11, else python3
# if it is 3.11; "none" if there is none (the 3.11 run is then skipped).
define find_python311
for candidate in python3.11 python3; do \
  if $$candidate -c 'import sys; assert sys.version_info[:2] == (3, 11)' 2>/dev/null; then \
    echo "$$candidate"; exit 0; fi; \
done; \
if command -v pyenv >/dev/null 2>&1; then \
  for version in $$(pyenv versions --bare 2>/dev/null | grep -E '^3\.11\.[0-9]+$$' | sort -rV); do \
    bin="$$(pyenv prefix $$version)/bin/python3"; \
    if [ -x "$$bin" ]; then echo "$$bin"; exit 0; fi; \
  done; \
fi; \
echo "none"
endef

.PHONY: venv venv311 servers test test311 test-latest test-random lock lint docs docs-serve \
	docs-figures demo clean bench-deps

# Install a venv from a lock: $(1) the venv, $(2) the lock. uv (itself installed from
# locks/uv.txt) syncs the venv to the lock, removing whatever else it holds, checking
# every hash, downloading in parallel (a fifth of pip's time for the 3.12 venv); its
# cache is in .cache, so a fresh clone starts cold. The two packages of this checkout
# go in editable, without their dependencies (the lock has them) and without build
# isolation (the lock has setuptools).
define install_locked
if [ ! -f "$(2)" ]; then \
  echo "no lock for this machine: $(2) (run 'make lock' on a machine with uv's registry)"; \
  exit 1; fi; \
[ -x $(1)/bin/python ] || $$python -m venv --without-pip $(1) || exit 1; \
$(UV) pip sync -q --python $(1)/bin/python --require-hashes "$(2)" && \
$(UV) pip install -q --python $(1)/bin/python --no-deps --no-build-isolation \
  -e . -e ./testbed && \
$(1)/bin/python -m pip check
endef

$(STAMP): $(UV) $(LOCK312) $(LOCK311) pyproject.toml testbed/pyproject.toml
	@python="$$( $(find_python) )"; \
	if [ "$$python" = none ]; then echo "need Python >= 3.11 (3.12 for torch)"; exit 1; fi; \
	echo "using $$python"; \
	if $$python -c 'import sys; assert sys.version_info >= (3, 12)'; then \
	  $(call install_locked,$(VENV),$(LOCK312)); \
	else \
	  echo "warning: Python < 3.12: installing the core without the torch extra"; \
	  $(call install_locked,$(VENV),$(LOCK311)); \
	fi
	@touch $(STAMP)

venv: $(STAMP)

# The core as a new 3.11 user installs it: no torch extra.
$(STAMP311): $(UV) $(LOCK311) pyproject.toml testbed/pyproject.toml
	@python="$$( $(find_python311) )"; \
	if [ "$$python" = none ]; then echo "need a Python 3.11 for $(VENV311)"; exit 1; fi; \
	echo "using $$python for $(VENV311)"; \
	$(call install_locked,$(VENV311),$(LOCK311))
	@touch $(STAMP311)

venv311: $(STAMP311)

# The locks, regenerated by uv (itself installed from locks/uv.txt into .cache/uv) for
# every architecture from any one machine: the 3.12 test venv (torch, dev, aws and
# this architecture's torch pins) and the 3.11 core venv (dev, aws). Run
# `make test-latest` first: it shows what the newest versions would break.
$(UV): locks/uv.txt
	@[ -x $(UV_VENV)/bin/python ] || python3 -m venv $(UV_VENV)
	$(UV_VENV)/bin/python -m pip install -q --require-hashes --no-deps -r locks/uv.txt
	@touch $(UV)

lock: $(UV)
	@set -e; for arch in $(LOCK_ARCHES); do \
	  echo "locking Python 3.12 and 3.11 for $$arch"; \
	  $(UV) pip compile -q $(LOCK_ARGS) --generate-hashes --custom-compile-command "make lock" \
	    --python-version 3.12 --python-platform $$arch-unknown-linux-gnu \
	    pyproject.toml --extra torch --extra dev --extra aws locks/torch-$$arch.in \
	    locks/tools.in -o locks/py312-$$arch.txt; \
	  $(UV) pip compile -q $(LOCK_ARGS) --generate-hashes --custom-compile-command "make lock" \
	    --python-version 3.11 --python-platform $$arch-unknown-linux-gnu \
	    pyproject.toml --extra dev --extra aws locks/tools.in -o locks/py311-$$arch.txt; \
	done
	$(UV) pip compile -q $(LOCK_ARGS) --generate-hashes --custom-compile-command "make lock" \
	  locks/uv.in -o locks/uv.txt

servers:
	@if { ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; } || \
	    [ ! -f /usr/lib/nginx/modules/ngx_http_echo_module.so ]; then \
	  echo "installing nginx and its echo module (Debian packages)"; \
	  sudo=""; [ "$$(id -u)" = 0 ] || sudo="sudo"; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install \
	    -y -qq nginx libnginx-mod-http-echo >/dev/null; \
	fi
	@if [ ! -x $(AZURITE) ]; then \
	  echo "installing Azurite (npm) into .cache/azurite"; \
	  mkdir -p .cache/azurite && npm install --silent --no-audit --no-fund \
	    --prefix .cache/azurite azurite >/dev/null; \
	fi

# The import contracts of pyproject.toml ([tool.importlinter]), the type check
# ([tool.mypy]) and the strict docs build run first: a broken layer, a cycle, torch in
# the core, a type error, a broken link or cross-reference or an undocumented public
# name fails the target before any test runs.
test: venv servers
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/mypy rasteret
	$(MKDOCS_ENV) $(VENV)/bin/mkdocs build --strict --quiet
	@$(PY) -m pytest $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; \
	exit $$status
	@$(MAKE) --no-print-directory test311

# The core suite on Python 3.11, when one is found and .venv is not itself a 3.11 (then
# the run above was already the 3.11 run): the tests marked `torch` and `integration`
# deselected. The end-to-end runs on the local servers (the slowest quarter of the
# suite, minutes of it) ran on 3.12 just before; what differs between the two Pythons
# (syntax, the standard library, each package's 3.11 build) is covered by the rest.
test311: servers
	@if [ "$$( $(find_python311) )" = none ]; then \
	  echo "no Python 3.11 found: skipping the 3.11 core run"; exit 0; fi; \
	if [ -x $(PY) ] && $(PY) -c 'import sys; assert sys.version_info[:2] == (3, 11)' 2>/dev/null; then \
	  echo "$(VENV) is Python 3.11: the core already ran there"; exit 0; fi; \
	$(MAKE) --no-print-directory -s $(STAMP311) || exit $$?; \
	echo "the core suite on $$($(VENV311)/bin/python -V)"; \
	$(VENV311)/bin/python -m pytest $(PYTEST_ARGS) -m "not torch and not integration" \
	  $(foreach f,$(CORE311_SKIP),--ignore=$(f)); status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests on 3.11: failing"; exit 1; fi; \
	exit $$status

# Drift on purpose: the newest versions pyproject.toml allows (this machine's torch
# pins aside), in a throwaway venv, through the same checks as `make test`. Not part
# of `make test`; run it before `make lock` (see the README). The test comparing the
# installed versions with the lock is skipped there (RASTERET_UNLOCKED=1).
test-latest: $(UV) servers
	@python="$$( $(find_python) )"; rm -rf $(LATEST); $$python -m venv --without-pip $(LATEST)
	$(UV) pip install -q --refresh --python $(LATEST)/bin/python pip \
	  -r locks/torch-$(ARCH).in -e '.[torch,dev,aws]' -e ./testbed
	$(UV) pip freeze -q --python $(LATEST)/bin/python > $(LATEST)/freeze.txt
	$(LATEST)/bin/python locks/drift.py $(LOCK312) $(LATEST)/freeze.txt
	$(LATEST)/bin/lint-imports --no-cache
	$(LATEST)/bin/mypy rasteret
	$(MKDOCS_ENV) $(LATEST)/bin/mkdocs build --strict --quiet
	RASTERET_UNLOCKED=1 $(LATEST)/bin/python -m pytest $(PYTEST_ARGS)

# Order dependencies: the whole suite RANDOM_RUNS times in random order, one line a
# run (its seed, exit code and summary; `-p randomly --randomly-seed=N` repeats a run;
# logs in .cache/random-N.log).
test-random: venv servers
	@mkdir -p .cache; for run in $$(seq 1 $(RANDOM_RUNS)); do \
	  seed=$$(od -An -N4 -tu4 /dev/urandom | tr -d ' '); \
	  $(PY) -m pytest -q -p randomly --randomly-seed=$$seed -p no:cacheprovider \
	    $(RANDOM_ARGS) > .cache/random-$$run.log 2>&1; status=$$?; \
	  echo "run $$run: seed $$seed, exit $$status, $$(tail -n 1 .cache/random-$$run.log)"; \
	done

lint: venv
	$(VENV)/bin/ruff check rasteret testbed tests benchmarks training_examples docs

# The guides and the API reference, built as `make test` builds them (a warning fails:
# a broken link or cross-reference, a page left out of the nav, a public name without a
# docstring or a place in the reference; see docs/hooks.py). Open .cache/site/index.html,
# or `make docs-serve` for http://127.0.0.1:8000 rebuilt on every save.
docs: venv
	$(MKDOCS_ENV) $(VENV)/bin/mkdocs build --strict --quiet

docs-serve: venv
	$(MKDOCS_ENV) $(VENV)/bin/mkdocs serve

# The figures of docs/training-data.md (collection, chip and split maps), drawn from a
# small synthetic world on the local disk and committed under docs/figures/ (small PNGs).
docs-figures: venv
	$(PY) docs/figures/make_figures.py --out docs/figures

# The peers of benchmarks/aoi.py: odc-stac (the bench extra) and stackstac, whose
# pandas<3 pin is skipped (--no-deps) so the project's pandas stays as it is.
bench-deps: venv
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) -m pip install -q --no-deps 'stackstac>=0.5.1'

demo: venv
	$(PY) training_examples/demo.py

clean:
	rm -rf $(VENV) $(VENV311) .cache .pytest_cache *.egg-info demo-output
