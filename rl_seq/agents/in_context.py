"""In-context RL: Algorithm Distillation (``ad``, Laskin et al. 2023) and the
Decision-Pretrained Transformer (``dpt``, Lee et al. 2023), on any backbone.

``ad``: one token per step, ``s_t + a_{t-1} + r_{t-1}`` (plus the step's timestep within its
episode), across a task's episodes with no reset between them; trained to predict the
source's action ``a_t`` on windows of ``context`` steps of the source's learning histories
(:mod:`rl_seq.data.in_context`). Acting keeps the whole interaction as the backbone's step
state: a new task is a new state (``state=None``), episode starts do not reset it.

``dpt``: one token per transition of a task's in-context dataset, ``s_j + a_j + r_j``; the
features after j transitions (a learnt vector for the empty dataset) and the embedded query
state go through an MLP to the logits of the optimal action for the query. The context's
features do not depend on the query (late fusion), so a recurrent mixer acts in O(1) per step
and one parallel pass trains every prefix of a window. Acting online (DPT's online mode),
each completed transition joins the context as it happens.

Acting beyond the context: attention acts over a sliding window of the last ``context``
tokens (what it was trained on; its window is ``context``); recurrent mixers carry the whole
history in their state, further than the windows they were trained on.

Evaluation (:meth:`InContextAgent.evaluate`) runs held-out tasks, frozen weights,
``eval_episodes`` consecutive episodes per task in one context, and reports the return of each
in-context episode; the result's ``returns`` are the last episode's.

What the source teaches matters more than its speed: on Dark Room (64 training goals of 81),
``ad`` distilled from optimistic Q-learning's histories (systematic exploration, twice as fast a
learner) improved in context on the training goals (0.11 -> 0.52 of the optimal return over 30
episodes) but not on held-out ones (0.02 -> 0.07): it learnt to search the goals it was trained
on, which is Bayes-optimal for its training tasks. Distilled from epsilon-greedy histories
(random exploration) it improved on held-out goals too (0.05 -> 0.54 over 60 episodes, one seed).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rl_seq.agents.base import Agent, EvalResult, adamw, warmup
from rl_seq.config import EVAL_SEED, OfflineConfig, check_range
from rl_seq.data import SegmentSampler
from rl_seq.data.in_context import InContextData, load_in_context, make_task_env, optimal_return
from rl_seq.distributed import global_mean, rank_seed
from rl_seq.engine import Collected, Optimiser, Plan
from rl_seq.nets import Backbone, BackboneConfig
from rl_seq.tokenizer import SpaceEmbedding, TrajectoryTokenizer

log = logging.getLogger(__name__)


@dataclass
class InContextConfig(OfflineConfig):
    """In-context RL (AD / DPT)."""

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    """The sequence model (``--backbone`` sets ``backbone.mixer``)."""
    context: int = 200
    """Steps (AD) or transitions (DPT) per training window; attention's window when acting."""
    warmup_steps: int = 1000
    """Linear learning-rate warm-up."""
    grad_clip: float = 1.0
    """Gradient-norm clip."""
    eval_tasks: int = 0
    """Held-out tasks per evaluation (0: all of the dataset's)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range(self, "context", 1)
        check_range(self, "warmup_steps", 0)
        check_range(self, "grad_clip", 0, lo_open=True)
        check_range(self, "eval_tasks", 0)


class InContextModel(nn.Module):
    """Tokenizer + backbone + the action head (``dpt``: an MLP over context features and the
    query's embedding)."""

    def __init__(self, obs_space: gym.Space, act_space: gym.Space, cfg: InContextConfig, kind: str) -> None:
        super().__init__()
        if not isinstance(act_space, gym.spaces.Discrete):
            raise ValueError(f"ad and dpt act in Discrete action spaces; this env's is {act_space}")
        D, n = cfg.backbone.d_model, int(act_space.n)
        self.kind = kind
        layout = "obs+prev_act+prev_rew" if kind == "ad" else "obs+act+rew"
        tok = TrajectoryTokenizer(obs_space, act_space, D, layout, cfg.max_timestep if kind == "ad" else None)
        bb = cfg.backbone
        if bb.mixer == "attention" and "window" not in bb.mixer_options:
            bb = dataclasses.replace(bb, mixer_options={**bb.mixer_options, "window": cfg.context})
        self.backbone = Backbone(tok, bb)
        if kind == "ad":
            self.head = nn.Linear(D, n)
        else:
            self.query = SpaceEmbedding(obs_space, D)
            self.empty = nn.Parameter(torch.zeros(D))  # the features of an empty context
            self.head = nn.Sequential(nn.Linear(2 * D, 2 * D), nn.GELU(), nn.Linear(2 * D, n))

    def forward(self, fields: dict, episode_start: torch.Tensor) -> torch.Tensor:
        """fields [B,T,...] -> features [B,T,D] after each token."""
        return self.backbone.features(fields, episode_start, "obs")

    def logits(self, h: torch.Tensor, query: torch.Tensor | None = None) -> torch.Tensor:
        """AD: features [..., D] -> logits; DPT: context features [B,T,D] and queries
        [B,T,*obs] -> logits [B,T,n]."""
        if self.kind == "ad":
            return self.head(h)
        return self.head(torch.cat([h, self.query(query)], -1))


@dataclass
class InContextState:
    """Acting context, one row per env (one task each)."""

    backbone: tuple | None
    prev_action: torch.Tensor  # [n]
    t: np.ndarray  # [n] step within the episode (AD)
    h: torch.Tensor | None = None  # [n, D] features of the context so far (DPT)
    pending: torch.Tensor | None = None  # [n, *obs] the observation of the last action (DPT)
    feed: object = None
    generator: torch.Generator | None = None  # samples the actions (evaluate seeds it; else torch's)
    started: bool = False


@dataclass
class InContextResult(EvalResult):
    """An in-context evaluation: ``returns`` of the last in-context episode per task,
    ``curve`` [tasks, episodes] every episode's return, ``regret`` [tasks][steps] the
    cumulative expected regret after each step of the in-context episodes, where the env
    reports one (``info["regret"]``: bandits, where a step is a pull)."""

    curve: list[list[float]] = field(default_factory=list)
    regret: list[list[float]] | None = None
    optimal_returns: list[float | None] = field(default_factory=list)

    def to_dict(self) -> dict:
        c = np.asarray(self.curve)
        out = super().to_dict()
        out.update(curve=self.curve, curve_mean=c.mean(0).tolist(), optimal_returns=self.optimal_returns)
        if self.regret is not None:
            out.update(regret=self.regret, final_regret=float(np.mean([r[-1] for r in self.regret])))
        return out


class InContextAgent(Agent):
    algo = "ad"
    config_class = InContextConfig
    in_context = True
    data_parallel = False  # not tried under torchrun yet
    kind = "ad"

    def _build(self) -> nn.Module:
        return InContextModel(self.model_observation_space, self.action_space, self.config, self.kind)

    # -- data ---------------------------------------------------------------------------
    @classmethod
    def load_data(cls, dataset_id: str, download: bool = False) -> InContextData:
        return load_in_context(dataset_id, download)

    def setup_from_data(self, data: InContextData) -> None:
        if data.kind != self.kind:
            raise ValueError(f"{data.episodes.dataset_id} is a {data.kind} dataset; {self.algo} trains on {self.kind} "
                             f"data (make one: rl-seq datasets in-context FAMILY --kind {self.kind})")
        super().setup_from_data(data.episodes)
        self.meta.update(env_id=data.meta["env_id"], heldout_tasks=data.heldout_tasks, tasks=len(data.tasks),
                         in_context_kind=data.kind, heldout_optimal_returns=data.meta.get("heldout_optimal_returns"))
        if self.kind == "dpt" and self.model.query.kind == "box":  # the queries' own statistics
            q = data.query.reshape(len(data.query), -1).astype(np.float64)
            self.model.query.set_normalization(q.mean(0), np.maximum(q.std(0), 1e-6))

    def offline_data(self, dataset, env: str | None) -> InContextData:
        """``learn``'s dataset: an in-context dataset's id or :class:`InContextData`; evaluation
        runs its held-out tasks, so no ``env``."""
        if dataset is None:
            raise ValueError(f"{self.algo} trains offline: pass an in-context dataset (rl-seq datasets in-context ...)")
        data = self.load_data(dataset) if isinstance(dataset, str) else dataset
        if not isinstance(data, InContextData):
            raise TypeError(f"{self.algo} trains on an in-context dataset (an id or InContextData), not "
                            f"{type(data).__name__}")
        if env is not None:
            raise ValueError(f"{self.algo} evaluates on its dataset's held-out tasks; drop --env")
        return data

    # -- training (the engine's protocol) -----------------------------------------------------
    def prepare(self, steps: int, data: InContextData, env: str | None) -> Plan:
        cfg = self.config
        self.setup_from_data(data)
        hist, extras = data.history_episodes()
        self.sampler = SegmentSampler(hist, cfg.context, seed=rank_seed(cfg.seed), extra=extras)
        self.optimizer = adamw(self.model, cfg.lr, cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, warmup(cfg.warmup_steps))
        return Plan(steps, Optimiser([self.optimizer], self.scheduler, cfg.grad_clip),
                    dict(optimizer=self.optimizer, scheduler=self.scheduler, sampler=self.sampler),
                    per_rank=("sampler",), info=self._data_info(data.episodes, None))

    def collect(self, step: int) -> Collected:
        b = {k: torch.as_tensor(v, device=self.device) for k, v in self.sampler.sample(self.config.batch_size).items()}
        obs = b["obs"].float() if b["obs"].is_floating_point() else b["obs"]
        if self.kind == "ad":
            b["fields"] = dict(obs=obs, prev_act=b["prev_act"], prev_rew=b["prev_rew"], timestep=b["step"])
        else:
            b["fields"] = dict(obs=obs, act=b["act"], rew=b["rew"])
            q = b["query"]
            b["query"] = q.float() if q.is_floating_point() else q
        return Collected(1, [b])

    def loss(self, model: Callable, b: dict) -> tuple[torch.Tensor, dict]:
        """Cross-entropy of the source's actions (AD) or of the queries' optimal actions given
        the transitions before them (DPT), over the real steps of every rank."""
        h = model(b["fields"], b["episode_start"]).float()
        if self.kind == "ad":
            logits, target = self.model.logits(h), b["act"]
        else:  # the context before each transition: the empty one at a window's first
            before = torch.cat([h[:, :1], h[:, :-1]], 1)
            before = torch.where(b["episode_start"][..., None], self.model.empty.expand_as(h), before)
            logits, target = self.model.logits(before, b["query"]), b["optimal_action"]
        mask = b["mask"].float()
        per_step = F.cross_entropy(logits.transpose(1, 2), target.long(), reduction="none")
        acc = ((logits.argmax(-1) == target).float() * mask).sum() / mask.sum().clamp_min(1)
        return global_mean((per_step * mask).sum(), mask.sum()), dict(accuracy=float(acc))

    # -- acting -----------------------------------------------------------------------------
    def _act(self, obs, state: InContextState | None, episode_start, rewards, deterministic, acting):
        logits, state = self.step_logits(obs, state, episode_start, rewards)
        if deterministic:
            action = logits.argmax(-1)
        else:
            action = torch.multinomial(logits.softmax(-1), 1, generator=state.generator)[:, 0]
        state.prev_action = action
        return action.cpu().numpy(), state

    def step_logits(self, obs: torch.Tensor, state: InContextState | None, episode_start: np.ndarray,
                    rewards: np.ndarray | None) -> tuple[torch.Tensor, InContextState]:
        """One acting step: obs [n, *obs] (the previous step's ``rewards`` [n]) -> the action
        logits [n, A] and the state; the caller sets ``state.prev_action`` to the action taken."""
        n, dev = obs.shape[0], self.device
        state = self.new_state(n) if state is None else state
        new, state.started = not state.started, True
        if new and self.kind == "dpt":
            state.h = self.model.empty.detach().expand(n, -1)
        if rewards is None and state.feed is not None:
            rewards = state.feed.pop()
        if not new and rewards is None:
            raise ValueError(f"{self.algo} learns in context from rewards: pass predict(..., rewards=r) with the "
                             "previous step's rewards, or in SB3 loops wrap the env first: env = agent.wrap_env(env)")
        r = torch.as_tensor(np.zeros(n) if new else rewards, dtype=torch.float32, device=dev)
        tok = self.model.backbone.tokenizer
        if self.kind == "ad":
            state.t = np.where(np.asarray(episode_start, bool), 0, state.t + (0 if new else 1))
            t = torch.as_tensor(state.t, device=dev)
            x = tok.embed_slots(dict(obs=obs, prev_act=state.prev_action, prev_rew=r, timestep=t), [0])
            resets = torch.full((n,), new, dtype=torch.bool, device=dev)
            h, state.backbone = self.model.backbone.step_tokens(x, state.backbone, resets)
            logits = self.model.logits(h[:, 0])
        else:
            if not new:  # the last transition joins the context
                x = tok.embed_slots(dict(obs=state.pending, act=state.prev_action, rew=r), [0])
                resets = torch.full((n,), state.backbone is None, dtype=torch.bool, device=dev)
                h, state.backbone = self.model.backbone.step_tokens(x, state.backbone, resets)
                state.h = h[:, 0]
            logits = self.model.logits(state.h[:, None], obs[:, None])[:, 0]
            state.pending = obs
        return logits, state

    def new_state(self, n: int, seed: int | None = None) -> InContextState:
        """A fresh acting state (a new task in each of ``n`` envs); ``seed`` seeds its action
        sampling."""
        g = None if seed is None else torch.Generator(self.device).manual_seed(seed)
        return InContextState(None, torch.zeros(n, dtype=torch.long, device=self.device), np.zeros(n, np.int64),
                              feed=self.reward_feed, generator=g)

    # -- in-context evaluation ------------------------------------------------------------------
    def evaluate(self, env=None, episodes: int = 10, seed: int = EVAL_SEED, deterministic: bool = False,
                 acting=None, tasks: list[dict] | None = None, **acting_fields) -> InContextResult:
        """``episodes`` consecutive episodes in one context on each held-out task (``tasks``:
        others), frozen weights, actions sampled from the policy unless ``deterministic``;
        task i's episode k starts from env seed ``seed + 1000 i + k``. ``env``: the env id
        (default: the dataset's)."""
        self.acting_settings(acting, **acting_fields)  # ad / dpt have none: refuses any
        if episodes < 1:
            raise ValueError(f"episodes must be >= 1, got {episodes}")
        env_id = env or self.meta.get("env_id")
        if not isinstance(env_id, str):
            raise ValueError("in-context evaluation needs the env id of the task family (the dataset's, or env=ID)")
        if tasks is None:
            tasks = self.meta.get("heldout_tasks") or []
            k = self.config.eval_tasks
            tasks = tasks[:k] if k else tasks
        if not tasks:
            raise ValueError("no tasks to evaluate on: the dataset has no held-out tasks; pass tasks=[...] or make it "
                             "with --heldout N")
        envs = [make_task_env(env_id, task) for task in tasks]
        for i, e in enumerate(envs):
            self.check_env(e.observation_space, e.action_space, f"{env_id} with task {tasks[i]}")
        t0 = time.time()
        n = len(envs)
        curve, regret = np.zeros((n, episodes)), [[] for _ in range(n)]
        has_regret = False
        ep_i, ret = np.zeros(n, int), np.zeros(n)
        obs = [e.reset(seed=seed + 1000 * i)[0] for i, e in enumerate(envs)]
        state, start, rewards = self.new_state(n, seed), np.ones(n, bool), np.zeros(n)
        try:
            while (ep_i < episodes).any():
                act, state = self.predict(np.stack(obs), state, start, deterministic, rewards=rewards)
                start = np.zeros(n, bool)
                for i, e in enumerate(envs):
                    o, r, term, trunc, info = e.step(act[i])
                    rewards[i], obs[i] = r, o
                    if ep_i[i] < episodes:
                        ret[i] += r
                        if "regret" in info:
                            has_regret = True
                            regret[i].append(float(info["regret"]))
                    if term or trunc:
                        if ep_i[i] < episodes:
                            curve[i, ep_i[i]] = ret[i]
                            ep_i[i] += 1
                        ret[i] = 0.0
                        obs[i] = e.reset(seed=seed + 1000 * i + int(ep_i[i]))[0]
                        start[i] = True
        finally:
            for e in envs:
                e.close()
        opt = [optimal_return(e) for e in envs]
        last = curve[:, -1].tolist()
        ns = None if None in opt or 0 in opt else [r / o for r, o in zip(last, opt, strict=True)]
        return InContextResult(last, [episodes] * n, time.time() - t0, ns, None, curve=curve.tolist(),
                               regret=[np.cumsum(r).tolist() for r in regret] if has_regret else None,
                               optimal_returns=opt)


class DPTAgent(InContextAgent):
    algo = "dpt"
    kind = "dpt"
