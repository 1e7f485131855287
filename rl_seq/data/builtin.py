"""Built-in datasets the repository makes in seconds, so the README's main command and
the tests need no network and no external data.

``rl_seq/pointgoal/{random,medium,medium-replay,expert}-v0``: 200 episodes (10k steps) of
``rl_seq/PointGoal-v0`` each, acted by ``gain · expert_action + N(0, std²)``, clipped: expert
(gain 1, std 0.1), medium (gain 0.25, std 0.5), medium-replay (gain 0 -> 0.25 and std 1.0 ->
0.5 across the episodes, like a learner's history) or uniformly random actions.
Reference scores: the random and the noiseless expert policies' mean returns over 100
episodes.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

ENV_ID = "rl_seq/PointGoal-v0"
LEVELS = ("random", "medium", "medium-replay", "expert")
BUILTIN = {f"rl_seq/pointgoal/{lvl}-v0": lvl for lvl in LEVELS}


def _rollouts(noise: np.ndarray | None, episodes: int, seed: int,
              gain: np.ndarray | None = None) -> list[dict]:
    """Per-episode action ``gain · expert + N(0, noise²)``, clipped (noise None = uniform
    random actions; gain None = 1)."""
    gain = np.ones(episodes) if gain is None else gain
    env = gym.make(ENV_ID)
    rng = np.random.default_rng(seed)
    out = []
    for e in range(episodes):
        obs, _ = env.reset(seed=seed * 100_000 + e)
        ep = dict(observations=[obs], actions=[], rewards=[], terminations=[], truncations=[])
        done = False
        while not done:
            if noise is None:
                a = rng.uniform(-1, 1, env.action_space.shape).astype(np.float32)
            else:
                a = gain[e] * env.unwrapped.expert_action() + rng.normal(0, noise[e], env.action_space.shape)
                a = np.clip(a, -1, 1).astype(np.float32)
            obs, r, term, trunc, _ = env.step(a)
            for k, v in (("observations", obs), ("actions", a), ("rewards", r),
                         ("terminations", term), ("truncations", trunc)):
                ep[k].append(v)
            done = term or trunc
        out.append({k: np.asarray(v) for k, v in ep.items()})
    env.close()
    return out


def _mean_return(eps: list[dict]) -> float:
    return float(np.mean([e["rewards"].sum() for e in eps]))


def make_builtin(dataset_id: str, episodes: int = 200, seed: int = 0):
    """Record a built-in dataset into the local Minari store and return it."""
    from minari.data_collector import EpisodeBuffer

    from rl_seq.data.store import create_dataset

    level = BUILTIN[dataset_id]
    noise, gain = {
        "random": (None, None),
        "medium": (np.full(episodes, 0.5), np.full(episodes, 0.25)),
        "medium-replay": (np.linspace(1.0, 0.5, episodes), np.linspace(0.0, 0.25, episodes)),
        "expert": (np.full(episodes, 0.1), None),
    }[level]
    eps = _rollouts(noise, episodes, seed, gain)
    ref_min = _mean_return(_rollouts(None, 100, seed + 1))
    ref_max = _mean_return(_rollouts(np.zeros(100), 100, seed + 1))
    buffers = [EpisodeBuffer(id=i, observations=e["observations"], actions=e["actions"],
                             rewards=e["rewards"], terminations=e["terminations"],
                             truncations=e["truncations"]) for i, e in enumerate(eps)]
    return create_dataset(
        dataset_id, buffers, env=ENV_ID, algorithm_name=f"scripted expert ({level})",
        author="rl_seq", ref_min_score=ref_min, ref_max_score=ref_max,
        description=f"rl_seq built-in PointGoal dataset, level {level}; see rl_seq.data.builtin")
