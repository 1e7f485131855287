"""MiniGrid and BabyAI levels with the observation rl_seq tokenises: ``rl_seq/MiniGrid-v0``.

``gym.make("rl_seq/MiniGrid-v0", level="BabyAI-GoToRedBallGrey-v0")`` makes the level (the
``minigrid`` extra) and gives ``Dict(image=Box(0, 255, (7, 7, 3), uint8), direction=Discrete(4))``:
the agent's partial 7x7 view (object, colour and state index per cell) and its heading. The
mission text is not tokenised, so only levels whose mission never changes are supported (it
carries no information there): the first reset records it, and a later reset with another
mission stops with an error naming such levels. Actions are the level's ``Discrete(7)``.
"""

from __future__ import annotations

import contextlib
import io

import gymnasium as gym
import numpy as np

# Levels with one mission (checked on 15 resets each with minigrid 3.2.0), for error messages.
ONE_MISSION = ("BabyAI-GoToRedBallGrey-v0", "BabyAI-GoToRedBallNoDists-v0", "BabyAI-OpenRedDoor-v0",
               "BabyAI-UnlockLocal-v0", "BabyAI-KeyCorridorS3R1-v0", "BabyAI-OneRoomS8-v0",
               "MiniGrid-MemoryS7-v0", "MiniGrid-DoorKey-6x6-v0")


def make_level(level: str, **kwargs) -> gym.Env:
    """The raw MiniGrid/BabyAI env of ``level`` (import errors name the extra to install)."""
    try:
        import minigrid  # noqa: F401  (registers the MiniGrid and BabyAI ids)
    except ImportError as e:
        raise ImportError("MiniGrid levels need the minigrid package: pip install 'rl-seq[minigrid]'") from e
    if level not in gym.registry:
        raise ValueError(f"unknown MiniGrid/BabyAI level {level!r}: an id such as {', '.join(ONE_MISSION[:3])}")
    return gym.make(level, **kwargs)


class MiniGridEnv(gym.Env):
    """A MiniGrid/BabyAI level without its (constant) mission text (module docstring)."""

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, level: str = "BabyAI-GoToRedBallGrey-v0", render_mode: str | None = None, **kwargs) -> None:
        self.level = level
        self.env = make_level(level, render_mode=render_mode, **kwargs)
        space = self.env.observation_space
        if not isinstance(space, gym.spaces.Dict) or "image" not in space.spaces:
            raise ValueError(f"{level} is not a MiniGrid level with image observations (its space is {space})")
        self.observation_space = gym.spaces.Dict(image=space["image"], direction=space["direction"])
        self.action_space = self.env.action_space
        self.render_mode = render_mode
        self.mission: str | None = None

    @property
    def level_env(self) -> gym.Env:
        """The level's own env (the BabyAI bot plans on it)."""
        return self.env

    def _obs(self, obs: dict) -> dict:
        return dict(image=np.asarray(obs["image"], np.uint8), direction=int(obs["direction"]))

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        with contextlib.redirect_stdout(io.StringIO()):  # minigrid prints its rejected samples
            obs, info = self.env.reset(seed=seed, options=options)
        if self.mission is None:
            self.mission = obs["mission"]
        elif obs["mission"] != self.mission:
            raise ValueError(
                f"{self.level}'s mission changes between episodes ({self.mission!r}, then {obs['mission']!r}); "
                "rl_seq does not tokenise mission text, so it supports levels with one mission: "
                f"{', '.join(ONE_MISSION)}")
        return self._obs(obs), dict(info, mission=obs["mission"])

    def step(self, action):
        obs, r, term, trunc, info = self.env.step(action)
        return self._obs(obs), float(r), term, trunc, info

    def render(self):
        return self.env.render()

    def close(self) -> None:
        self.env.close()
