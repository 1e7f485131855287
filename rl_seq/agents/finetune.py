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
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from rl_seq.agents.decision import DecisionAgent
from rl_seq.config import TrainConfig
from rl_seq.data import Episodes, SegmentSampler

log = logging.getLogger(__name__)


@dataclass
class FinetuneConfig(TrainConfig):
    """Online fine-tuning (``steps`` are env steps; the schedule fields work as in training)."""

    steps: int = 20_000
    """Environment steps of fine-tuning."""
    eval_every: int = 5_000
    """Evaluate every this many env steps."""
    log_every: int = 500
    """Log training metrics every this many env steps."""
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


class Critic(nn.Module):
    """Twin Q networks on (normalised state, action) and their targets."""

    def __init__(self, obs_dim: int, act_dim: int) -> None:
        super().__init__()
        mlp = lambda: nn.Sequential(nn.Linear(obs_dim + act_dim, 256), nn.ReLU(), nn.Linear(256, 256),  # noqa: E731
                                    nn.ReLU(), nn.Linear(256, 1))
        self.q1, self.q2 = mlp(), mlp()
        self.q1_t, self.q2_t = copy.deepcopy(self.q1), copy.deepcopy(self.q2)
        self.q1_t.requires_grad_(False)
        self.q2_t.requires_grad_(False)


class EpisodeBuffer:
    """The finished online episodes (checkpointed as tensors)."""

    def __init__(self) -> None:
        self.episodes: list[dict[str, np.ndarray]] = []

    def state_dict(self) -> dict:
        return {"episodes": [{k: torch.as_tensor(v) for k, v in ep.items()} for ep in self.episodes]}

    def load_state_dict(self, s: dict) -> None:
        self.episodes = [{k: v.numpy() for k, v in ep.items()} for ep in s["episodes"]]


