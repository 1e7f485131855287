"""Thin wrapper: `python scripts/bench_ppo.py [args]` == `rl-seq bench ppo [args]`."""

import sys

from rl_seq.cli import main

sys.exit(main(["bench", "ppo", *sys.argv[1:]]))
