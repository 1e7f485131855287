"""rl_seq's own Gymnasium tasks, registered under the ``rl_seq/`` namespace when ``rl_seq``
is imported. (This folder installs as ``rl_seq.envs``, never as a top-level ``envs``.)"""

from __future__ import annotations

import gymnasium as gym

ENVS: dict[str, dict] = {
    "rl_seq/PointGoal-v0": dict(entry_point="rl_seq.envs.point_goal:PointGoalEnv",
                                max_episode_steps=50),
    "rl_seq/TMaze-v0": dict(entry_point="rl_seq.envs.memory:TMazeEnv"),
    "rl_seq/RepeatPrevious-v0": dict(entry_point="rl_seq.envs.memory:RepeatPreviousEnv"),
    "rl_seq/KeyToDoor-v0": dict(entry_point="rl_seq.envs.memory:KeyToDoorEnv"),
    "rl_seq/CartPoleNoVel-v0": dict(entry_point="rl_seq.envs.memory:CartPoleNoVelEnv",
                                    max_episode_steps=500),
    "rl_seq/Bandit-v0": dict(entry_point="rl_seq.envs.in_context:BanditEnv"),
    "rl_seq/DarkRoom-v0": dict(entry_point="rl_seq.envs.in_context:DarkRoomEnv"),
    "rl_seq/DarkKeyToDoor-v0": dict(entry_point="rl_seq.envs.in_context:DarkKeyToDoorEnv"),
    "rl_seq/MiniGrid-v0": dict(entry_point="rl_seq.envs.minigrid:MiniGridEnv"),
}


def register_envs() -> None:
    for env_id, kwargs in ENVS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, **kwargs)


register_envs()