def finetune(agent: DecisionAgent, env_id: str, cfg: FinetuneConfig, out=None, resume: bool = False,
             init: str | None = None) -> dict:
    """Fine-tune ``agent`` online in ``env_id`` on the training engine (checkpoints, resume,
    signals; ``out`` is the run folder). Returns the engine's result, with ``before`` the
    evaluation of the starting policy."""
    from rl_seq import engine

    if not isinstance(agent.action_space, gym.spaces.Box):
        raise TypeError("online fine-tuning needs a continuous (Box) action space")
    dev, seed = agent.device, cfg.seed
    agent.check_env(*_spaces(env_id), env_id)
    kwargs = (agent.meta.get("env_kwargs") or {}) if env_id == agent.meta.get("env_id") else {}
    agent.meta.update(env_id=env_id, env_kwargs=kwargs)  # evaluations run in the fine-tuning env
    obs_dim = int(np.prod(agent.observation_space.shape))
    act_dim = int(np.prod(agent.action_space.shape))
    low = torch.as_tensor(agent.action_space.low, device=dev)
    high = torch.as_tensor(agent.action_space.high, device=dev)
    critic = Critic(obs_dim, act_dim).to(dev)
    q1, q2, q1_t, q2_t = critic.q1, critic.q2, critic.q1_t, critic.q2_t
    opt_q = torch.optim.Adam([*q1.parameters(), *q2.parameters()], lr=cfg.lr_critic)
    opt_pi = torch.optim.Adam(agent.model.parameters(), lr=cfg.lr_actor)
    tok = agent.model.backbone.tokenizer
    target = agent.meta["target_return"]
    K = agent.config.context
    env = gym.make(env_id, **agent.meta["env_kwargs"])
    buffer = EpisodeBuffer()
    live: dict = dict(ep=None, sampler=None, metrics={})

    def iterate(done: int) -> tuple[int, dict]:
        step = done + 1
        episodes = buffer.episodes
        if live["ep"] is None:  # a new episode (also the first step after a resume)
            obs, _ = env.reset(seed=seed * 100_000 + len(episodes))
            live.update(ep=dict(observations=[obs], actions=[], rewards=[], terminations=[], truncations=[]),
                        state=None, start=True, reward=0.0, obs=obs)
        ep = live["ep"]
        a, live["state"] = agent.predict(live["obs"], live["state"], np.array([live["start"]]),
                                         rewards=np.array([live["reward"]]))
        rng = np.random.default_rng((seed, step))  # per-step noise: the same after a resume
        a = np.clip(a + rng.normal(0, cfg.noise, a.shape) * (agent.action_space.high - agent.action_space.low) / 2,
                    agent.action_space.low, agent.action_space.high).astype(np.float32)
        live["state"].prev_action = torch.as_tensor(a, device=dev)[None]  # the action really taken
        obs, reward, term, trunc, _ = env.step(a)
        for k, v in (("observations", obs), ("actions", a), ("rewards", reward), ("terminations", term),
                     ("truncations", trunc)):
            ep[k].append(v)
        live.update(obs=obs, reward=reward, start=False)
        if term or trunc:
            episodes.append({k: np.asarray(v) for k, v in ep.items()})
            live["ep"] = None
        if step < cfg.start_steps or len(episodes) < 1 or step % cfg.train_every:
            return 1, {**live["metrics"], "episodes": float(len(episodes))}
        if live["sampler"] is None or step % 1000 < cfg.train_every:  # refresh the data every 1000 steps
            data = Episodes.from_episode_list(episodes, agent.observation_space, agent.action_space)
            # returns-to-go as the agent conditions on them: the target minus rewards so far
            ret_so_far = data.returns_to_go()[data.offsets[:-1]].repeat(data.lengths) - data.returns_to_go()
            nxt = np.concatenate([data.observations[1:], data.observations[-1:]])
            ends = data.offsets[1:] - 1
            nxt[ends] = data.final_observations
            live["sampler"] = SegmentSampler(
                data, K, seed=seed + step, rtg=target - ret_so_far,
                extra=dict(next_obs=nxt.astype(np.float32),
                           done=np.isin(np.arange(data.num_steps), ends[data.terminations[ends]])))
        b = {k: torch.as_tensor(v, device=dev) for k, v in live["sampler"].sample(cfg.batch_size).items()}
        m = b["mask"].float()
        o, a_t, r = b["obs"].float(), b["act"].float(), b["rew"].float()
        on, dn = b["next_obs"].float(), b["done"].float()
        # critic: TD3 target; the policy's action at s_{t+1} is its output at the window's
        # next step, so the window's last step trains the critic only when it ends an episode
        with torch.no_grad():
            pred = agent.model(agent.model.fields(o, a_t, b["rtg"], b["timestep"]), b["episode_start"])
            a_next = torch.cat([pred[:, 1:], pred[:, -1:]], 1)
            a_next = a_next + (0.2 * torch.randn_like(a_next)).clamp(-0.5, 0.5) * (high - low) / 2
            a_next = torch.maximum(torch.minimum(a_next, high), low)
            x_next = torch.cat([tok.normalize_observations(on), a_next], -1)
            y = r + cfg.gamma * (1 - dn) * torch.minimum(q1_t(x_next), q2_t(x_next)).squeeze(-1)
            m_q = m.clone()
            m_q[:, -1] *= dn[:, -1]
        x = torch.cat([tok.normalize_observations(o), a_t], -1)
        td = (q1(x).squeeze(-1) - y) ** 2 + (q2(x).squeeze(-1) - y) ** 2
        q_loss = (td * m_q).sum() / m_q.sum().clamp_min(1)
        opt_q.zero_grad(set_to_none=True)
        q_loss.backward()
        opt_q.step()
        live["metrics"] = {"q_loss": q_loss.item()}
        if step % cfg.policy_delay == 0:
            agent.model.train()
            pi = agent.model(agent.model.fields(o, a_t, b["rtg"], b["timestep"]), b["episode_start"])
            q = q1(torch.cat([tok.normalize_observations(o), pi], -1)).squeeze(-1)
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
        return 1, {**live["metrics"], "episodes": float(len(episodes))}

    work = engine.Work(iterate, cfg.steps, dict(critic=critic, opt_q=opt_q, opt_pi=opt_pi, buffer=buffer),
                       dict(env=env_id, init=init, phase="finetune"), config=cfg, before=True, close=env.close)
    return engine.train(agent, work, out, resume)


def _spaces(env_id: str) -> tuple[gym.Space, gym.Space]:
    try:
        with gym.make(env_id) as e:
            return e.observation_space, e.action_space
    except gym.error.Error as e:
        raise ValueError(f"cannot make env {env_id!r}: {e}") from None
