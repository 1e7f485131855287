"""Thin wrapper: `python scripts/bench_kernels.py [args]` == `rl-seq bench kernels [args]`."""

import sys

from rl_seq.cli import main

sys.exit(main(["bench", "kernels", *sys.argv[1:]]))
