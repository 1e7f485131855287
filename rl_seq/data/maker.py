"""D4RL-style datasets for any Gymnasium env with a Stable-Baselines3 expert.

``make_datasets(env_id, "ns/name")`` trains (or loads) an SB3 expert, keeping ``checkpoints``
snapshots along the way, then records the levels as Minari datasets ``ns/name/LEVEL-v0``:

- ``random``: uniformly random actions;
- ``medium``: the stochastic snapshot whose return is closest to ``medium_fraction`` of the
  way from random to expert;
- ``medium-replay``: rollouts of every snapshot up to the medium one, in training order;
- ``expert``: the final snapshot, acting stochastically.

``ref_min_score`` is the random policy's mean return and ``ref_max_score`` the deterministic
expert's, so normalised scores run from 0 (random) to 1 (expert), as in the datasets under
``shared/datasets``.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np

log = logging.getLogger(__name__)
LEVELS = ("random", "medium", "medium-replay", "expert")


def rollouts(env_id: str, policy: Callable[[np.ndarray], np.ndarray] | None, steps: int, seed: int,
             min_episodes: int = 1) -> list[dict]:
    """Whole episodes until at least ``steps`` transitions (and ``min_episodes``) are
    recorded. ``policy`` maps one observation to one action (None: uniform random)."""
    env = gym.make(env_id)
    env.action_space.seed(seed)
    out, total, e = [], 0, 0
    while total < steps or len(out) < min_episodes:
        obs, _ = env.reset(seed=seed + e)
        ep = dict(observations=[obs], actions=[], rewards=[], terminations=[], truncations=[])
        done = False
        while not done:
            a = env.action_space.sample() if policy is None else policy(obs)
            obs, r, term, trunc, _ = env.step(a)
            for k, v in (("observations", obs), ("actions", a), ("rewards", r), ("terminations", term),
                         ("truncations", trunc)):
                ep[k].append(v)
            done = term or trunc
        out.append({k: np.asarray(v) for k, v in ep.items()})
        total += len(ep["rewards"])
        e += 1
    env.close()
    return out


def mean_return(eps: list[dict]) -> float:
    return float(np.mean([e["rewards"].sum() for e in eps]))


def _policy(model, deterministic: bool):
    return lambda obs: model.predict(obs, deterministic=deterministic)[0]


def train_expert(env_id: str, algo: str, steps: int, checkpoints: int, n_envs: int, seed: int,
                 expert_kwargs: dict | None = None, workdir: str | Path | None = None) -> list:
    """SB3 expert trained in ``checkpoints`` chunks; each snapshot is saved under
    ``workdir`` (SB3's own format) and loaded back; returns the snapshots in order."""
    from stable_baselines3 import PPO, SAC
    from stable_baselines3.common.env_util import make_vec_env

    cls = {"ppo": PPO, "sac": SAC}[algo]
    venv = make_vec_env(env_id, n_envs=n_envs if algo == "ppo" else 1, seed=seed)
    model = cls("MlpPolicy", venv, seed=seed, verbose=0, **(expert_kwargs or {}))
    chunk = max(1, steps // checkpoints)
    workdir = Path(workdir or tempfile.mkdtemp(prefix="rl_seq_expert_"))
    from rich.progress import track

    paths = []
    for i in track(range(checkpoints), description=f"training {algo.upper()} expert on {env_id}"):
        model.learn(chunk, reset_num_timesteps=False)
        paths.append(workdir / f"snapshot_{i:02d}.zip")
        model.save(paths[-1])
    log.info("expert snapshots in %s", workdir)
    return [cls.load(p, device="cpu") for p in paths]


def save_level(dataset_id: str, eps: list[dict], env_id: str, ref_min: float, ref_max: float, desc: str):
    from minari.data_collector import EpisodeBuffer

    from rl_seq.data.store import create_dataset

    buffers = [EpisodeBuffer(id=i, observations=e["observations"], actions=e["actions"],
                             rewards=list(e["rewards"]), terminations=list(e["terminations"]),
                             truncations=list(e["truncations"])) for i, e in enumerate(eps)]
    return create_dataset(dataset_id, buffers, env=env_id, algorithm_name="rl_seq datasets make",
                          author="rl_seq", ref_min_score=ref_min, ref_max_score=ref_max, description=desc)


def make_datasets(env_id: str, name: str, levels=LEVELS, expert_steps: int = 100_000,
                  steps_per_level: int = 20_000, checkpoints: int = 10, medium_fraction: float = 0.4,
                  n_envs: int = 4, seed: int = 0, algo: str = "ppo", expert_kwargs: dict | None = None,
                  expert_path: str | Path | None = None, eval_episodes: int = 10) -> dict:
    """Make the levels; returns and prints ``{level: summary}``."""
    bad = set(levels) - set(LEVELS)
    if bad:
        raise ValueError(f"unknown level(s) {sorted(bad)}; choose from {LEVELS}")
    if "/" not in name:
        raise ValueError(f"--name must look like NAMESPACE/NAME (got {name!r}); levels become NAME/LEVEL-v0")
    rand = rollouts(env_id, None, 0, seed + 1, min_episodes=eval_episodes)
    ref_min = mean_return(rand)
    if expert_path:
        from stable_baselines3 import PPO, SAC

        snaps = [{"ppo": PPO, "sac": SAC}[algo].load(expert_path)]
    else:
        snaps = train_expert(env_id, algo, expert_steps, checkpoints, n_envs, seed, expert_kwargs)
    stoch = [mean_return(rollouts(env_id, _policy(m, False), 0, seed + 2, eval_episodes)) for m in snaps]
    ref_max = mean_return(rollouts(env_id, _policy(snaps[-1], True), 0, seed + 3, eval_episodes))
    goal = ref_min + medium_fraction * (ref_max - ref_min)
    medium = int(np.argmin([abs(r - goal) for r in stoch]))
    log.info("snapshot returns %s; random %.1f, expert %.1f; medium = snapshot %d", stoch, ref_min, ref_max, medium)
    out = {}
    for level in levels:
        if level == "random":
            eps = rollouts(env_id, None, steps_per_level, seed + 10)
        elif level == "medium":
            eps = rollouts(env_id, _policy(snaps[medium], False), steps_per_level, seed + 20)
        elif level == "expert":
            eps = rollouts(env_id, _policy(snaps[-1], False), steps_per_level, seed + 30)
        else:
            per = max(1, steps_per_level // (medium + 1))
            eps = [e for i, m in enumerate(snaps[:medium + 1])
                   for e in rollouts(env_id, _policy(m, False), per, seed + 40 + 1000 * i)]
        ds_id = f"{name}/{level}-v0"
        save_level(ds_id, eps, env_id, ref_min, ref_max,
                   f"D4RL-style {level} level of {env_id}, made by rl_seq with an SB3 {algo.upper()} expert")
        ret = mean_return(eps)
        out[level] = dict(id=ds_id, episodes=len(eps), steps=int(sum(len(e["rewards"]) for e in eps)),
                          mean_return=ret, normalized_score=(ret - ref_min) / (ref_max - ref_min))
    from rl_seq.plot import print_table

    print_table(f"{env_id}: random {ref_min:.1f}, expert {ref_max:.1f} (ref scores)",
                 ["id", "episodes", "steps", "mean return", "normalised"],
                 [[v["id"], v["episodes"], v["steps"], v["mean_return"], v["normalized_score"]] for v in out.values()])
    return out
