"""Thin wrapper: `python scripts/bench_sampler.py [args]` == `rl-seq bench sampler [args]`."""

import sys

from rl_seq.cli import main

sys.exit(main(["bench", "sampler", *sys.argv[1:]]))
