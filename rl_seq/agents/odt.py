"""Online Decision Transformer (``odt``; Zheng, Zhang and Grover, ICML 2022), written from
the paper: offline pretraining on a dataset, then online fine-tuning in its env, for any
return-conditioned backbone (``--backbone s4d`` gives Decision-S4's online phase).

The policy is stochastic: a Gaussian over Box actions, squashed onto the action bounds
(:class:`~rl_seq.nets.SquashedGaussianHead`), or a categorical over Discrete ones (its
logits: the same head dt has). Both phases minimise the negative
log-likelihood of the trajectories' actions minus an entropy bonus,

    loss(θ) = E[-log π_θ(a_t | R_≤t, s_≤t, a_<t)] - λ · H[π_θ],

with the temperature λ a dual variable learnt so that the policy's entropy stays near a
target β (the paper's constraint H[π_θ] ≥ β; the update is SAC's: λ grows while H < β):
``loss(λ) = λ · (H - β)`` with H detached. The squashed Gaussian's entropy has no closed form:
it is estimated as ``-log π(ã)`` of one reparameterised sample ã per step; a categorical's is
exact. β defaults to -dim(A) for Box actions (SAC's choice, which the paper adopts) and to
0.2 · log n for n Discrete actions (chosen, not from the paper, which has no discrete tasks: a
floor at a fifth of the uniform policy's entropy, so a nearly deterministic demonstrator's
policy keeps some exploration online; untuned).

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
evaluates the policy it starts from, reported as ``before``. The loss the engine steps on is
the policy's objective plus the temperature's; each holds the other's term fixed, so one
backward pass gives both their gradients.
"""

from __future__ import annotations

import copy
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn

