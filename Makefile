# Two commands a newcomer needs:  make demo  (the main job end to end)  and  make test  (all tests).
# Both set themselves up: Debian packages, the Python venv, the Kafka jars, ClickHouse, footage.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-unit test-integration stack-up stack-down stack-status clean

$(STAMP): pyproject.toml
	bash infra/local/bootstrap.sh
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[test]"
	touch $(STAMP)

setup: $(STAMP)
	bash infra/local/stack.sh install
	bash infra/local/footage.sh >/dev/null

demo: setup
	$(BIN)/flowctl demo

test: setup
	$(BIN)/python -m pytest

test-unit: $(STAMP)
	$(BIN)/python -m pytest -m "not integration"

test-integration: setup
	$(BIN)/python -m pytest -m integration

stack-up: $(STAMP)
	$(BIN)/flowctl stack up

stack-down:
	bash infra/local/stack.sh down

stack-status:
	bash infra/local/stack.sh status

clean: stack-down
	rm -rf .var .venv
