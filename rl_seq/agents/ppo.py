"""Recurrent PPO on any backbone: GTrXL (``gtrxl``), recurrent linear transformers
(``relit``: GaLiTe / AGaLiTe), LSTM (``lstm``), and S4D, mLSTM or no memory via --backbone.

One token per step, ``obs + prev_act + prev_rew`` by default. Gymnasium vector envs with
the default NEXT_STEP autoreset: the step after an episode ends feeds the final observation,
its action is ignored and the env returns the next episode's first observation - that dummy
step is masked out of every loss, and its value (the final observation under the pre-reset
state) is exactly the bootstrap a truncated episode needs. The recurrent state resets at the
first observation of each episode, inside ``forward``/``step`` (``episode_start``).

Training runs minibatches of whole sequences (length ``seq_len``) through the backbone's
parallel ``forward`` from their stored start states (or recomputed ones), never a Python loop
over time steps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn

from rl_seq.agents.base import Agent, fused
from rl_seq.agents.rollout import Carry, Rollout, RunningMeanStd, collect_rollout, tree_index, tree_stack
from rl_seq.config import ConfigError, TrainConfig, check_choice, check_range
from rl_seq.data.episodes import COMPOSITE, flatten_observations
from rl_seq.engine import Collected, Optimiser, Plan
from rl_seq.nets import Backbone, BackboneConfig, CategoricalHead, GaussianHead, ValueHead
from rl_seq.tokenizer import TrajectoryTokenizer


@dataclass
class PPOConfig(TrainConfig):
    """Recurrent PPO. The update is sb3-contrib RecurrentPPO's (10 epochs of 128-step
    minibatches, a critic with its own memory: with one memory the value loss also trains the
    features the policy reads); rollouts, clipping, GAE and the optimiser are CleanRL's / SB3's."""

    legacy_defaults = {"critic": "shared"}

    amp: str = "off"
    """Mixed precision of the update's forward (``bf16``, ``off``, ``auto``: see TrainConfig).
    PPO defaults to float32: its rollout-sized matmuls gain nothing from bf16 on a CPU, and its
    recipes were measured in float32."""
    backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig(mixer="lstm", d_model=128,
                                                                              n_layers=1, dropout=0.0))
    """The memory (``--backbone`` sets ``backbone.mixer``; ``none`` = memoryless)."""
    env_kwargs: dict = field(default_factory=dict)
    """Keyword arguments for ``gym.make`` (e.g. ``{corridor_length: 50}``)."""
    layout: str = "obs+prev_act+prev_rew"
    """Token layout: one token per step."""
    max_timestep: int = 0
    """Add an embedding of the step within the episode (absolute position, clamped here) to
    each token, as the Decision Transformer does; 0 = off. It gives position-free memories
    (relit, mlstm) the absolute step."""
    n_envs: int = 8
    """Parallel environments."""
    vectorization: str = "sync"
    """``sync`` or ``async`` (subprocess) vector env."""
    n_steps: int = 128
    """Rollout length per env per update."""
    seq_len: int = 32
    """Truncated-BPTT length: training sequences (divides n_steps)."""
    start_states: str = "stored"
    """Sequence start states: ``stored`` (from the rollout) or ``recomputed`` (by the
    current network, once per update)."""
    n_epochs: int = 10
    """Passes over each rollout."""
    n_minibatches: int = 8
    """Minibatches per epoch (of whole sequences): 8 of the default 8 × 128-step rollout are
    sb3-contrib's batches of 128 steps."""
    lr: float = 3e-4
    """Adam learning rate."""
    anneal_lr: bool = True
    """Linearly anneal the learning rate to 0."""
    gamma: float = 0.99
    """Discount."""
    gae_lambda: float = 0.95
    """GAE λ."""
    clip_coef: float = 0.2
    """PPO ratio clip."""
    clip_vloss: bool = False
    """Clip the value loss around the old values."""
    vf_coef: float = 0.5
    """Value-loss weight."""
    ent_coef: float = 0.01
    """Entropy bonus weight."""
    max_grad_norm: float = 0.5
    """Gradient-norm clip."""
    norm_adv: bool = True
    """Normalise advantages per minibatch."""
    norm_obs: bool = False
    """Normalise observations by running statistics (Box observations)."""
    norm_reward: bool = False
    """Scale rewards by the running std of the discounted return."""
    target_kl: float | None = None
    """Stop an update's epochs early above this approximate KL."""
    log_std_init: float = 0.0
    """Initial log-std of Gaussian policies."""
    critic: str = "separate"
    """The critic's memory: ``separate`` (its own blocks on the policy's token embedding, as
    sb3-contrib's default ``enable_critic_lstm``; twice the backbone compute) or ``shared``
    (the value head reads the policy's features)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("n_envs", "n_steps", "seq_len", "n_epochs"):
            check_range(self, name, 1)
        check_range(self, "max_timestep", 0)
        check_range(self, "lr", 0, lo_open=True)
        check_range(self, "gamma", 0, 1, lo_open=True)
        check_range(self, "gae_lambda", 0, 1)
        for name in ("clip_coef", "max_grad_norm", "target_kl"):
            check_range(self, name, 0, lo_open=True)
        check_range(self, "vf_coef", 0)
        check_range(self, "ent_coef", 0)
        check_choice(self, "start_states", ("stored", "recomputed"))
        check_choice(self, "vectorization", ("sync", "async"))
        check_choice(self, "critic", ("shared", "separate"))
        if self.n_steps % self.seq_len:
            raise ConfigError(f"seq_len={self.seq_len} must divide n_steps={self.n_steps}")
        n_seq = self.n_envs * self.n_steps // self.seq_len
        if self.n_minibatches < 1 or n_seq % self.n_minibatches:
            fits = [d for d in range(1, n_seq + 1) if n_seq % d == 0]
            raise ConfigError(
                f"n_minibatches={self.n_minibatches} must divide the rollout's {n_seq} sequences "
                f"(n_envs·n_steps/seq_len = {self.n_envs}·{self.n_steps}/{self.seq_len}): "
                f"--set n_minibatches={max(d for d in fits if d <= max(1, self.n_minibatches))} "
                f"(any of {', '.join(map(str, fits))}), or change n_envs/n_steps/seq_len")
        if "," in self.layout:
            raise ConfigError("PPO uses one token per step: join fields with '+', not ','")


class PPOModel(nn.Module):
    def __init__(self, obs_space: gym.Space, act_space: gym.Space, cfg: PPOConfig) -> None:
        super().__init__()
        D = cfg.backbone.d_model
        if not isinstance(act_space, gym.spaces.Discrete | gym.spaces.Box):
            raise TypeError(f"PPO acts in Discrete or Box action spaces, got {act_space}; flatten a "
                            "MultiDiscrete/MultiBinary space to Discrete (or wrap the env) first")
        tok = TrajectoryTokenizer(obs_space, act_space, D, cfg.layout, cfg.max_timestep or None)
        self.backbone = Backbone(tok, cfg.backbone)
        self.critic_backbone = Backbone(None, cfg.backbone) if cfg.critic == "separate" else None
        self.discrete = isinstance(act_space, gym.spaces.Discrete)
        self.actor = (CategoricalHead(D, int(act_space.n)) if self.discrete
                      else GaussianHead(D, int(np.prod(act_space.shape)), cfg.log_std_init))
        self.critic = ValueHead(D)

    # The training state is (policy memory, critic memory); the critic's is () when shared.
    def init_state(self, n: int, device=None) -> tuple:
        cb = self.critic_backbone
        return self.backbone.init_state(n, device), (() if cb is None else cb.init_state(n, device))

    def step(self, tok: Tensor, state: tuple, start: Tensor) -> tuple[Tensor, Tensor, tuple]:
        """One step's token [N, 1, D] -> policy and critic features [N, D] and the new state."""
        h, s = self.backbone.step_tokens(tok, state[0], start)
        if self.critic_backbone is None:
            return h[:, 0], h[:, 0], (s, ())
        hv, sv = self.critic_backbone.step_tokens(tok, state[1], start)
        return h[:, 0], hv[:, 0], (s, sv)

    def forward(self, fields: dict, state: tuple, start: Tensor) -> tuple[Tensor, Tensor, tuple]:
        """Fields [B, L, ...] from ``state`` -> policy and critic features [B, L, D], new state
        (the training pass; acting and rollouts take one step at a time, :meth:`step`)."""
        if self.critic_backbone is None:
            h, s = self.backbone(fields, state[0], start)
            return h, h, (s, ())
        x, resets = self.backbone.embed(fields, start)  # one embedding, two memories
        h, s = self.backbone.forward_tokens(x, state[0], resets)
        hv, sv = self.critic_backbone.forward_tokens(x, state[1], resets)
        return h, hv, (s, sv)

    def heads(self, h: Tensor, action: Tensor | None = None, h_value: Tensor | None = None):
        """Policy features h [..., D] (and the critic's, default h) -> action, log-prob,
        entropy, value (CleanRL's get_action_and_value)."""
        dist = self.actor(h)
        if action is None:
            action = dist.sample()
        logp, ent = dist.log_prob(action), dist.entropy()
        if not self.discrete:
            logp, ent = logp.sum(-1), ent.sum(-1)
        return action, logp, ent, self.critic(h if h_value is None else h_value)


