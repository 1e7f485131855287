#!/usr/bin/env python
"""Peer run for scripts/bench_online_peers.py: sb3-contrib ``RecurrentPPO`` (MlpLstmPolicy,
its default hyperparameters: 128 steps per env, batch 128, 10 epochs, lr 3e-4, LSTM 256,
separate critic LSTM) on a gymnasium id with ``--n-envs`` DummyVecEnv envs, then
``--episodes`` deterministic evaluation episodes, episode i from env seed ``--eval-seed`` + i
(the seeds rl_seq's ``evaluate`` uses). Prints one JSON line: the final evaluation, the
training wall time and the learning curve (per rollout: env steps, seconds, mean return of
the episodes that ended in it).

A MiniGrid/BabyAI level runs as rl_seq sees it, ``rl_seq/MiniGrid-v0`` (its 7x7x3 view and
heading, the constant mission text dropped), flattened for the MlpLstmPolicy: SB3's
MultiInputLstmPolicy would send the view to its NatureCNN, whose 8x8 stride-4 first layer does
not fit 7x7.

    python scripts/peers/sb3_recurrent_ppo.py popgym-RepeatPreviousEasy-v0 --steps 100000 --seed 0
    python scripts/peers/sb3_recurrent_ppo.py MiniGrid-MemoryS7-v0 --steps 200000 --seed 0
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("env_id")
    p.add_argument("--steps", type=int, default=100_000, help="env steps, all envs together")
    p.add_argument("--n-envs", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-seed", type=int, default=10_000)
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()

    import gymnasium as gym
    import numpy as np
    import sb3_contrib
    import torch
    from sb3_contrib import RecurrentPPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env

    try:
        import popgym  # noqa: F401  (registers popgym-* ids)
    except ImportError:
        pass
    torch.set_num_threads(a.threads)
    env_id, env_kwargs = a.env_id, {}
    if a.env_id.startswith(("MiniGrid-", "BabyAI-")):  # the level as rl_seq's wrapper gives it
        env_id, env_kwargs = "rl_seq.envs:rl_seq/MiniGrid-v0", dict(level=a.env_id)

    def wrap(env: gym.Env) -> gym.Env:
        # Tuple/Dict: flattened; MultiDiscrete: one-hot (SB3 would one-hot it too, but its
        # int64 feature size breaks nn.LSTM under torch 2.13)
        if isinstance(env.observation_space, gym.spaces.Tuple | gym.spaces.Dict | gym.spaces.MultiDiscrete):
            return gym.wrappers.FlattenObservation(env)
        return env

    class Curve(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.rows: list[dict] = []
            self.returns: list[float] = []

        def _on_step(self) -> bool:
            for info in self.locals["infos"]:
                if "episode" in info:
                    self.returns.append(float(info["episode"]["r"]))
            return True

        def _on_rollout_end(self) -> None:
            if self.returns:
                self.rows.append(dict(step=int(self.num_timesteps), time=round(time.perf_counter() - t0, 3),
                                      episode_return=float(np.mean(self.returns))))
            self.returns = []

    venv = make_vec_env(env_id, n_envs=a.n_envs, seed=a.seed, wrapper_class=wrap, env_kwargs=env_kwargs)
    model = RecurrentPPO("MlpLstmPolicy", venv, seed=a.seed, device="cpu", verbose=0)
    curve = Curve()
    t0 = time.perf_counter()
    model.learn(total_timesteps=a.steps, callback=curve)
    train_s = time.perf_counter() - t0
    venv.close()

    env = wrap(gym.make(env_id, **env_kwargs))
    returns = []
    for i in range(a.episodes):
        obs, _ = env.reset(seed=a.eval_seed + i)
        state, start, done, total = None, np.ones(1, bool), False, 0.0
        while not done:
            act, state = model.predict(np.asarray(obs)[None], state=state, episode_start=start, deterministic=True)
            obs, r, term, trunc, _ = env.step(act[0])
            total, done, start = total + float(r), term or trunc, np.zeros(1, bool)
        returns.append(total)
    env.close()
    print(json.dumps(dict(lib="sb3-contrib", version=sb3_contrib.__version__, env_id=a.env_id, seed=a.seed,
                          env_steps=int(model.num_timesteps), train_s=round(train_s, 2),
                          env_steps_per_s=round(model.num_timesteps / train_s, 1), returns=returns,
                          mean_return=float(np.mean(returns)), curve=curve.rows)), flush=True)
    print(f"done in {train_s:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
