"""Q-Transformer (Chebotar et al. 2023): offline Q-learning with one token per action
dimension. A Discrete action space is one dimension whose bins are its actions: one Q over
the actions, the rest unchanged (n-step targets, Monte-Carlo lower bound, the conservative
regulariser on the actions the data did not take).

Each action dimension is discretised into ``n_bins`` uniform bins and given its own token;
tokens per step are ``(s_t, a_t^1 ... a_t^d)``. The Q-values of dimension i (all bins) are
read at the token before ``a_t^i``, so they are conditioned on the state history and on the
bins already chosen for dimensions < i. Per-dimension Bellman targets (``targets``):

- dimension i < d regresses to ``max_b Q_target(s_t, a^{<=i}, a^{i+1}=b)``;
- dimension d regresses to the n-step return ``Σ_k γ^k r_{t+k} + γ^m max_b Q_target(s_{t+m}, a^1=b)``
  (no bootstrap after a termination, bootstrap from the final observation after a truncation);
- every target is raised to the Monte-Carlo return of the data (a lower bound).

Rewards are scaled to ``(1-γ)(r - lo)/(r_max - lo)`` so Q lies in [0, 1] (``lo`` per
``reward_floor``), or with ``reward_scale="return"`` to ``(r - lo)/G``, G the data's largest
discounted return, for sparse rewards (one at the goal), where ``1-γ`` would leave every Q below
``1-γ``. The conservative regulariser pushes the Q of bins the data did not take
towards 0. The target network is an EMA of the online one. Greedy acting decodes dimension by
dimension through the backbone's step state; with ``support`` > 0 (a deviation from the paper,
see QTConfig) the target max and the greedy choice keep to the bins a behaviour head finds
likely under the data. ``decode="soft"`` (another deviation) acts with the mean of the
behaviour head's bins reweighted by exp(Q / temperature) instead of the argmax.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn

from rl_seq.agents.base import Agent, adamw, warmup
from rl_seq.agents.bootstrap import n_step_targets, with_final_steps
from rl_seq.config import OfflineConfig, check_choice, check_range
from rl_seq.data import Episodes, SegmentSampler
from rl_seq.distributed import rank_seed
from rl_seq.engine import Collected, Optimiser, Plan, precision
from rl_seq.nets import Backbone, BackboneConfig, BinHead
from rl_seq.tokenizer import TrajectoryTokenizer


@dataclass
class QTConfig(OfflineConfig):
    """Q-Transformer."""

    legacy_defaults = {"heads": "shared", "reward_floor": "data_min"}

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    """The sequence model over (s, a_1..a_d) tokens."""
    context: int = 4
    """K: timesteps of history per training window. Past steps' tokens include their actions,
    so a policy acts on its own earlier actions (configs/qt/halfcheetah.yaml uses 1: the
    Markov state alone)."""
    n_bins: int = 256
    """Bins per action dimension. Where the data's actions pile up at the bounds (clipped
    Gaussian policies, e.g. SB3 PPO), each end bin outweighs every interior bin, and the
    paper's conservative regulariser (``support=0``) makes greedy acting pick the bounds."""
    warmup_steps: int = 1000
    """Linear learning-rate warm-up."""
    grad_clip: float = 1.0
    """Gradient-norm clip."""
    gamma: float = 0.99
    """Discount."""
    n_step: int = 3
    """n of the n-step return targets of the last dimension."""
    tau: float = 0.005
    """EMA rate of the target network."""
    conservative_weight: float = 0.5
    """Weight of the regulariser pushing Q of bins not in the data to 0: the paper's guard
    against unseen bins. With ``support`` on, bins outside the support never enter a max or
    the greedy choice; configs/qt/hopper.yaml turns it off there."""
    mc_lower_bound: bool = True
    """Raise targets to the data's Monte-Carlo return."""
    heads: str = "per_dim"
    """``per_dim``: each action dimension reads its Q-values through its own linear map (the
    paper); ``shared``: one map for all dimensions, told apart by their token embedding."""
    support: float = 0.0
    """Behaviour-support threshold τ (discrete BCQ, Fujimoto et al. 2019; not in the paper):
    a behaviour head learns the data's bin distribution of each dimension by cross-entropy,
    and the target max and greedy decoding consider only bins whose probability is at least τ
    times the most likely bin's (discrete BCQ uses 0.3, as configs/qt/hopper.yaml does). 0:
    every bin, the paper's method and the default."""
    decode: str = "greedy"
    """How acting picks each dimension's action: ``greedy``, the argmax of Q over the allowed
    bins (the paper); ``soft``, the mean bin centre under π(b) ∝ π_β(b)·exp(Q(b)/temperature),
    with π_β the behaviour head (trained whenever ``soft`` is on): advantage-weighted policy
    extraction (AWR, Peng et al. 2019; CRR, Wang et al. 2020), not in the paper. Where the data's
    actions pile up at the bounds the argmax goes there; the weighted mean stays inside the data's
    spread and moves towards the bins Q prefers."""
    temperature: float = 0.3
    """``soft`` decoding: how far Q may pull the action from the behaviour mean, in units of Q
    (rewards are scaled so Q lies in [0, 1]); large = the behaviour policy's mean, near 0 =
    greedy among the bins the behaviour policy takes (0.3: the best of 1e6 / 0.3 / 0.1 on
    halfcheetah/medium-v0)."""
    reward_floor: str = "zero"
    """Where the reward scaling puts 0: ``zero`` scales by ``(r - min(r_min, 0)) / range``, so the
    0 a termination bootstraps is worth a reward of 0 (on hopper, r_min 0.84: a fall ends the
    survival bonus); ``data_min``: by ``(r - r_min) / range`` (a fall is worth the smallest reward)."""
    reward_scale: str = "horizon"
    """What the shifted reward ``r - lo`` is divided by: ``horizon``, ``range / (1-γ)``, so no
    return can exceed Q = 1 (dense rewards: hopper's survival bonus every step); ``return``, G
    the data's largest discounted return-to-go, so the best return in the data is Q = 1 (sparse
    rewards: MiniGrid's one reward of at most 1 at the goal would otherwise give every Q below
    1-γ = 0.01, too little for the actions' differences to survive the conservative term;
    configs/qt/minigrid.yaml)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range(self, "context", 1)
        check_range(self, "n_bins", 2)
        check_range(self, "n_step", 1)
        check_range(self, "warmup_steps", 0)
        check_range(self, "grad_clip", 0, lo_open=True)
        check_range(self, "gamma", 0, 1, lo_open=True, hi_open=True)
        check_range(self, "tau", 0, 1, lo_open=True)
        check_range(self, "conservative_weight", 0)
        check_choice(self, "heads", ("per_dim", "shared"))
        check_choice(self, "reward_floor", ("zero", "data_min"))
        check_choice(self, "reward_scale", ("horizon", "return"))
        self.check_acting(self)

    @staticmethod
    def check_acting(cfg: QTConfig | QTActing) -> None:
        """The checks of the fields a trained qt's acting settings may change (QTActing)."""
        check_range(cfg, "support", 0, 1)
        check_range(cfg, "temperature", 0, lo_open=True)
        check_choice(cfg, "decode", ("greedy", "soft"))


