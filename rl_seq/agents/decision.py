"""Return-conditioned sequence policies: Decision Transformer (``dt``), Decision
ConvFormer (``dc``), Decision-S4 (``ds4``) and the xLSTM Large Recurrent Action Model
(``lram``) - one algorithm, four default backbones.

Tokens per step: ``(R_t, s_t, a_t)``; the action of step t is predicted from the s_t token
(it has seen R_0..R_t, s_0..s_t, a_0..a_{t-1}). Loss: MSE on continuous actions (tanh-scaled
to the action bounds), cross-entropy on discrete ones, averaged over real (unpadded) steps.

Acting feeds ``a_{t-1}, R_t, s_t`` through the backbone's step state (KV cache / recurrence),
never recomputing the window (``acting="cached"``); ``acting="window"`` recomputes the last K
steps each step as the original DT rollout does.

With attention, every layer attends over a sliding window of K steps (3K-1 tokens: s_t sees
R_{t-K+1} .. s_t), so the KV cache computes exactly what the model computes on the whole
history. By default training windows are K steps, the reference recipe; ``segment`` > K
trains the model in the cache's regime too (later positions attend to keys that themselves saw
context from before their own window, as the cache's keys do once t >= K; sliding-window
language models train that way); K-step windows stay the default because they ended at least
as high on hopper-medium.

The return-to-go starts at the target return and drops by each reward, which reaches
``predict`` as ``rewards=`` or through ``agent.wrap_env(env)`` (SB3 loops).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rl_seq.agents.base import Agent, adamw, warmup
from rl_seq.config import ConfigError, OfflineConfig, check_choice, check_range, eval_seed
from rl_seq.data import Episodes, SegmentSampler
from rl_seq.distributed import global_mean, rank_seed
from rl_seq.engine import Collected, Optimiser, Plan
from rl_seq.nets import Backbone, BackboneConfig, CategoricalHead, SquashedGaussianHead, TanhHead
from rl_seq.tokenizer import TrajectoryTokenizer


@dataclass
class DecisionConfig(OfflineConfig):
    """Return-conditioned sequence BC. Defaults: the reference Decision Transformer recipe."""

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    """The sequence model (``--backbone`` sets ``backbone.mixer``)."""
    context: int = 20
    """K: timesteps a prediction sees (attention: its sliding window in every layer; other
    mixers: the training window when ``segment`` is unset)."""
    segment: int | None = None
    """Timesteps per training window (>= K). None: K, the reference recipe; with attention, 2K
    makes the sliding window bind in training as it does in cached acting (module docstring)."""
    warmup_steps: int = 10_000
    """Linear learning-rate warm-up."""
    grad_clip: float = 0.25
    """Gradient-norm clip."""
    return_scale: float | None = None
    """Returns-to-go are divided by this (1000 in the D4RL recipe); None = the data's largest
    absolute episode return, so returns-to-go lie in [-1, 1]."""
    target_returns: list[float] | None = None
    """Returns to condition on when acting, first = the one used in training-time
    evaluations; None = the best episode return in the data."""
    acting: str = "cached"
    """The default acting mode (:class:`DecisionActing`): ``cached`` (step state, constant
    cost) or ``window`` (recompute the last K steps)."""
    short_episodes: str = "pad"
    """Episodes shorter than K: ``pad``, ``drop`` or ``error``."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice(self, "acting", ("cached", "window"))
        check_choice(self, "short_episodes", ("pad", "drop", "error"))
        check_range(self, "context", 1)
        check_range(self, "warmup_steps", 0)
        check_range(self, "grad_clip", 0, lo_open=True)
        check_range(self, "return_scale", 0, lo_open=True)
        if self.segment is not None and self.segment < self.context:
            raise ConfigError(f"segment must be >= context (K={self.context}) or null, got {self.segment}")

    @property
    def train_segment(self) -> int:
        """Timesteps per training window (``segment`` resolved)."""
        return self.context if self.segment is None else self.segment


class DecisionModel(nn.Module):
    """Tokenizer + backbone + action head. ``stochastic``: a squashed Gaussian policy (Online
    Decision Transformer) instead of the deterministic tanh head (continuous actions)."""

    def __init__(self, obs_space: gym.Space, act_space: gym.Space, cfg: DecisionConfig,
                 stochastic: bool = False) -> None:
        super().__init__()
        D = cfg.backbone.d_model
        tok = TrajectoryTokenizer(obs_space, act_space, D, "rtg,obs,act", cfg.max_timestep)
        bb = cfg.backbone
        if bb.mixer == "attention" and "window" not in bb.mixer_options:
            # s_t sees R_{t-K+1} .. s_t: what the last state of a K-step training window sees
            bb = dataclasses.replace(bb, mixer_options={**bb.mixer_options, "window": 3 * cfg.context - 1})
        self.backbone = Backbone(tok, bb)
        self.discrete = isinstance(act_space, gym.spaces.Discrete)
        if self.discrete:
            self.head = CategoricalHead(D, int(act_space.n))
        else:
            self.head = SquashedGaussianHead(D, act_space) if stochastic else TanhHead(D, act_space)
        self.register_buffer("return_scale", torch.ones(()))

    def fields(self, obs, act, rtg, timestep) -> dict:
        return dict(obs=obs, act=act, rtg=rtg / self.return_scale, timestep=timestep)

    def forward(self, fields: dict, episode_start: torch.Tensor) -> torch.Tensor:
        """fields [B,K,...] -> the backbone's outputs at the state tokens, [B,K,D] (what
        training compiles; the heads read them)."""
        return self.backbone.features(fields, episode_start, "obs")

    def action_outputs(self, h: torch.Tensor) -> torch.Tensor:
        """Features [..., D] -> the deterministic head's actions [..., d] (continuous, on the
        action bounds) or logits [..., n] (discrete)."""
        return self.head.net(h) if self.discrete else self.head(h)


