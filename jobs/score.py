"""Entrypoint for `ray job submit -- python jobs/score.py --registry ... --model ... --out s3://...`: scoring."""

import sys

from erosion.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["score", *sys.argv[1:]]))
