"""Entrypoint for `ray job submit -- python jobs/benchmark.py {train|score} ...`: the throughput benchmarks."""

import sys

from erosion.cli.main import main

if __name__ == "__main__":
    sys.exit(main([f"benchmark-{sys.argv[1]}", *sys.argv[2:]]))
