"""Entrypoint for `ray job submit -- python jobs/report.py --scores RUN --ratings ...`: the agreement report."""

import sys

from erosion.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["report", *sys.argv[1:]]))
