"""A task family defined outside rl_seq, as a user brings one: a corridor with a hidden goal
cell. ``--env ic_family:ICCorridor-v0 --sampler ic_family:corridor_tasks`` (Gymnasium's
``module:id`` form imports this module, which registers the env)."""

import gymnasium as gym
import numpy as np


class CorridorEnv(gym.Env):
    """Cells 0..length-1, start at 0; actions 0 left, 1 right, 2 stay; reward 1 for each step
    ending on the hidden ``goal``; truncated after ``2 * length`` steps. No optimal_action:
    DPT's labels come from the source's greedy policy."""

    def __init__(self, length: int = 6, goal: int = 3) -> None:
        if not 0 <= goal < length:
            raise ValueError(f"goal must be in [0, {length}), got {goal}")
        self.length, self.goal = length, goal
        self.observation_space = gym.spaces.Discrete(length)
        self.action_space = gym.spaces.Discrete(3)
        self.pos = self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos = self.t = 0
        return self.pos, {}

    def step(self, action):
        self.pos = int(np.clip(self.pos + (-1, 1, 0)[int(action)], 0, self.length - 1))
        self.t += 1
        return self.pos, float(self.pos == self.goal), False, self.t >= 2 * self.length, {}


def corridor_tasks(rng: np.random.Generator) -> dict:
    return dict(length=6, goal=int(rng.integers(1, 6)))


def bad_tasks(rng: np.random.Generator) -> dict:
    return dict(length=6, goal=int(rng.integers(1, 6)), speed=2)  # CorridorEnv takes no speed


if "ICCorridor-v0" not in gym.registry:
    gym.register("ICCorridor-v0", entry_point="ic_family:CorridorEnv")  # a string: Minari saves the spec
