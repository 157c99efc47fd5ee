"""Entrypoint for `ray job submit -- python jobs/synth.py --patients N --out s3://...`: a synthetic registry."""

import sys

from erosion.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["synth", *sys.argv[1:]]))
