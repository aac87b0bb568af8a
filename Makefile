# Two commands do all the set-up:
#   make run    install what is missing, then start the app on http://127.0.0.1:5000 (embedded SQS)
#   make test   install what is missing (test packages, LocalStack), then run the whole test suite

PYTHON ?= python3
VENV := .venv
LOCALSTACK_VENV := .venv-localstack
# LocalStack 4.14 needs Python 3.13: python3.13 on PATH, or pyenv's.
PYTHON313 ?= $(shell for p in $$(ls -d $$(pyenv root 2>/dev/null)/versions/3.13*/bin/python 2>/dev/null) python3.13; do \
	"$$p" -c 'import sys; assert sys.version_info[:2] == (3, 13)' 2>/dev/null && { command -v "$$p"; break; }; done)

.PHONY: run test install install-dev localstack clean

run: install
	$(VENV)/bin/python app.py

test: install-dev localstack
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

install: $(VENV)/.installed node_modules/.installed

install-dev: install $(VENV)/.installed-dev

$(VENV)/.installed: requirements.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements-dev.txt $(VENV)/.installed
	$(VENV)/bin/python -m pip install --quiet -r requirements-dev.txt
	touch $@

# The Socket.IO browser client comes from npm and is served by the app (never committed).
node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

localstack: $(LOCALSTACK_VENV)/.installed

$(LOCALSTACK_VENV)/.installed: requirements-localstack.txt
	@if [ -z "$(PYTHON313)" ]; then \
	  echo "Python 3.13 not found: LocalStack tests will be skipped (CI fails instead). Install python3.13 or set PYTHON313=..."; \
	else \
	  set -e; test -x $(LOCALSTACK_VENV)/bin/python || $(PYTHON313) -m venv $(LOCALSTACK_VENV); \
	  $(LOCALSTACK_VENV)/bin/python -m pip install --quiet --upgrade pip; \
	  $(LOCALSTACK_VENV)/bin/python -m pip install --quiet -r requirements-localstack.txt; \
	  touch $@; \
	fi

clean:
	rm -rf $(VENV) $(LOCALSTACK_VENV) node_modules .pytest_cache
