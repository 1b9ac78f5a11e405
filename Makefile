# Two entry points for a new user; both create .venv on first use.
#   make demo   run the main job (layer-wise eval of two tiny backbones on digits), offline
#   make test   run the test suite, offline, without the slow end-to-end cases (make test-e2e: only those)
#   make lint   check formatting, lint and types (make format fixes what it can)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1

.PHONY: demo test test-e2e test-all lint format clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@touch $(STAMP)

demo: $(STAMP)
	$(OFFLINE) $(BIN)/aimbench demo

# The fast cases in parallel (one worker per core, at most 4: each holds torch); the end-to-end
# cases one at a time, since they run clusters and process groups that compete for the same cores.
test: $(STAMP)
	$(OFFLINE) $(BIN)/python -m pytest -m "not e2e" -n auto --maxprocesses 4

test-e2e: $(STAMP)
	$(OFFLINE) $(BIN)/python -m pytest -m e2e

test-all: $(STAMP)
	$(OFFLINE) $(BIN)/python -m pytest

# The formatter, linter and type checker configured in pyproject.toml ([tool.ruff], [tool.mypy]); CI fails on any.
lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) results/runs .pytest_cache