from rl_seq.agents.base import adamw, warmup
from rl_seq.agents.decision import DecisionAgent, DecisionConfig
from rl_seq.config import check_range
from rl_seq.data import Episodes, SegmentSampler
from rl_seq.engine import Collected, Optimiser, Plan


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
    """β; None = -dim(A) for Box actions (SAC's choice, which the paper adopts), 0.2 · log n
    for n Discrete actions (chosen; module docstring)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range(self, "online_steps", 0)
        check_range(self, "updates_per_trajectory", 0)
        check_range(self, "buffer_size", 1)
        check_range(self, "online_batch_size", 1)
        check_range(self, "online_target_scale", 1)
        check_range(self, "init_temperature", 0, lo_open=True)
        check_range(self, "temperature_lr", 0, lo_open=True)


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
    data_parallel = False  # its online phase collects trajectories in one process
    progress_metrics = ("loss", "entropy", "temperature", "episode_return")

    def _build(self) -> nn.Module:
        if not isinstance(self.action_space, gym.spaces.Box | gym.spaces.Discrete):
            raise TypeError(f"odt's policy is a squashed Gaussian over Box actions or a categorical over Discrete "
                            f"ones; got {self.action_space}")
        return super()._build()

    def policy_terms(self, h: Tensor, act: Tensor, real: Tensor) -> tuple[Tensor, Tensor]:
        """The mean log-likelihood of the actions and the policy's mean entropy over the real steps."""
        n = real.float().sum()
        if self.model.discrete:
            dist = torch.distributions.Categorical(logits=self.model.head.net(h))
            log_lik, entropy = dist.log_prob(act.long()), dist.entropy()
        else:
            log_lik = self.model.head.log_prob(h, act.float())
            dist = self.model.head.dist(h)
            entropy = -dist.log_prob(dist.rsample())  # one reparameterised sample
        return torch.where(real, log_lik, 0).sum() / n, torch.where(real, entropy, 0).sum() / n

    def init_from(self, offline: DecisionAgent) -> None:
        """Start from a trained ``dt``/``dc``/``ds4``/``lram`` agent of the same architecture:
        its weights, data statistics and targets; its deterministic head becomes the Gaussian's
        mean (the log-std keeps its initialisation), or with Discrete actions its logits are
        the categorical's."""
        if not isinstance(offline, DecisionAgent):
            raise ValueError(f"--init takes a return-conditioned run (dt, dc, ds4, lram), not {offline.algo}")
        self.check_env(offline.observation_space, offline.action_space, "the --init agent")
        theirs = offline.model.state_dict()
        mine = self.model.state_dict()
        d = int(np.prod(self.action_space.shape))
        for k, v in theirs.items():
            if k in ("head.net.weight", "head.net.bias") and not self.model.discrete:
                mine[k][:d] = v
            elif k not in mine or mine[k].shape != v.shape:
                raise ValueError(f"the --init agent's {k} does not fit this odt ({tuple(v.shape)} vs "
                                 f"{tuple(mine[k].shape) if k in mine else 'absent'}); use the same backbone")
            else:
                mine[k] = v
        self.model.load_state_dict(mine)
        self.meta.update(copy.deepcopy(offline.meta))

    # -- training (the engine's protocol) -----------------------------------------------------
    def prepare(self, steps: int, dataset: Episodes, env: str | None, online_steps: int | None = None) -> Plan:
        cfg = self.config
        online_steps = cfg.online_steps if online_steps is None else online_steps
        self.setup_from_data(dataset)
        info = self._data_info(dataset, env)
        self.offline_steps, self.offline_data = steps, dataset
        if cfg.target_entropy is not None:
            self.target_entropy = cfg.target_entropy
        elif self.model.discrete:
            self.target_entropy = 0.2 * math.log(int(self.action_space.n))
        else:
            self.target_entropy = -float(np.prod(self.action_space.shape))
        best = float(dataset.episode_returns().max())
        self.explore_target = best + (cfg.online_target_scale - 1) * abs(best)  # = scale x best when best > 0
        self.sampler = SegmentSampler(dataset, cfg.train_segment, seed=cfg.seed, short_episodes=cfg.short_episodes,
                                      min_length=cfg.context)
        self.temperature = Temperature(cfg.init_temperature).to(self.device)
        self.optimizer = adamw(self.model, cfg.lr, cfg.weight_decay)
        # the warm-up belongs to the offline phase: an online phase alone starts from a trained
        # (warmed-up) run, at the full learning rate
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, warmup(cfg.warmup_steps if steps else 0))
        self.temperature_optimizer = torch.optim.Adam(self.temperature.parameters(), lr=cfg.temperature_lr)
        self.buffer = TrajectoryBuffer(cfg.buffer_size)
        milestones = {"offline": steps} if online_steps and steps else {}
        if online_steps and not steps:  # from a trained run: the policy it starts from
            milestones["before"] = 0
        state = dict(optimizer=self.optimizer, scheduler=self.scheduler, sampler=self.sampler,
                     temperature=self.temperature, temperature_optimizer=self.temperature_optimizer,
                     buffer=self.buffer)
        return Plan(steps + online_steps, Optimiser([self.optimizer, self.temperature_optimizer], self.scheduler,
                                                    cfg.grad_clip), state, info=info, milestones=milestones)

    def collect(self, step: int) -> Collected:
        """Offline: one window batch of the dataset. Online: one trajectory into the buffer,
        then ``updates_per_trajectory`` batches of the buffer (hindsight returns-to-go)."""
        cfg = self.config
        if step < self.offline_steps:
            return Collected(1, [self.batch(self.sampler, cfg.batch_size)])
        if not self.buffer.trajectories:  # the online phase starts (also after a resume, if empty)
            self.buffer.fill(self.offline_data)
        traj = self.trajectory(step)  # env seeds from the step: the same after a resume
        self.buffer.add(traj)
        data = self.buffer.episodes(self.observation_space, self.action_space)
        sampler = SegmentSampler(data, cfg.train_segment, seed=cfg.seed + step, min_length=1)
        size = cfg.online_batch_size or cfg.batch_size
        batches = (self.batch(sampler, size) for _ in range(cfg.updates_per_trajectory))
        return Collected(len(traj["rewards"]), batches, dict(episode_return=float(traj["rewards"].sum()),
                                                             episode_length=float(len(traj["rewards"]))))

    def loss(self, model: Callable, b: dict) -> tuple[Tensor, dict]:
        """The policy's objective plus the temperature's (each holds the other's term fixed)."""
        h = model(b["fields"], b["episode_start"]).float()
        log_lik, entropy = self.policy_terms(h, b["act"], b["mask"] > 0)
        loss = policy_loss(log_lik, entropy, self.temperature.value)
        t_loss = temperature_loss(self.temperature.value, entropy, self.target_entropy)
        return loss + t_loss, dict(loss=loss.detach(), nll=-log_lik.detach(), entropy=entropy.detach(),
                                   temperature=self.temperature.value.detach())

    def trajectory(self, episode: int) -> dict:
        """One trajectory, sampling the policy conditioned on the exploration target."""
        if self.train_env is None:
            self.train_env = gym.make(self.meta["env_id"], **(self.meta.get("env_kwargs") or {}))
        obs, _ = self.train_env.reset(seed=self.config.seed * 100_000 + episode)
        ep = dict(observations=[self.flat_observations(obs)[0][0]], actions=[], rewards=[], terminations=[],
                  truncations=[])
        a, state = self.predict(obs, None, deterministic=False, acting={"target_return": self.explore_target})
        while True:
            obs, reward, term, trunc, _ = self.train_env.step(a)
            flat = self.flat_observations(obs)[0][0]
            for k, v in (("observations", flat), ("actions", a), ("rewards", reward), ("terminations", term),
                         ("truncations", trunc)):
                ep[k].append(v)
            if term or trunc:
                return {k: np.asarray(v) for k, v in ep.items()}
            a, state = self.predict(obs, state, np.array([False]), deterministic=False, rewards=np.array([reward]))
