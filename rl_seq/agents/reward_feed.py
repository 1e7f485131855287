"""Getting rewards to ``predict`` inside Stable-Baselines3 loops.

SB3's ``evaluate_policy`` (and any ``obs -> model.predict -> env.step`` loop) never passes
rewards to ``predict``, but a return-conditioned policy must subtract each reward from its
return-to-go. ``agent.wrap_env(env)`` puts a thin wrapper around the env that hands every
step's rewards to a :class:`RewardFeed`; the agent's acting state holds that feed and reads
it on the next ``predict``. It works for a Gymnasium env (SB3 wraps it in a DummyVecEnv) and
for any SB3 VecEnv (DummyVecEnv, SubprocVecEnv, VecNormalize: the wrapper sits in the main
process, outside the workers). Rewards are the env's raw rewards, before any VecNormalize
scaling, when the feed wraps the inner env.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np


class RewardFeed:
    """Rewards of the latest step, per env, waiting for the next ``predict``."""

    def __init__(self) -> None:
        self.pending: np.ndarray | None = None

    def push(self, rewards) -> None:
        self.pending = np.asarray(rewards, np.float64).reshape(-1)

    def pop(self) -> np.ndarray | None:
        r, self.pending = self.pending, None
        return r


class _GymRewardFeed(gym.Wrapper):
    def __init__(self, env: gym.Env, feed: RewardFeed) -> None:
        super().__init__(env)
        self.feed = feed

    def reset(self, **kwargs):
        self.feed.pending = None
        return self.env.reset(**kwargs)

    def step(self, action):
        obs, r, term, trunc, info = self.env.step(action)
        self.feed.push([r])
        return obs, r, term, trunc, info


def wrap_env(agent, env):
    """Wrap ``env`` so its rewards reach ``agent.predict``; returns the wrapped env."""
    feed = RewardFeed()
    agent.reward_feed = feed
    try:
        from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper
    except ImportError:  # pragma: no cover - SB3 is a core dependency
        VecEnv = ()
    if VecEnv and isinstance(env, VecEnv):

        class _VecRewardFeed(VecEnvWrapper):
            def reset(self):
                feed.pending = None
                return self.venv.reset()

            def step_wait(self):
                obs, r, done, info = self.venv.step_wait()
                feed.push(r)
                return obs, r, done, info

        return _VecRewardFeed(env)
    if isinstance(env, gym.Env):
        return _GymRewardFeed(env, feed)
    raise TypeError(f"wrap_env takes a gymnasium.Env or an SB3 VecEnv, got {type(env).__name__}")
