"""Thin wrapper: `python scripts/bench_train.py [args]` == `rl-seq bench train [args]`."""

import sys

from rl_seq.cli import main

sys.exit(main(["bench", "train", *sys.argv[1:]]))
