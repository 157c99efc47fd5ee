"""Entrypoint for `ray job submit -- python jobs/train.py --registry ... --ratings ... --out s3://...`: training."""

import sys

from erosion.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
