import sys

from rl_seq.cli import main

sys.exit(main())