@dataclass
class DecisionActing:
    """How a return-conditioned agent acts: given to ``predict`` / ``evaluate`` (or ``rl-seq
    eval --target-return / --acting``), held in the acting state; the model is not touched."""

    target_return: float | None
    """The return to condition on (default: the first of the agent's target returns)."""
    mode: str
    """``cached`` (the backbone's step state, constant cost per step) or ``window`` (recompute
    the last K steps, as the original DT rollout). Default: the config's ``acting``."""

    def __post_init__(self) -> None:
        check_choice(self, "mode", ("cached", "window"))


@dataclass
class DecisionState:
    """Acting context, one row per env."""

    acting: DecisionActing
    rtg: np.ndarray  # [n] return-to-go, raw units
    t: np.ndarray  # [n] step within the episode
    prev_action: torch.Tensor  # [n, *act_shape]
    backbone: tuple | None = None  # cached mode
    history: dict | None = None  # window mode: obs/act/rtg/timestep [n,K,...], valid [n,K]
    feed: object = None  # RewardFeed from wrap_env, if any


class DecisionAgent(Agent):
    algo = "dt"
    config_class = DecisionConfig
    stochastic = False  # the policy head: deterministic tanh, or a squashed Gaussian (odt)

    def _build(self) -> nn.Module:
        model = DecisionModel(self.model_observation_space, self.action_space, self.config, self.stochastic)
        if "return_scale" in self.meta:
            model.return_scale.fill_(self.meta["return_scale"])
        return model

    # -- data ---------------------------------------------------------------------------
    def setup_from_data(self, episodes: Episodes) -> None:
        """Observation statistics, return scale, target returns and reference scores."""
        cfg = self.config
        super().setup_from_data(episodes)
        returns = episodes.episode_returns()
        scale = cfg.return_scale or float(np.abs(returns).max()) or 1.0
        targets = cfg.target_returns or [float(returns.max())]
        self.meta.update(return_scale=scale, target_returns=[float(x) for x in targets],
                         target_return=float(targets[0]))
        self.model.return_scale.fill_(scale)

    # -- training (the engine's protocol) -----------------------------------------------------
    def prepare(self, steps: int, dataset: Episodes, env: str | None) -> Plan:
        cfg = self.config
        self.setup_from_data(dataset)
        self.sampler = SegmentSampler(dataset, cfg.train_segment, seed=rank_seed(cfg.seed),
                                      short_episodes=cfg.short_episodes, min_length=cfg.context)
        self.optimizer = adamw(self.model, cfg.lr, cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, warmup(cfg.warmup_steps))
        return Plan(steps, Optimiser([self.optimizer], self.scheduler, cfg.grad_clip),
                    dict(optimizer=self.optimizer, scheduler=self.scheduler, sampler=self.sampler),
                    per_rank=("sampler",), info=self._data_info(dataset, env))

    def collect(self, step: int) -> Collected:
        return Collected(1, [self.batch(self.sampler, self.config.batch_size)])

    def batch(self, sampler: SegmentSampler, batch_size: int) -> dict:
        """``batch_size`` windows from ``sampler`` (:meth:`SegmentSampler.sample`), on the
        device, with ``fields``: the model's inputs."""
        b = {k: torch.as_tensor(v, device=self.device) for k, v in sampler.sample(batch_size).items()}
        obs = b["obs"].float() if b["obs"].is_floating_point() else b["obs"]
        return dict(b, fields=self.model.fields(obs, b["act"], b["rtg"], b["timestep"]))

    def loss(self, model: Callable, b: dict) -> tuple[torch.Tensor, dict]:
        """Mean squared error of the tanh-scaled actions (cross-entropy on discrete ones) over the
        real (unpadded) steps of every rank."""
        pred = self.model.action_outputs(model(b["fields"], b["episode_start"]).float())
        mask = b["mask"].float()
        if self.model.discrete:
            per_step = F.cross_entropy(pred.transpose(1, 2), b["act"].long(), reduction="none")
        else:
            per_step = ((pred - b["act"].float()) ** 2).mean(-1)
        return global_mean((per_step * mask).sum(), mask.sum()), {}

    def final_evaluations(self) -> dict:
        """The evaluations at the config's other target returns (``other_targets``)."""
        cfg = self.config
        return {"other_targets": {str(tr): self.evaluate(episodes=cfg.eval_episodes, seed=eval_seed(cfg.seed),
                                                         target_return=tr).to_dict()
                                  for tr in self.meta.get("target_returns", [])[1:]}}

    # -- acting -----------------------------------------------------------------------------
    def default_acting(self) -> DecisionActing:
        return DecisionActing(self.meta.get("target_return"), self.config.acting)

    def _act(self, obs, state: DecisionState | None, episode_start, rewards, deterministic, acting):
        n = obs.shape[0]
        if state is None:
            if acting.target_return is None:
                raise RuntimeError("the agent has no target return yet: train it (learn), load a trained one or "
                                   "pass acting={'target_return': R}")
            act0 = torch.zeros((n, *self.action_space.shape), device=self.device,
                               dtype=torch.long if self.model.discrete else torch.float32)
            state = DecisionState(acting, rtg=np.full(n, acting.target_return, np.float64), t=np.zeros(n, np.int64),
                                  prev_action=act0, feed=self.reward_feed)
            episode_start = np.ones(n, bool)
        target = state.acting.target_return
        if rewards is None and state.feed is not None:
            rewards = state.feed.pop()
        cont = ~episode_start
        if cont.any():
            if rewards is None:
                raise ValueError(
                    "a return-conditioned agent needs the rewards of the previous step: pass "
                    "predict(..., rewards=r), or in SB3 loops (evaluate_policy) wrap the env "
                    "first: env = agent.wrap_env(env)")
            state.rtg = np.where(cont, state.rtg - rewards, target)
            state.t = np.where(cont, state.t + 1, 0)
        else:
            state.rtg[:], state.t[:] = target, 0
        if state.acting.mode == "window":
            h = self._window_features(obs, state, episode_start)
        else:
            h = self._cached_features(obs, state, episode_start)
        if self.model.discrete:
            logits = self.model.head.net(h)
            action = logits.argmax(-1) if deterministic else torch.distributions.Categorical(logits=logits).sample()
        else:
            action = self.model.head.act(h, deterministic)
        state.prev_action = action
        return action.cpu().numpy(), state

    def _step_fields(self, state):
        dev = self.device
        rtg = torch.as_tensor(state.rtg, dtype=torch.float32, device=dev)
        t = torch.as_tensor(state.t, device=dev)
        return rtg, t

    def _cached_features(self, obs, state: DecisionState, episode_start) -> torch.Tensor:
        """Feed a_{t-1}, R_t, s_t; the reset flag sits on R_t of a new episode."""
        tok = self.model.backbone.tokenizer
        rtg, t = self._step_fields(state)
        fields = self.model.fields(obs, state.prev_action, rtg, t)
        a_tok = tok.embed_slots({**fields, "timestep": (t - 1).clamp(min=0)}, [tok.slot_index("act")])
        rs_tok = tok.embed_slots(fields, [tok.slot_index("rtg"), tok.slot_index("obs")])
        resets = torch.zeros(obs.shape[0], 3, dtype=torch.bool, device=self.device)
        resets[:, 1] = torch.as_tensor(episode_start, device=self.device)
        h, state.backbone = self.model.backbone.step_tokens(torch.cat([a_tok, rs_tok], 1),
                                                            state.backbone, resets)
        return h[:, 2]

    def _window_features(self, obs, state: DecisionState, episode_start) -> torch.Tensor:
        """Recompute the last K steps (the original DT rollout)."""
        K, n = self.config.context, obs.shape[0]
        rtg, t = self._step_fields(state)
        hist = state.history
        if hist is None:
            hist = dict(obs=obs.new_zeros((n, K, *obs.shape[1:])),
                        act=state.prev_action.new_zeros((n, K, *state.prev_action.shape[1:])),
                        rtg=rtg.new_zeros(n, K), timestep=t.new_zeros(n, K),
                        valid=torch.zeros(n, K, dtype=torch.bool, device=self.device))
        start = torch.as_tensor(episode_start, device=self.device)
        hist["act"][:, -1] = state.prev_action  # the action taken after the newest step
        hist["valid"] = hist["valid"] & ~start[:, None]
        for k, v in (("obs", obs), ("act", torch.zeros_like(state.prev_action)), ("rtg", rtg),
                     ("timestep", t), ("valid", torch.ones_like(start))):
            hist[k] = torch.cat([hist[k][:, 1:], v[:, None]], 1)
        state.history = hist
        valid = hist["valid"]
        first = valid & ~torch.cat([torch.zeros_like(valid[:, :1]), valid[:, :-1]], 1)
        fields = self.model.fields(hist["obs"], hist["act"], hist["rtg"], hist["timestep"])
        h, _ = self.model.backbone(fields, None, first)
        return self.model.backbone.tokenizer.read(h, "obs")[:, -1]
