# Two commands: `make serve` and `make test`. Both install what they need into
# .venv from the pinned lock files in requirements/.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

# Playwright (the browser tests) drives Debian's chromium; it must never
# download a browser build of its own.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD := 1

.PHONY: serve test lint typecheck pytest bench lock clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.runtime: $(BIN)/python requirements/runtime.lock pyproject.toml
	$(BIN)/pip install --quiet -r requirements/runtime.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements/dev.lock
	$(BIN)/pip install --quiet -r requirements/dev.lock
	touch $@

# Debian's chromium for tests/test_pages_browser.py and tests/test_cross_site.py.
$(VENV)/.chromium: $(BIN)/python
	command -v chromium >/dev/null 2>&1 || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }
	touch $@

# nginx for tests/test_nginx_config.py (docs/nginx/bastion.conf in front of
# bastion serve); the test itself never installs anything.
$(VENV)/.nginx: $(BIN)/python
	command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light; }
	touch $@

serve: $(VENV)/.runtime
	$(BIN)/bastion db upgrade
	$(BIN)/bastion serve

test: lint typecheck pytest

lint: $(VENV)/.dev
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples

typecheck: $(VENV)/.dev
	$(BIN)/mypy src

pytest: $(VENV)/.dev $(VENV)/.chromium $(VENV)/.nginx
	$(BIN)/pytest

bench: $(VENV)/.dev
	$(BIN)/python bench/run.py

# Re-pin after changing dependencies in pyproject.toml.
lock:
	rm -rf /tmp/bastion-lock && $(PYTHON) -m venv /tmp/bastion-lock
	/tmp/bastion-lock/bin/pip install --quiet .
	/tmp/bastion-lock/bin/pip freeze --exclude bastion-auth > requirements/runtime.lock.new
	@echo "review requirements/runtime.lock.new, then move it into place"

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
