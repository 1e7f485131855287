"""PointGoal: a point in [-1, 1]^dim must move to a goal. Pure NumPy, seeded.

Observation: ``[position, goal]`` (2·dim). Action: a velocity in [-1, 1]^dim, applied as
``position += 0.1 · action`` (clipped to the box). Reward: ``-‖position - goal‖`` after the
move, so a policy that reaches the goal quickly and stays there earns the most. Episodes
are truncated at 50 steps (``max_episode_steps``). ``expert_action`` is the scripted optimum
used to make the built-in datasets.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np


class PointGoalEnv(gym.Env):
    metadata = {"render_modes": []}

    def __init__(self, dim: int = 2, speed: float = 0.1) -> None:
        self.dim, self.speed = dim, speed
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (2 * dim,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (dim,), np.float32)
        self.pos = np.zeros(dim, np.float32)
        self.goal = np.zeros(dim, np.float32)

    def _obs(self) -> np.ndarray:
        return np.concatenate([self.pos, self.goal]).astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.pos = self.np_random.uniform(-1, 1, self.dim).astype(np.float32)
        self.goal = self.np_random.uniform(-1, 1, self.dim).astype(np.float32)
        return self._obs(), {}

    def step(self, action):
        a = np.clip(np.asarray(action, np.float32).reshape(self.dim), -1, 1)
        self.pos = np.clip(self.pos + self.speed * a, -1, 1).astype(np.float32)
        dist = float(np.linalg.norm(self.pos - self.goal))
        return self._obs(), -dist, False, False, {"distance": dist, "is_success": dist < self.speed}

    def expert_action(self) -> np.ndarray:
        return np.clip((self.goal - self.pos) / self.speed, -1, 1).astype(np.float32)
