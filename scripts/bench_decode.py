"""Decode throughput of the engine vs Hugging Face generate (same as ``lamps-jax bench-engine``).

python scripts/bench_decode.py --model tiny --batch-sizes 1,8 --max-tokens 16
"""

import sys

from lamps_jax.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench-engine", *sys.argv[1:]]))
