"""Value-guided Decision Transformer (``vdt``): return-conditioned sequence BC regularised by
a learnt critic, after the Q-value Regularized Transformer (Hu et al., "Q-value Regularized
Transformer for Offline Reinforcement Learning", ICML 2024).

Return-conditioned BC copies the data, good and bad parts alike: it cannot stitch. A critic
Q(s, a) learnt by temporal differences can, and pulling the policy's actions up the critic's
gradient, while the BC loss keeps them near the data (TD3+BC, Fujimoto & Gu 2021), moves the
policy towards the better actions of the data. Per training window (the DT's: K steps of
``(R_t, s_t, a_t)``; each episode followed by a step holding its final observation):

- critic: twin MLPs ``Q_1, Q_2(s, a)`` regress to the discounted rewards to the window's last
  step plus its bootstrapped value, ``y_t = Σ_{t<=k<K-1} γ^(k-t) r_k + γ^(K-1-t) min_j
  Q'_j(s_{K-1}, π(s_{K-1}))`` (the paper's targets; ``n_step`` caps the lookahead), ending at an
  episode's end instead (no bootstrap after a termination, bootstrap from the final observation
  after a truncation), with ``π(s_{K-1})`` the policy's own action at that position of the same
  window (no gradient) and ``Q'`` an EMA of the critic: mostly the data's own rewards, little
  bootstrapping, so little room for the critic to overestimate actions the data never took;
- policy: the DT's MSE plus ``η · (-Q_1(s_t, π(s_t)) / mean|Q_1|)`` over the window's acted
  steps, the critic held fixed: the paper's loss, whose normalisation by mean |Q| (TD3+BC's)
  makes one η serve rewards of any scale.

Where this differs from the paper, and why:

- the bootstrap action comes from the policy being trained (the paper: an EMA copy of it, a
  second forward pass through the transformer per step), so a step costs one backbone pass;
- one η for every dataset (the paper tunes η per dataset, 1 to 5 on locomotion) and no early
  stopping on evaluation returns;
- acting conditions on the target return as the DT does (the paper also scores several
  candidate returns by Q; not done here).

The critic reads the tokenizer's normalised observations; rewards are divided by the data's
largest absolute reward, so targets stay near 1/(1-γ) whatever the task's reward scale.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call

from rl_seq.agents.base import adamw, fused, warmup
from rl_seq.agents.bootstrap import n_step_targets, with_final_steps
from rl_seq.agents.decision import DecisionAgent, DecisionConfig, DecisionModel
from rl_seq.config import check_range
from rl_seq.data import Episodes, SegmentSampler
from rl_seq.distributed import rank_seed
from rl_seq.engine import Optimiser, Plan


@dataclass
class VDTConfig(DecisionConfig):
    """The Decision Transformer recipe (the dataclass defaults of :class:`DecisionConfig`) plus
    a critic and the weight of its term in the policy loss."""

    eta: float = 1.0
    """η, the weight of the normalised critic term ``-Q/mean|Q|`` beside the BC loss (the
    paper's hopper-medium value; 0: plain return-conditioned BC, the critic still trained)."""
    gamma: float = 0.99
    """Discount of the critic's targets."""
    n_step: int | None = None
    """n of the critic's n-step targets; each lookahead also stops at the window's last step and
    bootstraps there. None: to the window's end (the paper's targets: a position t of a K-step
    window sees K-1-t real rewards, the window's last one bootstraps nothing)."""
    tau: float = 0.005
    """EMA rate of the target critic."""
    critic_lr: float = 3e-4
    """Adam learning rate of the critic (no warm-up, no clip: TD3+BC's)."""
    critic_hidden: int = 256
    """Width of the critic's two hidden layers."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range(self, "eta", 0)
        check_range(self, "gamma", 0, 1, lo_open=True, hi_open=True)
        check_range(self, "n_step", 1)
        check_range(self, "tau", 0, 1, lo_open=True)
        check_range(self, "critic_lr", 0, lo_open=True)
        check_range(self, "critic_hidden", 1)


class TwinCritic(nn.Module):
    """Two MLPs ``Q_j(s, a)``: obs [..., o] (normalised), act [..., d] -> Q [2, ...]."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int) -> None:
        super().__init__()
        self.nets = nn.ModuleList(
            nn.Sequential(nn.Linear(obs_dim + act_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                          nn.Linear(hidden, 1)) for _ in range(2))

    def forward(self, obs: Tensor, act: Tensor) -> Tensor:
        x = torch.cat([obs, act], -1)
        return torch.stack([net(x).squeeze(-1) for net in self.nets])


class VDTModel(DecisionModel):
    """The Decision Transformer's tokenizer, backbone and tanh head, plus the critic."""

    def __init__(self, obs_space: gym.Space, act_space: gym.Space, cfg: VDTConfig) -> None:
        super().__init__(obs_space, act_space, cfg)
        self.critic = TwinCritic(int(np.prod(obs_space.shape)), int(np.prod(act_space.shape)), cfg.critic_hidden)
        self.register_buffer("reward_scale", torch.ones(()))

    def actor(self) -> nn.ModuleList:
        """Every module but the critic (what the policy's optimiser and clip see)."""
        return nn.ModuleList([m for name, m in self.named_children() if name != "critic"])


class VDTAgent(DecisionAgent):
    algo = "vdt"
    config_class = VDTConfig
    data_parallel = False  # the critic runs outside the DDP-wrapped forward

    def _build(self) -> nn.Module:
        obs, act = self.model_observation_space, self.action_space
        if not (isinstance(act, gym.spaces.Box) and isinstance(obs, gym.spaces.Box) and len(obs.shape) == 1):
            raise TypeError(f"vdt's critic is an MLP over vector observations and Box actions; got {obs} and {act} "
                            "(use dt for discrete actions or images)")
        model = VDTModel(obs, act, self.config)
        for key in ("return_scale", "reward_scale"):
            if key in self.meta:
                getattr(model, key).fill_(self.meta[key])
        return model

    def setup_from_data(self, episodes: Episodes) -> None:
        super().setup_from_data(episodes)
        scale = float(np.abs(episodes.rewards).max()) or 1.0
        self.meta["reward_scale"] = scale
        self.model.reward_scale.fill_(scale)

    # -- training (the engine's protocol) -----------------------------------------------------
    def prepare(self, steps: int, dataset: Episodes, env: str | None) -> Plan:
        cfg = self.config
        self.setup_from_data(dataset)
        aug, final, terminal = with_final_steps(dataset)
        self.sampler = SegmentSampler(aug, cfg.train_segment, seed=rank_seed(cfg.seed),
                                      short_episodes=cfg.short_episodes, min_length=cfg.context,
                                      extra=dict(final=final, terminal=terminal))
        actor = self.model.actor()
        self.target = copy.deepcopy(self.model.critic).requires_grad_(False)
        self.optimizer = adamw(actor, cfg.lr, cfg.weight_decay)
        self.critic_optimizer = fused(torch.optim.Adam, self.model.critic.parameters(), lr=cfg.critic_lr)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, warmup(cfg.warmup_steps))
        return Plan(steps, Optimiser([self.optimizer, self.critic_optimizer], self.scheduler, cfg.grad_clip,
                                     clipped=list(actor.parameters())),
                    dict(optimizer=self.optimizer, critic_optimizer=self.critic_optimizer, scheduler=self.scheduler,
                         sampler=self.sampler, target=self.target),
                    per_rank=("sampler",), info=self._data_info(dataset, env))

    def loss(self, model: Callable, b: dict) -> tuple[Tensor, dict]:
        """The DT's MSE on the acted steps, the critic's TD error, and η times the normalised
        critic term (module docstring)."""
        cfg, critic = self.config, self.model.critic
        pred = self.model.action_outputs(model(b["fields"], b["episode_start"]).float())  # [B, K, d]
        acted = (b["mask"] & ~b["final"]).float()
        n_acted = acted.sum().clamp_min(1)
        bc = (((pred - b["act"].float()) ** 2).mean(-1) * acted).sum() / n_acted
        obs = self.model.backbone.tokenizer.normalize_observations(b["obs"].float())
        with torch.no_grad():
            v = self.target(obs, pred.detach()).min(0).values
            y, trainable = n_step_targets(v, b["rew"].float() / self.model.reward_scale, b["final"], b["terminal"],
                                          b["mask"], cfg.gamma, cfg.n_step or cfg.train_segment, clip_to_window=True)
        q = critic(obs, b["act"].float())  # [2, B, K]
        m = trainable.float()
        td = (((q - y) ** 2).sum(0) * m).sum() / m.sum().clamp_min(1)
        frozen = {k: p.detach() for k, p in critic.named_parameters()}
        q_pi = functional_call(critic, frozen, (obs, pred))[0]  # gradients reach the policy only
        q_term = -(q_pi * acted).sum() / (q_pi.abs().detach() * acted).sum().clamp_min(1e-6)
        loss = bc + td + cfg.eta * q_term
        return loss, {"bc": bc.detach(), "td": td.detach(), "q_policy": ((q_pi * acted).sum() / n_acted).detach()}

    def after_update(self) -> None:
        """The target critic: an EMA of the online one."""
        with torch.no_grad():
            for pt, p in zip(self.target.parameters(), self.model.critic.parameters()):
                pt.lerp_(p, self.config.tau)