class QTModel(nn.Module):
    def __init__(self, obs_space: gym.Space, act_space: gym.Space, cfg: QTConfig) -> None:
        super().__init__()
        tok = TrajectoryTokenizer(obs_space, act_space, cfg.backbone.d_model, "obs,act_dims",
                                  cfg.max_timestep, cfg.n_bins)
        bb = cfg.backbone
        if bb.mixer == "attention" and "window" not in bb.mixer_options:  # K steps of (s, a_1..a_d) tokens
            bb = dataclasses.replace(bb, mixer_options={**bb.mixer_options, "window": (tok.discretiser.dims + 1)
                                                        * cfg.context})
        self.backbone = Backbone(tok, bb)
        self.dims, bins = tok.discretiser.dims, tok.discretiser.n_bins  # Discrete(n): one dimension, n bins
        n_maps = self.dims if cfg.heads == "per_dim" else 1
        self.head = BinHead(cfg.backbone.d_model, bins, n_maps)
        wants_behaviour = cfg.support > 0 or cfg.decode == "soft"
        self.behaviour = BinHead(cfg.backbone.d_model, bins, n_maps, squash=False) if wants_behaviour else None

    def forward(self, fields: dict, episode_start: Tensor) -> tuple[Tensor, Tensor | None]:
        """fields [B,L,...] -> Q [B, L, d, n_bins] (dimension i read at slot i) and the
        behaviour logits of the same shape (None without a behaviour head)."""
        h, _ = self.backbone(fields, None, episode_start)
        B, Lk, D = h.shape
        h = h.view(B, Lk // (self.dims + 1), self.dims + 1, D)[:, :, : self.dims]
        return self.head(h), None if self.behaviour is None else self.behaviour(h)

    @staticmethod
    def in_support(logits: Tensor | None, support: float) -> Tensor | None:
        """Behaviour logits [..., n_bins] -> bool [..., n_bins]: the bins whose probability is at
        least ``support`` times the most likely one's (None: every bin, when ``support`` is 0 or
        there is no behaviour head)."""
        if logits is None or not support:
            return None
        return logits >= logits.max(-1, keepdim=True).values + math.log(support)


def targets(q_tgt: Tensor, rew: Tensor, final: Tensor, terminal: Tensor, valid: Tensor, mc: Tensor,
            gamma: float, n: int, mc_lower_bound: bool = True, allowed: Tensor | None = None
            ) -> tuple[Tensor, Tensor]:
    """Per-dimension Bellman targets over a window.

    q_tgt: [B, L, d, nb] target-network Q; allowed: [B, L, d, nb] the bins the max may take
    (None: all); rew, mc: [B, L] scaled rewards and Monte-Carlo returns; final, terminal,
    valid: [B, L] as in :func:`~rl_seq.agents.bootstrap.n_step_targets`, which gives the last
    dimension's n-step return (bootstrapped from the first dimension's max). Returns y
    [B, L, d] and trainable [B, L].
    """
    best = (q_tgt if allowed is None else q_tgt.masked_fill(~allowed, -torch.inf)).max(-1).values  # [B, L, d]
    y_last, trainable = n_step_targets(best[..., 0], rew, final, terminal, valid, gamma, n)
    y = torch.cat([best[..., 1:], y_last[..., None]], -1)
    if mc_lower_bound:
        y = torch.maximum(y, mc[..., None])
    return y, trainable


def td_and_conservative(q: Tensor, bins: Tensor, y: Tensor, trainable: Tensor) -> tuple[Tensor, Tensor]:
    """q [B,L,d,nb], bins (data) [B,L,d], y [B,L,d], trainable [B,L] ->
    (mean squared TD error of the data bins, mean Q² of the other bins), each averaged over
    trainable steps and dimensions."""
    m = trainable[..., None].float()
    q_data = q.gather(-1, bins[..., None]).squeeze(-1)
    td = (((q_data - y) ** 2) * m).sum() / (m.sum() * q.shape[2]).clamp_min(1)
    others = torch.ones_like(q).scatter_(-1, bins[..., None], 0.0)
    cons = ((q**2 * others).sum(-1) / others.sum(-1) * m).sum() / (m.sum() * q.shape[2]).clamp_min(1)
    return td, cons


@dataclass
class QTActing:
    """How a Q-Transformer acts: given to ``predict`` / ``evaluate`` (or ``rl-seq eval --set``),
    held in the acting state; the model is not touched. Defaults: the config's fields of the
    same names (see :class:`QTConfig` for their meaning and their checks)."""

    decode: str
    """``greedy`` (argmax of Q over the allowed bins) or ``soft`` (behaviour bins reweighted by
    exp(Q / temperature))."""
    temperature: float
    """``soft`` decoding's temperature, > 0."""
    support: float
    """Bins within this factor of the behaviour head's most likely one are allowed, in [0, 1]."""

    def __post_init__(self) -> None:
        QTConfig.check_acting(self)


@dataclass
class QTState:
    acting: QTActing
    t: np.ndarray  # [n]
    prev_action: Tensor  # [n, d]
    backbone: tuple | None = None


class QTAgent(Agent):
    algo = "qt"
    config_class = QTConfig

    def _build(self) -> nn.Module:
        if not isinstance(self.action_space, gym.spaces.Box | gym.spaces.Discrete):
            raise TypeError(f"qt acts in Box actions (discretised per dimension) or Discrete ones (one Q over the "
                            f"actions); got {self.action_space}")
        return QTModel(self.model_observation_space, self.action_space, self.config)

    def _actions(self, act: Tensor) -> Tensor:
        """The data's actions as [..., d] floats (a Discrete action is one dimension)."""
        act = act.float()
        return act[..., None] if isinstance(self.action_space, gym.spaces.Discrete) else act

    def setup_from_data(self, episodes: Episodes) -> None:
        super().setup_from_data(episodes)
        self.meta.update(reward_min=float(episodes.rewards.min()), reward_max=float(episodes.rewards.max()))
        if self.config.reward_scale == "return":  # a pass over the data: only when it is used
            shifted = copy.copy(episodes)
            shifted.rewards = episodes.rewards - self.reward_floor()
            self.meta["return_max"] = float(shifted.returns_to_go(self.config.gamma).max())

    def reward_floor(self) -> float:
        """The reward that scales to 0 (``reward_floor``)."""
        lo = self.meta["reward_min"]
        return min(lo, 0.0) if self.config.reward_floor == "zero" else lo

    def scale_rewards(self, r: np.ndarray) -> np.ndarray:
        """Rewards -> the scale Q is learnt in (``reward_scale``)."""
        lo, cfg = self.reward_floor(), self.config
        if cfg.reward_scale == "return":
            return ((r - lo) / max(self.meta["return_max"], 1e-8)).astype(np.float32)
        return ((1 - cfg.gamma) * (r - lo) / max(self.meta["reward_max"] - lo, 1e-8)).astype(np.float32)

    # -- training (the engine's protocol) -----------------------------------------------------
    def prepare(self, steps: int, dataset: Episodes, env: str | None) -> Plan:
        cfg = self.config
        self.setup_from_data(dataset)
        aug, final, terminal = with_final_steps(dataset)
        aug.rewards = self.scale_rewards(aug.rewards)
        mc = aug.returns_to_go(cfg.gamma)
        self.sampler = SegmentSampler(aug, cfg.context + cfg.n_step, seed=rank_seed(cfg.seed),
                                      extra=dict(final=final, terminal=terminal, mc=mc))
        self.target = copy.deepcopy(self.model).requires_grad_(False).eval()
        self.optimizer = adamw(self.model, cfg.lr, cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, warmup(cfg.warmup_steps))
        return Plan(steps, Optimiser([self.optimizer], self.scheduler, cfg.grad_clip),
                    dict(optimizer=self.optimizer, scheduler=self.scheduler, sampler=self.sampler, target=self.target),
                    per_rank=("sampler",), info=self._data_info(dataset, env))

    def collect(self, step: int) -> Collected:
        b = {k: torch.as_tensor(v, device=self.device) for k, v in self.sampler.sample(self.config.batch_size).items()}
        return Collected(1, [b])

    def loss(self, model: Callable, b: dict) -> tuple[Tensor, dict]:
        """TD error of the data's bins against the per-dimension targets, plus the conservative
        regulariser, plus (with a behaviour head) its cross-entropy."""
        cfg = self.config
        obs = b["obs"].float() if b["obs"].is_floating_point() else b["obs"]
        act = self._actions(b["act"])
        fields = dict(obs=obs, act=act, timestep=b["timestep"])
        q, logits = model(fields, b["episode_start"])
        with torch.no_grad(), precision(cfg, self.device):
            q_next, logits_next = self.target(fields, b["episode_start"])
        with torch.no_grad():
            allowed = self.model.in_support(None if logits_next is None else logits_next.float(), cfg.support)
            y, trainable = targets(q_next.float(), b["rew"].float(), b["final"], b["terminal"], b["mask"],
                                   b["mc"].float(), cfg.gamma, cfg.n_step, cfg.mc_lower_bound, allowed)
        bins = self.model.backbone.tokenizer.discretiser.encode(act)
        td, cons = td_and_conservative(q.float(), bins, y, trainable)
        loss = td + cfg.conservative_weight * cons
        metrics = {"td": td.detach(), "conservative": cons.detach()}
        if logits is not None:  # the behaviour head: cross-entropy on every step with an action
            acted = (b["mask"].bool() & ~b["final"].bool())[..., None].expand_as(bins)
            bc = nn.functional.cross_entropy(logits.float()[acted], bins[acted])
            loss, metrics["behaviour_nll"] = loss + bc, bc.detach()
        return loss, metrics

    def after_update(self) -> None:
        """The target network: an EMA of the online one."""
        with torch.no_grad():
            for pt, p in zip(self.target.parameters(), self.model.parameters()):
                pt.lerp_(p, self.config.tau)

    def default_acting(self) -> QTActing:
        cfg = self.config
        return QTActing(cfg.decode, cfg.temperature, cfg.support)

    def _act(self, obs, state: QTState | None, episode_start, rewards, deterministic, acting):
        n, d = obs.shape[0], self.model.dims
        tok, dev = self.model.backbone.tokenizer, self.device
        if state is None:
            if self.model.behaviour is None and (acting.decode == "soft" or acting.support > 0):
                raise ValueError(f"decode={acting.decode} support={acting.support} needs the behaviour head, which "
                                 "this model was not trained with: train it with decode=soft or support > 0")
            state = QTState(acting, t=np.zeros(n, np.int64), prev_action=torch.zeros(n, d, device=dev))
            episode_start = np.ones(n, bool)
        state.t = np.where(episode_start, 0, state.t + 1)
        t = torch.as_tensor(state.t, device=dev)
        last = tok.slot_index(f"act_dim{d - 1}")
        prev = tok.embed_slots(dict(act=state.prev_action, timestep=(t - 1).clamp(min=0)), [last])
        s_tok = tok.embed_slots(dict(obs=obs, timestep=t), [tok.slot_index("obs")])
        resets = torch.zeros(n, 2, dtype=torch.bool, device=dev)
        resets[:, 1] = torch.as_tensor(episode_start, device=dev)
        h, st = self.model.backbone.step_tokens(torch.cat([prev, s_tok], 1), state.backbone, resets)
        action = torch.zeros(n, d, device=dev)
        for i in range(d):  # one dimension at a time, each conditioned on the ones chosen before it
            action[:, i] = self._decode_dim(h[:, -1], i, deterministic, state.acting)
            if i < d - 1:
                a_tok = tok.embed_slots(dict(act=action, timestep=t), [tok.slot_index(f"act_dim{i}")])
                h, st = self.model.backbone.step_tokens(a_tok, st)
        state.backbone, state.prev_action = st, action
        if isinstance(self.action_space, gym.spaces.Discrete):
            return action[:, 0].round().long().cpu().numpy(), state
        return action.reshape(n, *self.action_space.shape).cpu().numpy(), state

    def _decode_dim(self, h: Tensor, i: int, deterministic: bool, cfg: QTActing) -> Tensor:
        """h [n, D] (the token before dimension i) -> dimension i's action [n]: greedy over the
        allowed bins, or ``soft``: the mean (or, not deterministic, a sample) of the bins under
        π_β(b)·exp(Q(b)/temperature)."""
        model = self.model
        centres = model.backbone.tokenizer.discretiser.centres(i)  # [n_bins]
        q = model.head(h, i)
        logits = None if model.behaviour is None else model.behaviour(h, i)
        allowed = model.in_support(logits, cfg.support)
        if cfg.decode == "greedy":
            return centres[(q if allowed is None else q.masked_fill(~allowed, -torch.inf)).argmax(-1)]
        score = torch.log_softmax(logits, -1) + q / cfg.temperature
        if allowed is not None:
            score = score.masked_fill(~allowed, -torch.inf)
        w = torch.softmax(score, -1)  # [n, n_bins]
        if deterministic:  # the mean bin; with Discrete actions (no mean action) the most likely
            return centres[w.argmax(-1)] if model.backbone.tokenizer.discretiser.discrete else w @ centres
        return centres[torch.multinomial(w, 1)[:, 0]]
