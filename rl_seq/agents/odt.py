"""Online Decision Transformer (``odt``; Zheng, Zhang and Grover, ICML 2022), written from
the paper: offline pretraining on a dataset, then online fine-tuning in its env, for any
return-conditioned backbone (``--backbone s4d`` gives Decision-S4's online phase).

The policy is stochastic: a Gaussian over actions, squashed onto the action bounds
(:class:`~rl_seq.nets.SquashedGaussianHead`). Both phases minimise the negative
log-likelihood of the trajectories' actions minus an entropy bonus,

    loss(θ) = E[-log π_θ(a_t | R_≤t, s_≤t, a_<t)] - λ · H[π_θ],

with the temperature λ a dual variable learnt so that the policy's entropy stays near a
target β (the paper's constraint H[π_θ] ≥ β; the update is SAC's: λ grows while H < β):
``loss(λ) = λ · (H - β)`` with H detached. The squashed Gaussian's entropy has no closed form:
it is estimated as ``-log π(ã)`` of one reparameterised sample ã per step.

Online, a replay buffer of whole trajectories starts with the best offline trajectories by
return and takes each new online trajectory, dropping the oldest. Its returns-to-go are
relabelled in hindsight: the achieved return from each step on, not the target the
trajectory was collected with. Trajectories are collected by conditioning on an exploration
target return (``online_target_scale`` x the best offline return) and sampling the policy;
each is followed by ``updates_per_trajectory`` gradient steps on windows of the buffer.
Evaluations act deterministically (the squashed mean) at the evaluation target.

On the engine the steps are the offline gradient steps, then the online env steps; the
evaluation at the end of the offline phase is reported as ``offline``, the final one as
``last``; an online phase alone (from a trained run, :meth:`ODTAgent.init_from`) first
evaluates the policy it starts from, reported as ``before``.
"""

from __future__ import annotations

import copy
import math
from collections import deque
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn

from rl_seq.agents.base import adamw, warmup
from rl_seq.agents.decision import DecisionAgent, DecisionConfig
from rl_seq.config import ConfigError
from rl_seq.data import Episodes, SegmentSampler
from rl_seq.engine import Work, distributed


@dataclass
class ODTConfig(DecisionConfig):
    """Online Decision Transformer: the DT recipe (the dataclass defaults) plus its online
    phase. ``steps`` are the offline gradient steps."""

    online_steps: int = 0
    """Environment steps of the online phase (0 = offline only)."""
    buffer_size: int = 1000
    """Trajectories in the replay buffer (the paper's scale: a thousand)."""
    updates_per_trajectory: int = 300
    """Gradient steps after each collected trajectory (chosen; a few hundred as in the paper's
    MuJoCo runs; lower it to trade sample efficiency for wall time)."""
    online_target_scale: float = 2.0
    """Exploration target return = this x the best offline episode return (for a negative best
    return R: R + (scale - 1)·|R|, so the target is always above it). Chosen: the paper
    conditions online on a return above the offline one, a multiple of it per task."""
    online_batch_size: int | None = None
    """Windows per online gradient step (None: ``batch_size``)."""
    init_temperature: float = 0.1
    """Initial temperature λ."""
    temperature_lr: float = 1e-4
    """Adam learning rate of log λ."""
    target_entropy: float | None = None
    """β; None = -dim(A), SAC's choice, which the paper adopts."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.online_steps < 0 or self.updates_per_trajectory < 0 or self.buffer_size < 1:
            raise ConfigError("online_steps and updates_per_trajectory must be >= 0 and buffer_size >= 1")
        if self.init_temperature <= 0:
            raise ConfigError(f"init_temperature must be > 0, got {self.init_temperature}")


class Temperature(nn.Module):
    """λ = exp(log λ), learnt against the target entropy."""

    def __init__(self, init: float) -> None:
        super().__init__()
        self.log_value = nn.Parameter(torch.tensor(math.log(init)))

    @property
    def value(self) -> Tensor:
        return self.log_value.exp()


def policy_loss(log_likelihood: Tensor, entropy: Tensor, temperature: Tensor) -> Tensor:
    """The paper's objective: -log-likelihood - λ·entropy (λ held fixed here)."""
    return -log_likelihood - temperature.detach() * entropy


