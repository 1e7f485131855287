"""Recurrent PPO's rollouts: ``T`` steps of every env of a Gymnasium vector env, with the
recurrent state carried from one rollout into the next (:class:`Carry`) and stored at every
sequence start, so the update replays the same computation from the same states.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    from rl_seq.agents.ppo import PPOAgent


class RunningMeanStd:
    def __init__(self, shape=()) -> None:
        self.mean, self.var, self.count = np.zeros(shape), np.ones(shape), 1e-4

    def update(self, x: np.ndarray) -> None:
        if x.shape[0] == 0:  # no env contributed this step (its mean would be NaN)
            return
        m, v, n = x.mean(0), x.var(0), x.shape[0]
        delta, tot = m - self.mean, self.count + n
        self.mean = self.mean + delta * n / tot
        self.var = (self.var * self.count + v * n + delta**2 * self.count * n / tot) / tot
        self.count = tot

    def state_dict(self) -> dict:
        """Plain lists (checkpoints load with ``weights_only=True``)."""
        return dict(mean=np.asarray(self.mean).tolist(), var=np.asarray(self.var).tolist(), count=float(self.count))

    def load_state_dict(self, s: dict) -> None:
        self.mean, self.var, self.count = np.asarray(s["mean"]), np.asarray(s["var"]), s["count"]


@dataclass
class Carry:
    """What flows from one rollout into the next (per env)."""

    obs: np.ndarray
    state: tuple
    prev_act: Tensor
    prev_rew: Tensor
    start: Tensor  # this observation starts an episode
    dummy: np.ndarray  # this observation is a final one (the env will autoreset)
    ep_ret: np.ndarray
    ep_len: np.ndarray
    ret_acc: np.ndarray


@dataclass
class Rollout:
    """One rollout, [T, N, ...] per field; ``stored`` holds the state at every sequence start."""

    obs: Tensor
    prev_act: Tensor
    prev_rew: Tensor
    timestep: Tensor
    start: Tensor
    valid: Tensor
    act: Tensor
    logp: Tensor
    val: Tensor
    rew: Tensor
    term: Tensor
    trunc: Tensor
    stored: list = field(default_factory=list)
    init_state: tuple = ()
    next_value: Tensor | None = None
    finished: list = field(default_factory=list)  # (return, length, success or None)

    @classmethod
    def empty(cls, T: int, N: int, obs_shape, act_like: Tensor, device) -> Rollout:
        z = lambda *shape, dtype=torch.float32: torch.zeros(*shape, dtype=dtype, device=device)  # noqa: E731
        act = z(T, *act_like.shape, dtype=act_like.dtype)
        return cls(obs=z(T, N, *obs_shape), prev_act=act.clone(), prev_rew=z(T, N),
                   timestep=z(T, N, dtype=torch.long), start=z(T, N, dtype=torch.bool),
                   valid=z(T, N, dtype=torch.bool), act=act, logp=z(T, N), val=z(T, N), rew=z(T, N), term=z(T, N),
                   trunc=z(T, N))


def tree_stack(states: list) -> tuple:
    """A list of nested state tuples (each leaf [n_envs, ...]) -> one tuple, leaves [len*n_envs, ...]."""
    if isinstance(states[0], Tensor):
        return torch.cat(states, 0)
    return tuple(tree_stack([s[i] for s in states]) for i in range(len(states[0])))


def tree_index(state, idx: Tensor):
    if isinstance(state, Tensor):
        return state[idx]
    return tuple(tree_index(s, idx) for s in state)


@torch.no_grad()
def collect_rollout(agent: PPOAgent, venv: gym.vector.VectorEnv, c: Carry, T: int, L: int,
            obs_rms: RunningMeanStd | None = None, ret_rms: RunningMeanStd | None = None) -> Rollout:
    """T steps of every env. Under NEXT_STEP autoreset the step after an episode's end
    feeds its final observation ("dummy": valid=False, action ignored by the env, reward
    0); the observation after it starts the next episode (start=True, state reset)."""
    cfg, model, N = agent.config, agent.model, venv.num_envs
    model.eval()
    ro = Rollout.empty(T, N, agent.observation_space.shape, agent.zero_actions(N), agent.device)
    ro.init_state = c.state
    for t in range(T):
        if t % L == 0:
            ro.stored.append(c.state)
        tok, o, pa, pr, ts = agent.token(c)
        ro.obs[t], ro.prev_act[t], ro.prev_rew[t], ro.timestep[t], ro.start[t] = o, pa, pr, ts, c.start
        ro.valid[t] = torch.as_tensor(~c.dummy, device=agent.device)
        h, hv, c.state = model.step(tok, c.state, c.start)
        action, logp, _, value = model.heads(h, h_value=hv)
        ro.act[t], ro.logp[t], ro.val[t] = action, logp, value
        c.obs, reward, term, trunc, info = venv.step(agent.env_action(action))
        if obs_rms is not None:
            obs_rms.update(np.asarray(c.obs, np.float64))
        live = ~c.dummy
        c.ep_ret += reward * live
        c.ep_len += live
        succ, has = info.get("is_success"), info.get("_is_success")
        for i in np.flatnonzero((term | trunc) & live):
            ok = None if succ is None or (has is not None and not has[i]) else bool(succ[i])
            ro.finished.append((float(c.ep_ret[i]), int(c.ep_len[i]), ok))
            c.ep_ret[i], c.ep_len[i] = 0.0, 0
        r = reward.astype(np.float64)
        if ret_rms is not None:
            c.ret_acc = c.ret_acc * cfg.gamma * ~(term | trunc) + r
            ret_rms.update(c.ret_acc[live])
            r = r / np.sqrt(ret_rms.var + 1e-8)
        ro.rew[t] = torch.as_tensor(r * live, dtype=torch.float32, device=agent.device)
        ro.term[t] = torch.as_tensor(term & live, dtype=torch.float32, device=agent.device)
        ro.trunc[t] = torch.as_tensor(trunc & live, dtype=torch.float32, device=agent.device)
        c.prev_act, c.prev_rew = action, torch.as_tensor(reward, dtype=torch.float32, device=agent.device)
        c.start = torch.as_tensor(c.dummy, device=agent.device)  # after a dummy step: a new episode
        c.dummy = (term | trunc) & live
    tok, *_ = agent.token(c)
    _, hv, _ = model.step(tok, c.state, c.start)
    ro.next_value = model.critic(hv)  # a final observation's value if an episode just ended
    return ro
