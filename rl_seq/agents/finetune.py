"""Online fine-tuning of an offline return-conditioned policy (Decision-S4 style).

The offline agent keeps acting recurrently (its backbone's step state, the target return
counting down). A twin Q critic learns from the online episodes by TD (TD3 targets, target
networks); the actor - the whole sequence policy - is updated through its parallel
``forward`` on windows of those episodes to raise Q, with a behaviour-cloning term on the
actions it took that keeps it close to where it started (TD3+BC's ``λ = α / mean|Q|``).
Exploration: Gaussian noise on the acted actions.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from rl_seq.agents.base import eval_seed
from rl_seq.agents.decision import DecisionAgent
from rl_seq.data import Episodes, SegmentSampler
from rl_seq.runs import Run, progress

log = logging.getLogger(__name__)


@dataclass
class FinetuneConfig:
    steps: int = 20_000
    """Environment steps of fine-tuning."""
    start_steps: int = 2_000
    """Steps collected before the first update."""
    batch_size: int = 64
    """Windows per update."""
    lr_actor: float = 1e-5
    """Actor (sequence policy) learning rate."""
    lr_critic: float = 3e-4
    """Critic learning rate."""
    gamma: float = 0.99
    """Discount."""
    tau: float = 0.005
    """Target-network EMA rate."""
    alpha: float = 2.5
    """TD3+BC weight: λ = alpha / mean|Q|."""
    noise: float = 0.1
    """Exploration noise std, as a fraction of the action range."""
    policy_delay: int = 2
    """Critic updates per actor update."""
    train_every: int = 1
    """Env steps per update (1 = one critic update per step, as TD3)."""
    eval_every: int = 5_000
    """Evaluate every this many env steps (a multiple of train_every)."""
    eval_episodes: int = 10
    """Episodes per evaluation."""


def _critic(obs_dim: int, act_dim: int) -> nn.Module:
    return nn.Sequential(nn.Linear(obs_dim + act_dim, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                         nn.Linear(256, 1))


def finetune(agent: DecisionAgent, env_id: str, cfg: FinetuneConfig, run: Run | None = None, seed: int = 0) -> dict:
    """Fine-tune ``agent`` online in ``env_id``; returns ``{"before", "after", "best"}``."""
    if not isinstance(agent.action_space, gym.spaces.Box):
        raise TypeError("online fine-tuning needs a continuous (Box) action space")
    dev = agent.device
    before = agent.evaluate(env_id, episodes=cfg.eval_episodes, seed=eval_seed(seed)).to_dict()
    log.info("before fine-tuning: mean return %.1f", before["mean_return"])
    obs_dim = int(np.prod(agent.observation_space.shape))
    act_dim = int(np.prod(agent.action_space.shape))
    low = torch.as_tensor(agent.action_space.low, device=dev)
    high = torch.as_tensor(agent.action_space.high, device=dev)
    q1, q2 = _critic(obs_dim, act_dim).to(dev), _critic(obs_dim, act_dim).to(dev)
    q1_t, q2_t = copy.deepcopy(q1), copy.deepcopy(q2)
    opt_q = torch.optim.Adam([*q1.parameters(), *q2.parameters()], lr=cfg.lr_critic)
    opt_pi = torch.optim.Adam(agent.model.parameters(), lr=cfg.lr_actor)
    obs_mean = agent.model.backbone.tokenizer.embed["obs"].mean
    obs_std = agent.model.backbone.tokenizer.embed["obs"].std
    target = agent.meta["target_return"]
    K = agent.config.context

    env = gym.make(env_id, **(agent.meta.get("env_kwargs") or {}))
    rng = np.random.default_rng(seed)
    episodes: list[dict] = []
    ep, state, sampler = None, None, None
    best, after = before, before
    bar, task = progress(cfg.steps, "ds4 fine-tuning")
    t0 = time.time()
    with bar:
        for step in range(1, cfg.steps + 1):
            if ep is None:
                obs, _ = env.reset(seed=seed * 100_000 + len(episodes))
                ep = dict(observations=[obs], actions=[], rewards=[], terminations=[], truncations=[])
                state, start, reward = None, True, 0.0
            a, state = agent.predict(obs, state, np.array([start]), rewards=np.array([reward]))
            a = np.clip(a + rng.normal(0, cfg.noise, a.shape) * (agent.action_space.high - agent.action_space.low) / 2,
                        agent.action_space.low, agent.action_space.high).astype(np.float32)
            state.prev_action = torch.as_tensor(a, device=dev)[None]  # the action really taken
            obs, reward, term, trunc, _ = env.step(a)
            for k, v in (("observations", obs), ("actions", a), ("rewards", reward), ("terminations", term),
                         ("truncations", trunc)):
                ep[k].append(v)
            start = False
            if term or trunc:
                episodes.append({k: np.asarray(v) for k, v in ep.items()})
                ep = None
            if step < cfg.start_steps or len(episodes) < 1 or step % cfg.train_every:
                bar.update(task, completed=step)
                continue
            if sampler is None or step % 1000 < cfg.train_every:  # refresh the data every 1000 steps
                data = Episodes.from_episode_list(episodes, agent.observation_space, agent.action_space)
                # returns-to-go as the agent conditions on them: the target minus rewards so far
                sampler = SegmentSampler(data, K, seed=seed + step)
                ret_so_far = data.returns_to_go()[data.offsets[:-1]].repeat(data.lengths) - data.returns_to_go()
                sampler.rtg = (target - ret_so_far).astype(np.float32)
                nxt = np.concatenate([data.observations[1:], data.observations[-1:]])
                ends = data.offsets[1:] - 1
                nxt[ends] = data.final_observations
                sampler.extra = dict(next_obs=nxt.astype(np.float32),
                                     done=np.isin(np.arange(data.num_steps), ends[data.terminations[ends]]))
            b = {k: torch.as_tensor(v, device=dev) for k, v in sampler.sample(cfg.batch_size).items()}
            m = b["mask"].float()
            o, a_t, r = b["obs"].float(), b["act"].float(), b["rew"].float()
            on, done = b["next_obs"].float(), b["done"].float()
            norm = lambda x: (x - obs_mean) / obs_std  # noqa: E731
            # critic: TD3 target; the policy's action at s_{t+1} is its output at the window's
            # next step, so the window's last step trains the critic only when it ends an episode
            with torch.no_grad():
                pred = agent.model(agent.model.fields(o, a_t, b["rtg"], b["timestep"]), b["episode_start"])
                a_next = torch.cat([pred[:, 1:], pred[:, -1:]], 1)
                a_next = a_next + (0.2 * torch.randn_like(a_next)).clamp(-0.5, 0.5) * (high - low) / 2
                a_next = torch.maximum(torch.minimum(a_next, high), low)
                x_next = torch.cat([norm(on), a_next], -1)
                y = r + cfg.gamma * (1 - done) * torch.minimum(q1_t(x_next), q2_t(x_next)).squeeze(-1)
                m_q = m.clone()
                m_q[:, -1] *= done[:, -1]
            x = torch.cat([norm(o), a_t], -1)
            td = (q1(x).squeeze(-1) - y) ** 2 + (q2(x).squeeze(-1) - y) ** 2
            q_loss = (td * m_q).sum() / m_q.sum().clamp_min(1)
            opt_q.zero_grad(set_to_none=True)
            q_loss.backward()
            opt_q.step()
            if step % cfg.policy_delay == 0:
                agent.model.train()
                pi = agent.model(agent.model.fields(o, a_t, b["rtg"], b["timestep"]), b["episode_start"])
                q = q1(torch.cat([norm(o), pi], -1)).squeeze(-1)
                lam = cfg.alpha / (q * m).abs().sum().div(m.sum()).detach().clamp_min(1e-6)
                pi_loss = ((-lam * q + ((pi - a_t) ** 2).mean(-1)) * m).sum() / m.sum()
                opt_pi.zero_grad(set_to_none=True)
                pi_loss.backward()
                nn.utils.clip_grad_norm_(agent.model.parameters(), 0.25)
                opt_pi.step()
                agent.model.eval()
                with torch.no_grad():
                    for net, tgt in ((q1, q1_t), (q2, q2_t)):
                        for p, pt in zip(net.parameters(), tgt.parameters()):
                            pt.lerp_(p, cfg.tau)
            if run is not None and step % 500 < cfg.train_every:
                run.log(step, "train", dict(q_loss=q_loss.item(), sps=step / (time.time() - t0)))
            if step % cfg.eval_every == 0 or step == cfg.steps:
                after = agent.evaluate(env_id, episodes=cfg.eval_episodes, seed=eval_seed(seed)).to_dict()
                after["step"] = step
                if run is not None:
                    run.log(step, "eval", {k: v for k, v in after.items() if k not in ("returns", "lengths")})
                if after["mean_return"] > best["mean_return"]:
                    best = after
            bar.update(task, completed=step, info=f"episodes={len(episodes)}")
    env.close()
    return dict(before=before, after=after, best=best, last=after)