def temperature_loss(temperature: Tensor, entropy: Tensor, target: float) -> Tensor:
    """λ·(H - β), H held fixed: descending it raises λ while H < β and lowers it above."""
    return temperature * (entropy.detach() - target)


class TrajectoryBuffer:
    """Whole trajectories, oldest first; at capacity each new one drops the oldest."""

    def __init__(self, capacity: int) -> None:
        self.trajectories: deque[dict] = deque(maxlen=capacity)

    def fill(self, offline: Episodes) -> None:
        """The best offline trajectories by return, inserted worst first (so the worst of them
        is the first an online trajectory replaces)."""
        cap = self.trajectories.maxlen
        order = np.argsort(offline.episode_returns(), kind="stable")[-cap:]
        eps = offline.to_episode_list()
        self.trajectories.clear()
        self.trajectories.extend(eps[i] for i in order)

    def add(self, trajectory: dict) -> None:
        self.trajectories.append(trajectory)

    def episodes(self, observation_space: gym.Space, action_space: gym.Space) -> Episodes:
        """The buffer as Episodes; their returns-to-go are the achieved ones (hindsight)."""
        return Episodes.from_episode_list(list(self.trajectories), observation_space, action_space)

    def state_dict(self) -> dict:
        return {"capacity": self.trajectories.maxlen,
                "trajectories": [{k: torch.as_tensor(np.asarray(v)) for k, v in t.items()}
                                 for t in self.trajectories]}

    def load_state_dict(self, s: dict) -> None:
        self.trajectories = deque(({k: v.numpy() for k, v in t.items()} for t in s["trajectories"]),
                                  maxlen=s["capacity"])


