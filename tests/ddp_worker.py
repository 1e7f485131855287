"""Run under torchrun by tests/test_distributed.py (not a test module itself).

    torchrun --nproc_per_node 2 tests/ddp_worker.py OUT STEPS

Trains ``dt`` data-parallel with sampling arranged so that rank r's batch is rows
[r*B, (r+1)*B) of the batch a single process would draw with batch 2B from the same seed;
rank 0 saves the weights to OUT/weights.pt."""

import sys

import torch

import rl_seq
from rl_seq.agents import decision
from rl_seq.distributed import world

B, SEED = 4, 0
CONFIG = dict(amp="off",  # the law is exact in float32; bf16 rounds the two halves of a batch differently
              seed=SEED, lr=1e-3, warmup_steps=1, eval_episodes=0, log_every=1, threads=1, context=5,
              backbone=dict(d_model=16, n_layers=1, dropout=0.0, mixer_options={"dropout": 0.0}))


class Halves(decision.SegmentSampler):
    """Each rank's share of the one global stream (seeded as a single process's)."""

    def __init__(self, *a, seed, **k):
        super().__init__(*a, seed=SEED, **k)

    def sample(self, batch_size):
        rank, size = world()
        full = super().sample(batch_size * size)
        return {k: v[rank * batch_size:(rank + 1) * batch_size] for k, v in full.items()}


if __name__ == "__main__":
    out, steps = sys.argv[1], int(sys.argv[2])
    decision.SegmentSampler = Halves
    agent = rl_seq.make_agent("dt", dataset="rl_seq/pointgoal/medium-v0", batch_size=B, **CONFIG)
    agent.learn("rl_seq/pointgoal/medium-v0", steps=steps)
    if world()[0] == 0:
        torch.save(agent.model.state_dict(), f"{out}/weights.pt")