@dataclass
class PPOState:
    backbone: tuple
    prev_act: Tensor
    prev_rew: Tensor
    t: Tensor  # [n] step within the episode
    feed: object = None


def gae(rewards, values, next_value, term, trunc, gamma: float, lam: float):
    """Generalised advantage estimation over [T, N] arrays. ``values[t+1]`` (or
    ``next_value``) is the value of the observation after step t - after a truncation that is
    the final observation, so truncated episodes bootstrap; after a termination it is
    ignored. Advantages do not flow across episode ends."""
    T = rewards.shape[0]
    adv = torch.zeros_like(rewards)
    last = torch.zeros_like(next_value)
    for t in reversed(range(T)):
        nv = next_value if t == T - 1 else values[t + 1]
        delta = rewards[t] + gamma * nv * (1 - term[t]) - values[t]
        last = delta + gamma * lam * (1 - torch.maximum(term[t], trunc[t])) * last
        adv[t] = last
    return adv


class PPOAgent(Agent):
    algo = "lstm"
    config_class = PPOConfig
    online = True
    data_parallel = False
    progress_metrics = ("episode_return", "success_rate", "sps")
    obs_rms: RunningMeanStd | None = None  # running statistics (norm_obs / norm_reward), set by prepare
    ret_rms: RunningMeanStd | None = None

    def _build(self) -> nn.Module:
        return PPOModel(self.model_observation_space, self.action_space, self.config)

    # -- acting (shared by rollouts, evaluate and SB3 loops) -------------------------------
    def _fields(self, obs: Tensor, prev_act: Tensor, prev_rew: Tensor, timestep: Tensor) -> dict:
        return dict(obs=obs, prev_act=prev_act, prev_rew=prev_rew, timestep=timestep)

    def _step_token(self, obs: Tensor, prev_act: Tensor, prev_rew: Tensor, t: Tensor, start: Tensor):
        """One step's token [N, 1, D] for acting and rollouts alike: the previous action,
        reward and the episode step are zero at episode starts (``start`` bool [N]).
        Returns the token and the masked (prev_act, prev_rew, t)."""
        keep = ~start
        pa = torch.where(keep.view(-1, *[1] * (prev_act.dim() - 1)), prev_act, torch.zeros_like(prev_act))
        pr, t = prev_rew * keep, t * keep
        return self.model.backbone.tokenizer.embed_slots(self._fields(obs, pa, pr, t), [0]), pa, pr, t

    def _act(self, obs, state: PPOState | None, episode_start, rewards, deterministic, acting):
        n, dev = obs.shape[0], self.device
        start = torch.as_tensor(episode_start, device=dev)
        if state is None:
            state = PPOState(self.model.backbone.init_state(n, dev), self.zero_actions(n),
                             torch.zeros(n, device=dev), torch.zeros(n, dtype=torch.long, device=dev),
                             self.reward_feed)
            start = torch.ones(n, dtype=torch.bool, device=dev)
        if rewards is None and state.feed is not None:
            rewards = state.feed.pop()
        if "prev_rew" in self.config.layout and (~start).any():
            if rewards is None:
                raise ValueError("this policy reads the previous reward: pass predict(..., rewards=r), or in "
                                 "SB3 loops wrap the env first: env = agent.wrap_env(env)")
            state.prev_rew = torch.as_tensor(rewards, dtype=torch.float32, device=dev)
        tok, _, _, t = self._step_token(obs, state.prev_act, state.prev_rew, state.t, start)
        state.t = t + 1
        h, state.backbone = self.model.backbone.step_tokens(tok, state.backbone, start)
        dist = self.model.actor(h[:, 0])
        if deterministic:
            action = dist.probs.argmax(-1) if self.model.discrete else dist.mean
        else:
            action = dist.sample()
        state.prev_act = action
        return self.env_action(action), state

    def zero_actions(self, n: int) -> Tensor:
        if self.model.discrete:
            return torch.zeros(n, dtype=torch.long, device=self.device)
        return torch.zeros(n, *self.action_space.shape, device=self.device)

    def env_action(self, action: Tensor) -> np.ndarray:
        a = action.cpu().numpy()
        if not self.model.discrete:
            a = np.clip(a, self.action_space.low, self.action_space.high)
        return a

    # -- training (the engine's protocol) -----------------------------------------------------
    def make_train_env(self, env_id: str) -> gym.vector.VectorEnv:
        cfg = self.config
        env = gym.make_vec(env_id, num_envs=cfg.n_envs, vectorization_mode=cfg.vectorization, **cfg.env_kwargs)
        self.check_env(env.single_observation_space, env.single_action_space, env_id)
        if isinstance(env.single_observation_space, COMPOSITE):  # rollouts hold the flat observations
            space = env.single_observation_space
            env = gym.wrappers.vector.TransformObservation(
                env, lambda obs: flatten_observations(space, obs), single_observation_space=self.observation_space)
        return env

    def start_carry(self, venv: gym.vector.VectorEnv, seed: int) -> Carry:
        N = venv.num_envs
        obs, _ = venv.reset(seed=[seed + i for i in range(N)])
        return Carry(obs=obs, state=self.model.init_state(N, self.device), prev_act=self.zero_actions(N),
                     prev_rew=torch.zeros(N, device=self.device),
                     start=torch.ones(N, dtype=torch.bool, device=self.device), dummy=np.zeros(N, bool),
                     ep_ret=np.zeros(N), ep_len=np.zeros(N, int), ret_acc=np.zeros(N))

    def token(self, c: Carry) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """The step's token from the carry, with its observation and masked inputs."""
        o = torch.as_tensor(c.obs, device=self.device)
        o = o.float() if self.model.backbone.tokenizer.box_observations else o
        t = torch.as_tensor(c.ep_len, device=self.device)  # steps already taken in this episode
        tok, pa, pr, t = self._step_token(o, c.prev_act, c.prev_rew, t, c.start)
        return tok, o, pa, pr, t

    def rollout(self, venv: gym.vector.VectorEnv, c: Carry, T: int, L: int) -> Rollout:
        """``T`` steps of every env from ``c`` (updated in place), states stored every ``L``."""
        return collect_rollout(self, venv, c, T, L, self.obs_rms, self.ret_rms)

    def prepare(self, steps: int, dataset: None, env: str) -> Plan:
        """Each iteration collects ``n_steps`` in each of ``n_envs`` envs, then takes
        ``n_epochs`` passes of minibatches over the rollout's sequences."""
        cfg = self.config
        self.meta.update(env_id=env, env_kwargs=cfg.env_kwargs)
        self.train_env = self.make_train_env(env)
        self.n_updates = max(1, steps // (cfg.n_envs * cfg.n_steps)) if steps > 0 else 0  # whole rollouts
        self.optimizer = fused(torch.optim.Adam, self.model.parameters(), lr=cfg.lr, eps=1e-5)
        self.obs_rms = RunningMeanStd(self.observation_space.shape) if cfg.norm_obs else None
        self.ret_rms = RunningMeanStd() if cfg.norm_reward else None
        self.carry = None  # the envs (re)start at the first iteration, also after a resume
        self.approx_kl = 0.0
        state = dict(optimizer=self.optimizer, **{k: r for k, r in (("obs_rms", self.obs_rms),
                                                                     ("ret_rms", self.ret_rms)) if r is not None})
        return Plan(self.n_updates * cfg.n_envs * cfg.n_steps, Optimiser([self.optimizer], clip=cfg.max_grad_norm),
                    state, info=dict(env=env))

    def collect(self, step: int) -> Collected:
        """A rollout, its advantages and returns (GAE), and its minibatches of whole sequences."""
        cfg, (N, T, L) = self.config, (self.config.n_envs, self.config.n_steps, self.config.seq_len)
        update = step // (N * T) + 1
        if self.carry is None:
            self.carry = self.start_carry(self.train_env, cfg.seed + 1000 * (update - 1))
        if cfg.anneal_lr:
            self.optimizer.param_groups[0]["lr"] = cfg.lr * (1 - (update - 1) / self.n_updates)
        if self.obs_rms is not None:  # Box parts only (a no-op for images)
            self.set_observation_stats(self.obs_rms.mean, np.sqrt(self.obs_rms.var))
        ro = self.rollout(self.train_env, self.carry, T, L)
        adv = gae(ro.rew, ro.val, ro.next_value, ro.term, ro.trunc, cfg.gamma, cfg.gae_lambda)
        ret = adv + ro.val

        def seqs(x: Tensor) -> Tensor:  # [T, N, ...] -> [S = (T/L)·N, L, ...]
            return x.view(T // L, L, N, *x.shape[2:]).transpose(1, 2).reshape(T // L * N, L, *x.shape[2:])

        b = {k: seqs(getattr(ro, k)) for k in ("obs", "prev_act", "prev_rew", "timestep", "start", "act", "logp",
                                               "val", "valid")}
        b.update(adv=seqs(adv), ret=seqs(ret))
        stored = ro.stored
        if cfg.start_states == "recomputed":  # the current network's states at each sequence start
            stored, s = [], ro.init_state
            with torch.no_grad():
                for k in range(T // L):
                    stored.append(s)
                    rows = slice(k * N, (k + 1) * N)
                    *_, s = self.model(self._fields(b["obs"][rows], b["prev_act"][rows], b["prev_rew"][rows],
                                                    b["timestep"][rows]), s, b["start"][rows])
        b["state"] = tree_stack(stored)
        self.model.train()
        return Collected(N * T, self.minibatches(b), rollout_metrics(ro, ret))

    def minibatches(self, b: dict):
        """``n_epochs`` passes over the rollout's sequences in ``n_minibatches`` random
        minibatches; an epoch ends the update early when its approximate KL passes ``target_kl``."""
        cfg = self.config
        S = b["obs"].shape[0]
        size = S // cfg.n_minibatches
        for _epoch in range(cfg.n_epochs):
            perm = torch.randperm(S, device=self.device)
            for k in range(cfg.n_minibatches):
                idx = perm[k * size:(k + 1) * size]
                yield {key: (tree_index(v, idx) if key == "state" else v[idx]) for key, v in b.items()}
            if cfg.target_kl is not None and self.approx_kl > cfg.target_kl:
                return

    def loss(self, model: Callable, mb: dict) -> tuple[Tensor, dict]:
        """PPO's clipped surrogate, value loss and entropy bonus over the minibatch's real steps."""
        cfg = self.config
        h, hv, _ = model(self._fields(mb["obs"], mb["prev_act"], mb["prev_rew"], mb["timestep"]), mb["state"],
                         mb["start"])
        _, logp, ent, value = self.model.heads(h.float(), mb["act"], hv.float())
        m = mb["valid"].float()
        msum = m.sum().clamp_min(1)
        a = mb["adv"]
        if cfg.norm_adv:
            mean = (a * m).sum() / msum
            a = (a - mean) / ((((a - mean) ** 2 * m).sum() / msum).sqrt() + 1e-8)
        ratio = (logp - mb["logp"]).exp()
        pg = torch.maximum(-a * ratio, -a * ratio.clamp(1 - cfg.clip_coef, 1 + cfg.clip_coef))
        pg_loss = (pg * m).sum() / msum
        v = (value - mb["ret"]) ** 2
        if cfg.clip_vloss:
            v_clip = mb["val"] + (value - mb["val"]).clamp(-cfg.clip_coef, cfg.clip_coef)
            v = torch.maximum(v, (v_clip - mb["ret"]) ** 2)
        v_loss = 0.5 * (v * m).sum() / msum
        ent_loss = (ent * m).sum() / msum
        with torch.no_grad():
            logr = logp - mb["logp"]
            approx_kl = (((logr.exp() - 1) - logr) * m).sum() / msum
            clipfrac = (((ratio - 1).abs() > cfg.clip_coef).float() * m).sum() / msum
        if cfg.target_kl is not None:
            self.approx_kl = approx_kl.item()
        return pg_loss - cfg.ent_coef * ent_loss + cfg.vf_coef * v_loss, dict(
            pg_loss=pg_loss.detach(), v_loss=v_loss.detach(), entropy=ent_loss.detach(), approx_kl=approx_kl,
            clipfrac=clipfrac)


def rollout_metrics(ro: Rollout, ret: Tensor) -> dict:
    """The critic's explained variance and the finished episodes' return, length and success."""
    out = {}
    y, p = ret[ro.valid], ro.val[ro.valid]
    if y.numel() > 1 and y.var() > 0:
        out["explained_variance"] = float(1 - (y - p).var() / y.var())
    if ro.finished:
        out["episode_return"] = float(np.mean([f[0] for f in ro.finished]))
        out["episode_length"] = float(np.mean([f[1] for f in ro.finished]))
        succ = [f[2] for f in ro.finished if f[2] is not None]
        if succ:
            out["success_rate"] = float(np.mean(succ))
    return out
