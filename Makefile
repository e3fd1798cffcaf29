# The two commands: `make demo` and `make test`. Both create/refresh .venv on a fresh machine.
# `make docs` builds the documentation site into site/ (offline). VENV may be overridden: make docs VENV=path.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast lint fuzz bench install browser docs clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt -e ".[test,lint]"
	touch $(STAMP)

install: $(STAMP)

# Headless Chromium (Debian's package) for the browser tests of the HTML view. apt waits up to 10 minutes for
# another apt/dpkg to release its lock instead of failing at once. Under CI (CI set and not false/0) a failed
# install fails the target, so that the browser tests can never be skipped silently there (tests/view/conftest.py
# fails them too); elsewhere it warns and the browser tests are skipped.
APT := DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser tests"; \
	  ($(APT) update -qq && $(APT) install -y -qq chromium >/dev/null) || { \
	    case "$${CI:-}" in ""|0|false|no) echo "WARNING: could not install chromium; browser tests will be skipped";; \
	      *) echo "ERROR: CI is set and chromium could not be installed; the browser tests must run in CI" >&2; \
	         exit 1;; esac; }; }

demo: $(STAMP)
	$(VENV)/bin/qkv explain --html explain.html

test: $(STAMP) browser lint
	$(PY) -m pytest -q

# ruff (lint + format check), the layering contracts of DESIGN.md (import-linter) and the types of src/qkv (mypy;
# both configured in pyproject.toml).
lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench tools
	$(VENV)/bin/ruff format --check src tests bench tools
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

# The randomized differential test with 10x the examples of a CI run.
fuzz: $(STAMP)
	QKV_FUZZ_EXAMPLES=20000 QKV_FUZZ_NONFINITE_EXAMPLES=20000 $(PY) -m pytest -q tests/attention/test_fuzz.py

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow and not browser"

# The site: every tutorial block runs on the embedded model, warnings are errors, then an offline link check.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict
	$(PY) tools/check_site.py site

bench: $(STAMP)
	$(PY) -m bench

clean:
	rm -rf $(VENV) build site *.egg-info explain.html
