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

import time
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn

from rl_seq.agents.base import Agent, fused
from rl_seq.config import ConfigError, TrainConfig
from rl_seq.engine import Work
from rl_seq.nets import Backbone, BackboneConfig, CategoricalHead, GaussianHead, ValueHead
from rl_seq.tokenizer import TrajectoryTokenizer


@dataclass
class PPOConfig(TrainConfig):
    """Recurrent PPO. The update is sb3-contrib RecurrentPPO's (10 epochs of 128-step
    minibatches, a critic with its own memory: the settings that mattered in the search in
    docs/results.md); rollouts, clipping, GAE and the optimiser are CleanRL's / SB3's."""

    legacy_defaults = {"critic": "shared"}

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
    (relit, mlstm) the absolute step; it did not make relit learn RepeatPrevious (docs/results.md)."""
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
        if self.start_states not in ("stored", "recomputed"):
            raise ConfigError(f"start_states must be stored or recomputed, got {self.start_states!r}")
        if self.vectorization not in ("sync", "async"):
            raise ConfigError(f"vectorization must be sync or async, got {self.vectorization!r}")
        if self.critic not in ("shared", "separate"):
            raise ConfigError(f"critic must be shared or separate, got {self.critic!r}")
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

    def sequence(self, fields: dict, state: tuple, start: Tensor) -> tuple[Tensor, Tensor, tuple]:
        """Fields [B, L, ...] from ``state`` -> policy and critic features [B, L, D], new state."""
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
class PPOState:
    backbone: tuple
    prev_act: Tensor
    prev_rew: Tensor
    t: Tensor  # [n] step within the episode
    feed: object = None


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

    def _build(self) -> nn.Module:
        return PPOModel(self.observation_space, self.action_space, self.config)

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

    def _act(self, obs, state: PPOState | None, episode_start, rewards, deterministic):
        n, dev = obs.shape[0], self.device
        start = torch.as_tensor(episode_start, device=dev)
        if state is None:
            state = PPOState(self.model.backbone.init_state(n, dev), self._zero_actions(n),
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
        return self._env_action(action), state

    def _zero_actions(self, n: int) -> Tensor:
        if self.model.discrete:
            return torch.zeros(n, dtype=torch.long, device=self.device)
        return torch.zeros(n, *self.action_space.shape, device=self.device)

    def _env_action(self, action: Tensor) -> np.ndarray:
        a = action.cpu().numpy()
        if not self.model.discrete:
            a = np.clip(a, self.action_space.low, self.action_space.high)
        return a

    # -- training ---------------------------------------------------------------------------
    def make_train_env(self, env_id: str) -> gym.vector.VectorEnv:
        cfg = self.config
        env = gym.make_vec(env_id, num_envs=cfg.n_envs, vectorization_mode=cfg.vectorization, **cfg.env_kwargs)
        self.check_env(env.single_observation_space, env.single_action_space, env_id)
        return env

    def _obs_tensor(self, obs) -> Tensor:
        o = torch.as_tensor(obs, device=self.device)
        return o.float() if self.model.backbone.tokenizer.box_observations else o

    def start_carry(self, venv: gym.vector.VectorEnv, seed: int) -> Carry:
        N = venv.num_envs
        obs, _ = venv.reset(seed=[seed + i for i in range(N)])
        return Carry(obs=obs, state=self.model.init_state(N, self.device), prev_act=self._zero_actions(N),
                     prev_rew=torch.zeros(N, device=self.device),
                     start=torch.ones(N, dtype=torch.bool, device=self.device), dummy=np.zeros(N, bool),
                     ep_ret=np.zeros(N), ep_len=np.zeros(N, int), ret_acc=np.zeros(N))

    def _token(self, c: Carry) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """The step's token from the carry, with its observation and masked inputs."""
        o = self._obs_tensor(c.obs)
        t = torch.as_tensor(c.ep_len, device=self.device)  # steps already taken in this episode
        tok, pa, pr, t = self._step_token(o, c.prev_act, c.prev_rew, t, c.start)
        return tok, o, pa, pr, t

    @torch.no_grad()
    def collect(self, venv: gym.vector.VectorEnv, c: Carry, T: int, L: int,
                obs_rms: RunningMeanStd | None = None, ret_rms: RunningMeanStd | None = None) -> Rollout:
        """T steps of every env. Under NEXT_STEP autoreset the step after an episode's end
        feeds its final observation ("dummy": valid=False, action ignored by the env, reward
        0); the observation after it starts the next episode (start=True, state reset)."""
        cfg, model, N = self.config, self.model, venv.num_envs
        model.eval()
        ro = Rollout.empty(T, N, self.observation_space.shape, self._zero_actions(N), self.device)
        ro.init_state = c.state
        for t in range(T):
            if t % L == 0:
                ro.stored.append(c.state)
            tok, o, pa, pr, ts = self._token(c)
            ro.obs[t], ro.prev_act[t], ro.prev_rew[t], ro.timestep[t], ro.start[t] = o, pa, pr, ts, c.start
            ro.valid[t] = torch.as_tensor(~c.dummy, device=self.device)
            h, hv, c.state = model.step(tok, c.state, c.start)
            action, logp, _, value = model.heads(h, h_value=hv)
            ro.act[t], ro.logp[t], ro.val[t] = action, logp, value
            c.obs, reward, term, trunc, info = venv.step(self._env_action(action))
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
            ro.rew[t] = torch.as_tensor(r * live, dtype=torch.float32, device=self.device)
            ro.term[t] = torch.as_tensor(term & live, dtype=torch.float32, device=self.device)
            ro.trunc[t] = torch.as_tensor(trunc & live, dtype=torch.float32, device=self.device)
            c.prev_act, c.prev_rew = action, torch.as_tensor(reward, dtype=torch.float32, device=self.device)
            c.start = torch.as_tensor(c.dummy, device=self.device)  # after a dummy step: a new episode
            c.dummy = (term | trunc) & live
        tok, *_ = self._token(c)
        _, hv, _ = model.step(tok, c.state, c.start)
        ro.next_value = model.critic(hv)  # a final observation's value if an episode just ended
        return ro

    def _work(self, steps: int, dataset: None, env: str) -> Work:
        """Collect ``n_steps`` in each of ``n_envs`` envs, then ``n_epochs`` passes of PPO
        over the rollout's sequences: one engine iteration, ``n_envs * n_steps`` env steps."""
        cfg, dev, model = self.config, self.device, self.model
        self.meta.update(env_id=env, env_kwargs=cfg.env_kwargs)
        venv = self.make_train_env(env)
        N, T, L = cfg.n_envs, cfg.n_steps, cfg.seq_len
        n_updates = max(1, steps // (N * T))
        opt = fused(torch.optim.Adam, model.parameters(), lr=cfg.lr, eps=1e-5)
        obs_rms = RunningMeanStd(self.observation_space.shape) if cfg.norm_obs else None
        ret_rms = RunningMeanStd() if cfg.norm_reward else None
        tok = model.backbone.tokenizer
        carry, t_start, step0 = None, 0.0, 0

        def iterate(step: int) -> tuple[int, dict]:
            nonlocal carry, t_start, step0
            update = step // (N * T) + 1
            if carry is None:  # the first iteration, also after a resume: the envs start afresh
                carry, t_start, step0 = self.start_carry(venv, cfg.seed + 1000 * (update - 1)), time.time(), step
            if cfg.anneal_lr:
                opt.param_groups[0]["lr"] = cfg.lr * (1 - (update - 1) / n_updates)
            if obs_rms is not None and tok.box_observations:
                tok.set_observation_stats(obs_rms.mean, np.sqrt(obs_rms.var))
            ro = self.collect(venv, carry, T, L, obs_rms, ret_rms)
            adv = gae(ro.rew, ro.val, ro.next_value, ro.term, ro.trunc, cfg.gamma, cfg.gae_lambda)
            ret = adv + ro.val

            def seqs(x: Tensor) -> Tensor:  # [T, N, ...] -> [S = (T/L)·N, L, ...]
                return x.view(T // L, L, N, *x.shape[2:]).transpose(1, 2).reshape(T // L * N, L, *x.shape[2:])

            b_obs, b_pa, b_pr, b_start = seqs(ro.obs), seqs(ro.prev_act), seqs(ro.prev_rew), seqs(ro.start)
            b_ts = seqs(ro.timestep)
            b_act, b_logp, b_val = seqs(ro.act), seqs(ro.logp), seqs(ro.val)
            b_adv, b_ret, b_valid = seqs(adv), seqs(ret), seqs(ro.valid)
            stored = ro.stored
            if cfg.start_states == "recomputed":
                stored, s = [], ro.init_state
                with torch.no_grad():
                    for k in range(T // L):
                        stored.append(s)
                        rows = slice(k * N, (k + 1) * N)
                        *_, s = model.sequence(self._fields(b_obs[rows], b_pa[rows], b_pr[rows], b_ts[rows]), s,
                                               b_start[rows])
            b_state = tree_stack(stored)
            # ---- update: minibatches of whole sequences through the parallel forward ----
            model.train()
            S = b_obs.shape[0]
            mb = S // cfg.n_minibatches
            clipfracs, stats = [], {}
            for _epoch in range(cfg.n_epochs):
                perm = torch.randperm(S, device=dev)
                for k in range(cfg.n_minibatches):
                    idx = perm[k * mb:(k + 1) * mb]
                    h, hv, _ = model.sequence(self._fields(b_obs[idx], b_pa[idx], b_pr[idx], b_ts[idx]),
                                              tree_index(b_state, idx), b_start[idx])
                    _, logp, ent, value = model.heads(h, b_act[idx], hv)
                    m = b_valid[idx].float()
                    msum = m.sum().clamp_min(1)
                    a = b_adv[idx]
                    if cfg.norm_adv:
                        mean = (a * m).sum() / msum
                        a = (a - mean) / ((((a - mean) ** 2 * m).sum() / msum).sqrt() + 1e-8)
                    ratio = (logp - b_logp[idx]).exp()
                    pg = torch.maximum(-a * ratio, -a * ratio.clamp(1 - cfg.clip_coef, 1 + cfg.clip_coef))
                    pg_loss = (pg * m).sum() / msum
                    v = (value - b_ret[idx]) ** 2
                    if cfg.clip_vloss:
                        v_clip = b_val[idx] + (value - b_val[idx]).clamp(-cfg.clip_coef, cfg.clip_coef)
                        v = torch.maximum(v, (v_clip - b_ret[idx]) ** 2)
                    v_loss = 0.5 * (v * m).sum() / msum
                    ent_loss = (ent * m).sum() / msum
                    loss = pg_loss - cfg.ent_coef * ent_loss + cfg.vf_coef * v_loss
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                    opt.step()
                    with torch.no_grad():
                        logr = logp - b_logp[idx]
                        approx_kl = (((logr.exp() - 1) - logr) * m).sum() / msum
                        clipfracs.append(((((ratio - 1).abs() > cfg.clip_coef).float() * m).sum() / msum).item())
                    stats = dict(pg_loss=pg_loss.item(), v_loss=v_loss.item(), entropy=ent_loss.item(),
                                 approx_kl=approx_kl.item())
                if cfg.target_kl is not None and stats["approx_kl"] > cfg.target_kl:
                    break
            # ---- log ----
            y, p = ret[ro.valid], ro.val[ro.valid]
            stats.update(clipfrac=float(np.mean(clipfracs)), lr=opt.param_groups[0]["lr"],
                         sps=(step + N * T - step0) / max(time.time() - t_start, 1e-9))
            if y.numel() > 1 and y.var() > 0:
                stats["explained_variance"] = float(1 - (y - p).var() / y.var())
            if ro.finished:
                stats["episode_return"] = float(np.mean([f[0] for f in ro.finished]))
                stats["episode_length"] = float(np.mean([f[1] for f in ro.finished]))
                succ = [f[2] for f in ro.finished if f[2] is not None]
                if succ:
                    stats["success_rate"] = float(np.mean(succ))
            return N * T, stats

        state = dict(optimizer=opt, **{k: r for k, r in (("obs_rms", obs_rms), ("ret_rms", ret_rms)) if r is not None})
        return Work(iterate, n_updates * N * T, state, dict(env=env), show=("episode_return", "success_rate", "sps"),
                    close=venv.close)
