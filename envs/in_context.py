"""Task families for in-context RL (Algorithm Distillation, the Decision-Pretrained
Transformer): one Gymnasium env per family, a *task* is its ``gym.make`` keyword arguments,
drawn by the family's task sampler. Pure NumPy, seeded.

- ``rl_seq/Bandit-v0``: a k-armed bandit; an episode is ``horizon`` pulls (the bandit
  literature's H). ``info["regret"]`` is each pull's expected regret.
- ``rl_seq/DarkRoom-v0``: an N x N room, the agent starts in the centre and sees only its
  position; reward 1 for every step that ends on the (unobserved) goal; ``horizon`` steps.
- ``rl_seq/DarkKeyToDoor-v0``: as Dark Room with two unobserved cells: reward 1 for reaching
  the key, then 1 for reaching the door with it, which ends the episode; ``info["has_key"]``.

Each env knows its optimal return (``optimal_return()``) and an optimal action for any
observation (``optimal_action(obs, info)``); the samplers (:data:`TASK_SAMPLERS`) take a
``numpy.random.Generator`` and return keyword arguments.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

MOVES = np.array([(0, 0), (0, 1), (0, -1), (-1, 0), (1, 0)])  # stay, up, down, left, right


class BanditEnv(gym.Env):
    """A k-armed bandit with arm means ``means``: Bernoulli rewards (``noise="bernoulli"``) or
    Gaussian ones with std ``sigma``. Observation: always 0 (``Discrete(1)``); action: the arm;
    an episode is ``horizon`` pulls (truncated)."""

    metadata = {"render_modes": []}

    def __init__(self, means: list[float] | None = None, noise: str = "bernoulli", sigma: float = 0.1,
                 horizon: int = 500) -> None:
        means = [0.5, 0.5] if means is None else list(means)
        if len(means) < 2:
            raise ValueError(f"a bandit needs >= 2 arms, got means={means}")
        if noise not in ("bernoulli", "gaussian"):
            raise ValueError(f"noise must be bernoulli or gaussian, got {noise!r}")
        if noise == "bernoulli" and not all(0.0 <= m <= 1.0 for m in means):
            raise ValueError(f"Bernoulli arm means must lie in [0, 1], got {means}")
        if sigma < 0:
            raise ValueError(f"sigma must be >= 0, got {sigma}")
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        self.horizon, self.t = horizon, 0
        self.means, self.noise, self.sigma = np.asarray(means, np.float64), noise, sigma
        self.observation_space = gym.spaces.Discrete(1)  # one state
        self.action_space = gym.spaces.Discrete(len(means))

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return 0, {}

    def step(self, action):
        a = int(action)
        m = self.means[a]
        if self.noise == "bernoulli":
            r = float(self.np_random.random() < m)
        else:
            r = float(self.np_random.normal(m, self.sigma))
        self.t += 1
        return 0, r, False, self.t >= self.horizon, {"regret": float(self.means.max() - m)}

    def optimal_return(self) -> float:
        return float(self.means.max() * self.horizon)

    def optimal_action(self, obs=None, info=None) -> int:
        return int(self.means.argmax())


class DarkRoomEnv(gym.Env):
    """Dark Room (Laskin et al. 2023). Observation: the agent's cell ``[x, y]``
    (MultiDiscrete); actions: 0 stay, 1 up, 2 down, 3 left, 4 right (walls stop moves); reward
    1 for each step that ends on ``goal``; truncated after ``horizon`` steps."""

    metadata = {"render_modes": []}

    def __init__(self, size: int = 9, goal: list[int] | None = None, horizon: int = 20) -> None:
        if size < 2:
            raise ValueError(f"size must be >= 2, got {size}")
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        goal = [size - 1, size - 1] if goal is None else list(goal)
        if len(goal) != 2 or not all(0 <= int(g) < size for g in goal):
            raise ValueError(f"goal must be two cells coordinates in [0, {size}), got {goal}")
        self.size, self.horizon = size, horizon
        self.goal = np.asarray(goal, np.int64)
        self.start = np.full(2, size // 2, np.int64)
        self.observation_space = gym.spaces.MultiDiscrete([size, size])
        self.action_space = gym.spaces.Discrete(5)
        self.pos, self.t = self.start.copy(), 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos, self.t = self.start.copy(), 0
        return self.pos.copy(), {}

    def _move(self, action) -> None:
        self.pos = np.clip(self.pos + MOVES[int(action)], 0, self.size - 1)
        self.t += 1

    def step(self, action):
        self._move(action)
        r = float((self.pos == self.goal).all())
        return self.pos.copy(), r, False, self.t >= self.horizon, {}

    def set_state(self, obs) -> np.ndarray:
        """Put the agent on cell ``obs`` (DPT data's uniform roll-in); returns the observation."""
        self.pos = np.clip(np.asarray(obs, np.int64), 0, self.size - 1)
        return self.pos.copy()

    def optimal_return(self) -> float:
        """Walk straight to the goal (d steps, rewarded on arrival) and stay."""
        d = int(np.abs(self.goal - self.start).sum())
        return float(max(0, self.horizon - max(d, 1) + 1))

    def optimal_action(self, obs, info=None) -> int:
        return _towards(np.asarray(obs), self.goal)


class DarkKeyToDoorEnv(DarkRoomEnv):
    """Dark Key-to-Door (Laskin et al. 2023): reward 1 on first reaching ``key``, then 1 on
    reaching ``door`` holding it (terminated); ``info["has_key"]``; truncated after
    ``horizon`` steps. Observation and actions as :class:`DarkRoomEnv`."""

    def __init__(self, size: int = 9, key: list[int] | None = None, door: list[int] | None = None,
                 horizon: int = 50) -> None:
        super().__init__(size, door if door is not None else [size - 1, size - 1], horizon)
        key = [0, 0] if key is None else list(key)
        if len(key) != 2 or not all(0 <= int(k) < size for k in key):
            raise ValueError(f"key must be two cell coordinates in [0, {size}), got {key}")
        self.key, self.door = np.asarray(key, np.int64), self.goal
        self.has_key = False

    set_state = None  # whether the agent holds the key is not in the observation: no uniform roll-in

    def reset(self, *, seed=None, options=None):
        obs, _ = super().reset(seed=seed)
        self.has_key = False
        return obs, {"has_key": False}

    def step(self, action):
        self._move(action)
        r, term = 0.0, False
        if not self.has_key and (self.pos == self.key).all():
            self.has_key, r = True, 1.0
        elif self.has_key and (self.pos == self.door).all():
            r, term = 1.0, True
        return self.pos.copy(), r, term, not term and self.t >= self.horizon, {"has_key": self.has_key}

    def optimal_return(self) -> float:
        to_key = max(1, int(np.abs(self.key - self.start).sum()))
        to_door = int(np.abs(self.door - self.key).sum())
        if to_door == 0:  # the door is the key's cell: step off and back
            to_door = 2
        return float((to_key <= self.horizon) + (to_key + to_door <= self.horizon))

    def optimal_action(self, obs, info=None) -> int:
        has_key = bool((info or {}).get("has_key", False))
        pos = np.asarray(obs)
        if has_key and (pos == self.door).all():
            return 1 if pos[1] == 0 else 2  # step off to come back
        return _towards(pos, self.door if has_key else self.key)


def _towards(pos: np.ndarray, target: np.ndarray) -> int:
    """The move that shortens the Manhattan distance (x first), or stay when there."""
    if pos[0] != target[0]:
        return 4 if target[0] > pos[0] else 3
    if pos[1] != target[1]:
        return 1 if target[1] > pos[1] else 2
    return 0


# -- task samplers: Generator -> gym.make keyword arguments ----------------------------------
def bandit_tasks(rng: np.random.Generator, arms: int = 5, horizon: int = 500) -> dict:
    """Arm means uniform in [0, 1] (DPT's Bernoulli bandits), ``horizon`` pulls."""
    return dict(means=[round(float(m), 4) for m in rng.uniform(0.0, 1.0, arms)], horizon=horizon)


def dark_room_tasks(rng: np.random.Generator, size: int = 9) -> dict:
    """A goal cell uniform over the room."""
    return dict(size=size, goal=[int(x) for x in rng.integers(0, size, 2)])


def dark_key_to_door_tasks(rng: np.random.Generator, size: int = 9) -> dict:
    """Key and door on two different cells, uniform."""
    cells = rng.choice(size * size, 2, replace=False)
    return dict(size=size, key=[int(cells[0] // size), int(cells[0] % size)],
                door=[int(cells[1] // size), int(cells[1] % size)])


# family -> (env id, task sampler)
FAMILIES: dict[str, tuple[str, object]] = {
    "bandit": ("rl_seq/Bandit-v0", bandit_tasks),
    "dark-room": ("rl_seq/DarkRoom-v0", dark_room_tasks),
    "dark-key-to-door": ("rl_seq/DarkKeyToDoor-v0", dark_key_to_door_tasks),
}