class ODTAgent(DecisionAgent):
    algo = "odt"
    config_class = ODTConfig
    stochastic = True

    def _build(self) -> nn.Module:
        if not isinstance(self.action_space, gym.spaces.Box):
            raise TypeError(f"odt's policy is a squashed Gaussian over Box actions; got {self.action_space}")
        return super()._build()

    def init_from(self, offline: DecisionAgent) -> None:
        """Start from a trained ``dt``/``dc``/``ds4``/``lram`` agent of the same architecture:
        its weights, data statistics and targets; its deterministic head becomes the Gaussian's
        mean (the log-std keeps its initialisation)."""
        if not isinstance(offline, DecisionAgent):
            raise ValueError(f"--init takes a return-conditioned run (dt, dc, ds4, lram), not {offline.algo}")
        self.check_env(offline.observation_space, offline.action_space, "the --init agent")
        theirs = offline.model.state_dict()
        mine = self.model.state_dict()
        d = int(np.prod(self.action_space.shape))
        for k, v in theirs.items():
            if k in ("head.net.weight", "head.net.bias"):
                mine[k][:d] = v
            elif k not in mine or mine[k].shape != v.shape:
                raise ValueError(f"the --init agent's {k} does not fit this odt ({tuple(v.shape)} vs "
                                 f"{tuple(mine[k].shape) if k in mine else 'absent'}); use the same backbone")
            else:
                mine[k] = v
        self.model.load_state_dict(mine)
        self.meta.update(copy.deepcopy(offline.meta))

    def _work(self, steps: int, dataset: Episodes, env: str | None, online_steps: int | None = None) -> Work:
        cfg, dev = self.config, self.device
        if distributed():
            raise ValueError("odt trains online in one process; torchrun/DDP is for dt, dc, ds4, lram and qt")
        online_steps = cfg.online_steps if online_steps is None else online_steps
        self.setup_from_data(dataset)
        info = self._data_info(dataset, env)
        target_entropy = -float(np.prod(self.action_space.shape)) if cfg.target_entropy is None else cfg.target_entropy
        best = float(dataset.episode_returns().max())
        explore_target = best + (cfg.online_target_scale - 1) * abs(best)  # = scale x best when best > 0
        segment = cfg.train_segment
        offline = SegmentSampler(dataset, segment, seed=cfg.seed, short_episodes=cfg.short_episodes,
                                 min_length=cfg.context)
        model, temp = self.model, Temperature(cfg.init_temperature).to(dev)
        opt = adamw(model, cfg.lr, cfg.weight_decay)
        # the warm-up belongs to the offline phase: an online phase alone starts from a trained
        # (warmed-up) run, at the full learning rate
        sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup(cfg.warmup_steps if steps else 0))
        opt_temp = torch.optim.Adam(temp.parameters(), lr=cfg.temperature_lr)
        buffer = TrajectoryBuffer(cfg.buffer_size)
        live: dict = dict(env=None)

        def update(sampler: SegmentSampler, batch_size: int) -> dict:
            b = {k: torch.as_tensor(v, device=dev) for k, v in sampler.sample(batch_size).items()}
            act, mask = b["act"].float(), b["mask"].float()
            h = model.features(model.fields(b["obs"].float(), act, b["rtg"], b["timestep"]), b["episode_start"])
            real, n = mask > 0, mask.sum()
            log_lik = torch.where(real, model.head.log_prob(h, act), 0).sum() / n
            dist = model.head.dist(h)
            entropy = -torch.where(real, dist.log_prob(dist.rsample()), 0).sum() / n  # one reparameterised sample
            loss = policy_loss(log_lik, entropy, temp.value)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            gnorm = nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            lr = sched.get_last_lr()[0]
            sched.step()
            t_loss = temperature_loss(temp.value, entropy, target_entropy)
            opt_temp.zero_grad(set_to_none=True)
            t_loss.backward()
            opt_temp.step()
            return dict(loss=loss.detach(), nll=-log_lik.detach(), entropy=entropy.detach(),
                        temperature=temp.value.detach(), grad_norm=gnorm, lr=lr)

        def collect(episode: int) -> dict:
            """One trajectory, sampling the policy conditioned on the exploration target."""
            if live["env"] is None:
                live["env"] = gym.make(self.meta["env_id"], **(self.meta.get("env_kwargs") or {}))
            e, target = live["env"], self.meta["target_return"]
            self.meta["target_return"] = explore_target
            try:
                obs, _ = e.reset(seed=cfg.seed * 100_000 + episode)
                ep = dict(observations=[obs], actions=[], rewards=[], terminations=[], truncations=[])
                state, start, reward, done = None, True, 0.0, False
                while not done:
                    a, state = self.predict(obs, state, np.array([start]), deterministic=False,
                                            rewards=np.array([reward]))
                    obs, reward, term, trunc, _ = e.step(a)
                    for k, v in (("observations", obs), ("actions", a), ("rewards", reward),
                                 ("terminations", term), ("truncations", trunc)):
                        ep[k].append(v)
                    start, done = False, term or trunc
            finally:
                self.meta["target_return"] = target
            return {k: np.asarray(v) for k, v in ep.items()}

        def iterate(step: int) -> tuple[int, dict]:
            if step < steps:  # offline pretraining: one gradient step on the dataset
                return 1, update(offline, cfg.batch_size)
            if not buffer.trajectories:  # the online phase starts (also after a resume, if empty)
                buffer.fill(dataset)
            traj = collect(step)  # env seeds from the step: the same after a resume
            buffer.add(traj)
            data = buffer.episodes(self.observation_space, self.action_space)  # hindsight returns-to-go
            sampler = SegmentSampler(data, segment, seed=cfg.seed + step, min_length=1)
            metrics = {}
            for _ in range(cfg.updates_per_trajectory):
                metrics = update(sampler, cfg.online_batch_size or cfg.batch_size)
            metrics.update(episode_return=float(traj["rewards"].sum()), episode_length=float(len(traj["rewards"])))
            return len(traj["rewards"]), metrics

        def close() -> None:
            if live["env"] is not None:
                live["env"].close()

        state = dict(optimizer=opt, scheduler=sched, sampler=offline, temperature=temp, temperature_optimizer=opt_temp,
                     buffer=buffer)
        milestones = {"offline": steps} if online_steps and steps else {}
        return Work(iterate, steps + online_steps, state, info, close=close, milestones=milestones,
                    before=online_steps > 0 and steps == 0,  # from a trained run: the policy it starts from
                    show=("loss", "entropy", "temperature", "episode_return"))
