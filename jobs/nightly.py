"""Entrypoint for `ray job submit -- python jobs/nightly.py --registry ... --model ... --ratings ... --out ...`."""

import sys

from erosion.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["nightly", *sys.argv[1:]]))
