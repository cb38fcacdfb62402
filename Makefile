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
# tests/test_gdal_conformance.py, 1.6 min of it), beside ~3 min for .venv and ~8 min
# for the main suite.
CORE311_SKIP :=
AZURITE := .cache/azurite/node_modules/.bin/azurite-blob
PYTEST_ARGS ?= -q
ARCH := $(shell uname -m)
ifeq ($(ARCH),aarch64)
TORCH_PINS := torch==2.9.1 torchvision==0.24.1
else
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
endif

# A Python >= 3.12 (torchgeo 0.10 needs it): a working python3.12 on PATH, else
# pyenv's 3.12, else python3 if it is >= 3.11 (core only, with a warning).
define find_python
for candidate in python3.12 "PYENV_VERSION=3.12.1 python3.12"; do \
  if env $$candidate -c 'import sys; assert sys.version_info >= (3, 12)' 2>/dev/null; then \
    echo "env $$candidate"; exit 0; fi; \
done; \
if command -v pyenv >/dev/null 2>&1; then \
  for version in $$(pyenv versions --bare 2>/dev/null | grep -E '^3\.1[2-9]' | sort -rV); do \
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

.PHONY: venv venv311 servers test test311 lint demo clean bench-deps

$(STAMP): pyproject.toml testbed/pyproject.toml
	@python="$$( $(find_python) )"; \
	if [ "$$python" = none ]; then echo "need Python >= 3.11 (3.12 for torch)"; exit 1; fi; \
	echo "using $$python"; \
	[ -x $(PY) ] || $$python -m venv $(VENV); \
	if ! $(PY) -c 'import sys; assert sys.version_info >= (3, 12)'; then \
	  echo "warning: Python < 3.12: installing the core without the torch extra"; \
	  $(PY) -m pip install -q --upgrade pip && \
	  $(PY) -m pip install -q -e '.[dev,aws]' -e ./testbed; \
	else \
	  $(PY) -m pip install -q --upgrade pip && \
	  $(PY) -m pip install -q $(TORCH_PINS) && \
	  $(PY) -m pip install -q -e '.[torch,dev,aws]' -e ./testbed; \
	fi
	@touch $(STAMP)

venv: $(STAMP)

# The core as a new 3.11 user installs it: no torch extra.
$(STAMP311): pyproject.toml testbed/pyproject.toml
	@python="$$( $(find_python311) )"; \
	if [ "$$python" = none ]; then echo "need a Python 3.11 for $(VENV311)"; exit 1; fi; \
	echo "using $$python for $(VENV311)"; \
	[ -x $(VENV311)/bin/python ] || $$python -m venv $(VENV311); \
	$(VENV311)/bin/python -m pip install -q --upgrade pip && \
	$(VENV311)/bin/python -m pip install -q -e '.[dev,aws]' -e ./testbed
	@touch $(STAMP311)

venv311: $(STAMP311)

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

# The import contracts of pyproject.toml ([tool.importlinter]) and the type check
# ([tool.mypy]) run first: a broken layer, a cycle, torch in the core or a type error
# fails the target before any test runs.
test: venv servers
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/mypy rasteret
	@$(PY) -m pytest $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; \
	exit $$status
	@$(MAKE) --no-print-directory test311

# The core suite (tests marked `torch` deselected) on Python 3.11, when one is found
# and .venv is not itself a 3.11 (then the run above was already the 3.11 run).
test311: servers
	@if [ "$$( $(find_python311) )" = none ]; then \
	  echo "no Python 3.11 found: skipping the 3.11 core run"; exit 0; fi; \
	if [ -x $(PY) ] && $(PY) -c 'import sys; assert sys.version_info[:2] == (3, 11)' 2>/dev/null; then \
	  echo "$(VENV) is Python 3.11: the core already ran there"; exit 0; fi; \
	$(MAKE) --no-print-directory -s $(STAMP311) || exit $$?; \
	echo "the core suite on $$($(VENV311)/bin/python -V)"; \
	$(VENV311)/bin/python -m pytest $(PYTEST_ARGS) -m "not torch" \
	  $(foreach f,$(CORE311_SKIP),--ignore=$(f)); status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests on 3.11: failing"; exit 1; fi; \
	exit $$status

lint: venv
	$(VENV)/bin/ruff check rasteret testbed tests benchmarks training_examples

# The peers of benchmarks/aoi.py: odc-stac (the bench extra) and stackstac, whose
# pandas<3 pin is skipped (--no-deps) so the project's pandas stays as it is.
bench-deps: venv
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) -m pip install -q --no-deps 'stackstac>=0.5.1'

demo: venv
	$(PY) training_examples/demo.py

clean:
	rm -rf $(VENV) $(VENV311) .cache .pytest_cache *.egg-info demo-output
