"""Thin wrapper: `python scripts/bench_sb3.py [args]` == `rl-seq bench sb3 [args]`."""

import sys

from rl_seq.cli import main

sys.exit(main(["bench", "sb3", *sys.argv[1:]]))
