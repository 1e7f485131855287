"""How trained offline agents' greedy actions compare with their dataset's actions.

For ``--states`` random dataset states, each model acts from a fresh context (the state as
the first step of an episode) and the script prints a table: mean absolute difference to the
data's action, mean |action|, and the fraction of action dimensions at a bound of the action
space (within 1% of its range), next to the data's own fraction and a uniform-random policy.

    MINARI_DATASETS_PATH=../shared/datasets python scripts/action_stats.py halfcheetah/medium-v0 \\
        runs/grid5k/dt-halfcheetah_medium-v0-s0/model runs/grid5k/qt-halfcheetah_medium-v0-s0/model
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import rl_seq
from rl_seq.data import load_episodes
from rl_seq.plot import print_table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset")
    p.add_argument("models", nargs="+", help="model folders (a run's model/)")
    p.add_argument("--states", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    data = load_episodes(a.dataset)
    low, high = data.action_space.low, data.action_space.high
    rng = np.random.default_rng(a.seed)
    idx = rng.integers(0, data.num_steps, a.states)
    obs, act = data.observations[idx].astype(np.float32), data.actions[idx].astype(np.float32)

    def stats(name: str, x: np.ndarray) -> list:
        at_bound = (np.minimum(x - low, high - x) <= 0.01 * (high - low)).mean()
        return [name, float(np.abs(x - act).mean()), float(np.abs(x).mean()), float(at_bound)]

    rows = [stats("data", act), stats("uniform random", rng.uniform(low, high, act.shape).astype(np.float32))]
    for path in a.models:
        agent = rl_seq.load_agent(path)
        x, _ = agent.predict(obs, None, np.ones(len(obs), bool), rewards=np.zeros(len(obs)), deterministic=True)
        rows.append(stats(f"{agent.algo} ({Path(path).resolve().parent.name})", x))
    print_table(f"greedy actions on {a.states} states of {a.dataset} (fresh context)",
                 ["policy", "|a - a_data|", "|a|", "fraction at a bound"], rows)


if __name__ == "__main__":
    main()
