"""KV swap throughput vs plain copies and the step overhead of swaps in flight (``lamps-jax bench-swap``)."""

import sys

from lamps_jax.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench-swap", *sys.argv[1:]]))
