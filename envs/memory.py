"""Memory tasks: each needs information from earlier in the episode. Pure NumPy, seeded,
difficulty through ``gym.make`` keyword arguments."""

from __future__ import annotations

import gymnasium as gym
import numpy as np


class TMazeEnv(gym.Env):
    """Bakker's T-Maze. A cue (up or down) is shown at the start of a corridor of length L;
    at the junction the agent must turn the way the cue said.

    Observation (4 bits): ``[cue up, cue down, in corridor, at junction]`` - the cue bits are
    set only at the start. Actions: 0 forward, 1 turn up, 2 turn down. A turn at the junction
    ends the episode: reward 1 and ``is_success`` if it matches the cue, else 0. In the
    corridor turns do nothing. ``passive=True`` (default) moves the agent forward whatever it
    does in the corridor (the memory-only variant of Ni et al. 2023); ``passive=False`` makes
    it walk. Episodes are truncated after ``L + 10`` steps (passive) or ``3L`` (active).
    """

    metadata = {"render_modes": []}

    def __init__(self, corridor_length: int = 10, passive: bool = True) -> None:
        if corridor_length < 1:
            raise ValueError(f"corridor_length must be >= 1, got {corridor_length}")
        self.L, self.passive = corridor_length, passive
        self.observation_space = gym.spaces.Box(0.0, 1.0, (4,), np.float32)
        self.action_space = gym.spaces.Discrete(3)
        self.limit = corridor_length + 10 if passive else 3 * corridor_length
        self.pos, self.cue, self.t = 0, 0, 0

    def _obs(self) -> np.ndarray:
        o = np.zeros(4, np.float32)
        if self.pos == 0:
            o[self.cue] = 1.0
        o[3 if self.pos >= self.L else 2] = 1.0
        return o

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos, self.t = 0, 0
        self.cue = int(self.np_random.integers(2))
        return self._obs(), {}

    def step(self, action):
        a = int(action)
        self.t += 1
        reward, term, info = 0.0, False, {}
        if self.pos >= self.L and a in (1, 2):
            term = True
            info["is_success"] = a - 1 == self.cue
            reward = float(info["is_success"])
        elif self.pos < self.L and (self.passive or a == 0):
            self.pos += 1
        trunc = not term and self.t >= self.limit
        if trunc:
            info["is_success"] = False
        return self._obs(), reward, term, trunc, info


class RepeatPreviousEnv(gym.Env):
    """Reproduce the symbol seen k steps ago. Each step shows a random one of ``n_symbols``
    (one-hot); from step k on, action == the symbol of step t-k earns 1/(length-k). Episodes
    last ``length`` steps (terminated). A memoryless policy scores about 1/n_symbols."""

    metadata = {"render_modes": []}

    def __init__(self, k: int = 4, n_symbols: int = 4, length: int = 52) -> None:
        if not 1 <= k < length:
            raise ValueError(f"need 1 <= k < length, got k={k}, length={length}")
        self.k, self.n, self.length = k, n_symbols, length
        self.observation_space = gym.spaces.Box(0.0, 1.0, (n_symbols,), np.float32)
        self.action_space = gym.spaces.Discrete(n_symbols)
        self.symbols = np.zeros(length, np.int64)
        self.t = 0

    def _obs(self) -> np.ndarray:
        o = np.zeros(self.n, np.float32)
        o[self.symbols[self.t]] = 1.0
        return o

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.symbols = self.np_random.integers(self.n, size=self.length + 1)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        r = 0.0
        if self.t >= self.k and int(action) == self.symbols[self.t - self.k]:
            r = 1.0 / (self.length - self.k)
        self.t += 1
        term = self.t >= self.length
        return self._obs(), r, term, False, {}


class KeyToDoorEnv(gym.Env):
    """Key-to-door, as in the Decision Transformer paper (Chen et al. 2021), on a line.

    Room 1 (``key_steps`` steps): a corridor of ``width`` cells with a key at a random cell;
    the agent walks (0 left, 1 right) and picks the key up by standing on it. Room 2
    (``distractor_steps`` steps): a distractor room where random apples give small rewards
    (0.1) when the agent steps right onto them. Room 3: the door; action 2 opens it, which
    ends the episode with reward 1 if the agent holds the key (``is_success``), else 0.
    Observation: ``[room one-hot (3), position/width, key visible here, apple here]`` - never
    whether the key is held. Truncated after all rooms plus 10 steps.
    """

    metadata = {"render_modes": []}

    def __init__(self, width: int = 5, key_steps: int = 10, distractor_steps: int = 20) -> None:
        self.width, self.key_steps, self.distractor_steps = width, key_steps, distractor_steps
        self.observation_space = gym.spaces.Box(0.0, 1.0, (6,), np.float32)
        self.action_space = gym.spaces.Discrete(3)
        self.limit = key_steps + distractor_steps + 10

    def _room(self) -> int:
        return 0 if self.t < self.key_steps else (1 if self.t < self.key_steps + self.distractor_steps else 2)

    def _obs(self) -> np.ndarray:
        o = np.zeros(6, np.float32)
        room = self._room()
        o[room] = 1.0
        o[3] = self.pos / max(self.width - 1, 1)
        o[4] = float(room == 0 and not self.has_key and self.pos == self.key_pos)
        o[5] = float(room == 1 and self.apple)
        return o

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.pos, self.has_key = 0, 0, False
        self.key_pos = int(self.np_random.integers(1, self.width)) if self.width > 1 else 0
        self.apple = False
        self.has_key = self.key_pos == 0
        return self._obs(), {}

    def step(self, action):
        a = int(action)
        room = self._room()
        reward, term, info = 0.0, False, {}
        if room == 2:
            if a == 2:
                term = True
                info["is_success"] = self.has_key
                reward = float(self.has_key)
        else:
            if room == 1 and a == 1 and self.apple:
                reward = 0.1
            if a in (0, 1):
                self.pos = int(np.clip(self.pos + (1 if a == 1 else -1), 0, self.width - 1))
            if room == 0 and self.pos == self.key_pos:
                self.has_key = True
        self.t += 1
        if self._room() != room:
            self.pos = 0
        self.apple = bool(self.np_random.random() < 0.3)
        trunc = not term and self.t >= self.limit
        if trunc:
            info["is_success"] = False
        return self._obs(), reward, term, trunc, info


class CartPoleNoVelEnv(gym.Env):
    """CartPole-v1 without the velocities: observations are ``[x, θ]``, so the policy must
    infer velocities from the history. Keyword arguments go to ``CartPoleEnv``."""

    metadata = {"render_modes": []}

    def __init__(self, **kwargs) -> None:
        from gymnasium.envs.classic_control import CartPoleEnv

        self.inner = CartPoleEnv(**kwargs)
        high = np.array([4.8, 0.418], np.float32)
        self.observation_space = gym.spaces.Box(-high, high, dtype=np.float32)
        self.action_space = self.inner.action_space

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        obs, info = self.inner.reset(seed=seed, options=options)
        return obs[[0, 2]].astype(np.float32), info

    def step(self, action):
        obs, r, term, trunc, info = self.inner.step(action)
        return np.clip(obs[[0, 2]], self.observation_space.low, self.observation_space.high), r, term, trunc, info
