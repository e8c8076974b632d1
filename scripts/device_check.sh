#!/usr/bin/env bash
# The one check to run on a GPU or TPU machine (under 8 minutes there), and on a CPU for what applies.
#
#   scripts/device_check.sh [--quick] [--model M] [--output DIR] [--no-install]
#
# 1. install: finds the accelerator (nvidia-smi: GPU; /dev/accel* or /dev/vfio with TPU_* set: TPU) and, unless
#    JAX already sees it, installs the matching extra (pip install -e ".[gpu]" or ".[tpu]"); --no-install skips it.
# 2. parity: the paged-attention kernels against the jnp reference and the engine's greedy tokens against the
#    reference engine and dense recompute, compiled for this backend (python -m lamps_jax.bench.device_parity).
# 3. attention: scripts/bench_attention.py, achieved GB/s of paged attention against the device's peak.
# 4. engine: lamps-jax bench-engine at batch 1/8/32/128 (the engine alone: --peers ''), per weight format.
# 5. swap: lamps-jax bench-swap, device <-> host KV page GB/s and the step overhead of swaps.
# 6. calibrate: lamps-jax calibrate, the device profile (<device>-<model>.json and .report.json).
# 7. summary: summary.json and summary.md over everything (python -m lamps_jax.bench.device_summary).
# Everything goes under one folder (default: bench_results/device_check/<UTC time>); each step's output is in
# logs/<step>.log and its status and seconds in steps.tsv. A failed step is recorded and the next one runs; the
# exit status is 1 when any step failed. --quick: the tiny model and small grids, a few minutes on a CPU.
# PYTHON picks the interpreter (default: .venv/bin/python when present, else python3).
set -uo pipefail

quick=0
install=1
model=""
output=""
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick=1 ;;
        --no-install) install=0 ;;
        --model) model="${2:?--model needs a value}"; shift ;;
        --output) output="${2:?--output needs a folder}"; shift ;;
        -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
        *) echo "device_check.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
output="${output:-bench_results/device_check/$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$output/logs"
printf 'step\tstatus\tseconds\tcommand\n' > "$output/steps.tsv"

# step NAME LIMIT_SECONDS COMMAND...: runs COMMAND with its output in logs/NAME.log and records how it went.
# The limits add up to 8.5 minutes on an accelerator; a CPU (compiling slowly, often shared) gets five times them.
step() {
    local name="$1" limit=$(( $2 * limit_scale ))
    shift 2
    local start status
    start=$(date +%s)
    echo "== $name: $*"
    if timeout "$limit" "$@" > "$output/logs/$name.log" 2>&1; then status=ok; else status="failed ($?)"; fi
    printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$(( $(date +%s) - start ))" "$*" >> "$output/steps.tsv"
    echo "   $status in $(( $(date +%s) - start )) s (log: $output/logs/$name.log)"
}

accelerator=cpu
if command -v nvidia-smi > /dev/null 2>&1 && nvidia-smi -L > /dev/null 2>&1; then
    accelerator=gpu
elif compgen -G "/dev/accel*" > /dev/null || { [ -d /dev/vfio ] && env | grep -q '^TPU_'; }; then
    accelerator=tpu
fi
backend=$("$PYTHON" -c 'import jax; print(jax.default_backend())' 2>/dev/null || echo none)
if [ "$accelerator" != cpu ] && [ "$backend" != "$accelerator" ] && [ "$install" = 1 ]; then
    limit_scale=1
    step install 600 "$PYTHON" -m pip install -e ".[$accelerator]"
    backend=$("$PYTHON" -c 'import jax; print(jax.default_backend())' 2>/dev/null || echo none)
fi
device=$("$PYTHON" -c 'import jax; print(jax.devices()[0].device_kind)' 2>/dev/null || echo unknown)
echo "accelerator found: $accelerator; JAX backend: $backend ($device)"
if [ "$backend" = cpu ]; then limit_scale=5; else limit_scale=1; fi

if [ -z "$model" ]; then
    if [ "$quick" = 1 ] || ! "$PYTHON" -c 'from lamps_jax.model.sources import smollm2_gguf_path; smollm2_gguf_path()' \
        > /dev/null 2>&1; then
        model=tiny
    else
        model=smollm2-135m
    fi
fi
if [ "$backend" = cpu ]; then dtype=float32; else dtype=bfloat16; fi
# the engine's weight formats: float32 and w8a8 on a CPU (--quick: float32), bfloat16 and float32 on an accelerator
if [ "$backend" = cpu ]; then engine_dtypes=float32,w8a8; else engine_dtypes=bfloat16,float32; fi
lamps=("$PYTHON" -m lamps_jax.cli)
if [ "$quick" = 1 ]; then
    parity_flags=(--quick)
    attention_flags=(--batch-sizes 1 --context-lens 256 --page-sizes 16 --repeats 3)
    engine_flags=(--batch-sizes 1,8 --num-prompts 8 --max-tokens 8 --dtypes float32)
    swap_flags=(--pages 4,16 --repeats 2)
    calibrate_flags=(--repeats 1 --kv-memory-mib 64)
else
    parity_flags=()
    attention_flags=()
    engine_flags=(--batch-sizes 1,8,32,128 --num-prompts 128 --max-tokens 128 --dtypes "$engine_dtypes")
    swap_flags=()
    calibrate_flags=(--repeats 3)
fi
"$PYTHON" - "$output" "$device" "$backend" "$model" "$dtype" "$quick" <<'EOF'
import json, sys
out, device, backend, model, dtype, quick = sys.argv[1:]
setting = {"device": device, "backend": backend, "model": model, "dtype": dtype, "quick": quick == "1"}
open(f"{out}/setting.json", "w").write(json.dumps(setting, indent=2) + "\n")
EOF

step parity 150 "$PYTHON" -m lamps_jax.bench.device_parity --output "$output/parity" "${parity_flags[@]}"
step attention 60 "$PYTHON" scripts/bench_attention.py --output-dir "$output/attention" "${attention_flags[@]}"
step engine 120 "${lamps[@]}" bench-engine --model "$model" --peers '' --output "$output/engine" "${engine_flags[@]}"
step swap 60 "${lamps[@]}" bench-swap --model "$model" --output "$output/swap" "${swap_flags[@]}"
step calibrate 120 "${lamps[@]}" calibrate --model "$model" --dtype "$dtype" --output "$output/profiles" \
    "${calibrate_flags[@]}"
"$PYTHON" -m lamps_jax.bench.device_summary "$output"
