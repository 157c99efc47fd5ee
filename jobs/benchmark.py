"""Entrypoint for `ray job submit -- python jobs/benchmark.py --registry ... --out ...`: training throughput."""

import sys

from erosion.cli import main

if __name__ == "__main__":
    sys.exit(main(["benchmark-train", *sys.argv[1:]]))
