# The two commands: `make demo` and `make test`. Both create/refresh .venv on a fresh machine.
# `make docs` builds the documentation site into site/ (offline). VENV may be overridden: make docs VENV=path.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast bench install browser docs clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# Headless Chromium (Debian's package) for the browser test of the HTML view.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser tests"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "WARNING: could not install chromium; browser tests will be skipped"; }

demo: $(STAMP)
	$(VENV)/bin/qkv explain --html explain.html

test: $(STAMP) browser
	$(PY) -m pytest -q

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
