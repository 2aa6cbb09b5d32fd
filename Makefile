# Two commands on a fresh machine: `make demo` (the main job) and `make test`.
# Each bootstraps what it needs: uv, the locked environment in .venv, and the Debian
# package dataset-fashion-mnist (real Fashion-MNIST, the embedded default data set).

PYTHON ?= python3
UV := $(shell command -v uv 2>/dev/null || echo "$(PYTHON) -m uv")
RUN := $(UV) run --frozen
FMNIST_DIR := /usr/share/datasets/fashion-mnist
OUT ?= out/demo
JOBS ?= 2

.PHONY: help env data browser demo test clean figures

help:
	@echo "make demo   run the main job into $(OUT)"
	@echo "make test   run the test suite"
	@echo "make env    install the locked environment (.venv)"
	@echo "make data   install Fashion-MNIST (Debian package dataset-fashion-mnist)"

# uv itself, then the locked environment; re-synced when the lock or project changes.
.venv/.synced: pyproject.toml uv.lock
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet --user uv \
		|| $(PYTHON) -m pip install --quiet --user --break-system-packages uv
	$(UV) sync --frozen --compile-bytecode
	@touch $@

env: .venv/.synced

data:
	@if [ -d "$(FMNIST_DIR)" ]; then echo "Fashion-MNIST found in $(FMNIST_DIR)"; else \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq dataset-fashion-mnist; fi

# Debian's chromium and chromedriver: the explorer's page is tested in a real headless browser.
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then echo "chromium found"; else \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium chromium-driver; fi

demo: env data
	$(RUN) attnlab demo --out $(OUT)

test: env data browser
	ATTNLAB_STRICT_TESTS=1 $(RUN) pytest -n $(JOBS) -q

clean:
	rm -rf .venv .pytest_cache out

figures: env data
	$(RUN) attnlab figures
