"""Data for in-context RL: task splits, the source algorithms, learning histories (Algorithm
Distillation) and in-context datasets labelled with optimal actions (the Decision-Pretrained
Transformer), written atomically into the Minari store, and read back.

A *task family* is a Gymnasium env id and a task sampler (``Generator -> gym.make`` keyword
arguments): the package's own (:data:`rl_seq.envs.in_context.FAMILIES`) or a user's
(``--env ID --sampler module:function``). Train and held-out tasks are drawn disjoint and
recorded in the dataset.

The sources, per task:

- bandits: Thompson sampling (Beta posteriors; rewards in [0, 1] are binarised with
  probability r, Agrawal & Goyal's trick) - the algorithm DPT's bandit regret is measured
  against, and a learner whose history improves within H pulls;
- everything else: tabular Q-learning with epsilon-greedy exploration (epsilon decays
  linearly from 1 to 0.05 over the first ``explore`` share of the episodes), on the
  observation plus ``info["has_key"]`` where the env reports it. ``optimism`` > 0 starts every
  value there (systematic exploration: the greedy policy tries what it has not tried) with a
  constant epsilon of 0.05; it learns Dark Room about 2x faster, but ``ad`` distilled from
  those histories searched the training tasks' goals only (module ``rl_seq.agents.in_context``
  notes), so the default is the random exploration of epsilon-greedy. A table needs observations
  that are few and hashable (Discrete / MultiDiscrete, or Box with a few integer values): a
  family with large observations needs its own source.

Layout of a dataset (one Minari episode per env episode, each task's episodes consecutive),
metadata key ``rl_seq_in_context``: ``kind`` (``ad`` | ``dpt``), ``env_id``, ``family``,
``source``, ``tasks`` (keyword arguments of the training tasks), ``heldout_tasks``,
``histories`` (episodes per history, in order), ``history_task`` (the task of each history:
``runs`` histories per task, the source seeded differently in each), ``every`` (AD: one source episode in
``every`` is recorded, the history subsampling of Laskin et al.), ``optimal_returns``
(per history, or null), ``source_curves`` (AD: every source episode's return, per history).
DPT datasets hold random-behaviour episodes (bandits: :func:`bandit_behaviour`, as DPT; else
uniform actions, from uniformly drawn states where the env has ``set_state``: DPT's uniform
roll-in) and per step, in the episode infos, a
``query`` observation (uniform over the observation space) and its ``optimal_action``: the
env's ``optimal_action`` where it has one, else the source's greedy action after it learnt the
task (documented as such in the metadata's ``labels``).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import logging
import pickle
import shutil
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import gymnasium as gym
import numpy as np

from rl_seq.data.episodes import Episodes, spaces_match

log = logging.getLogger(__name__)
META_KEY = "rl_seq_in_context"
KINDS = ("ad", "dpt")


# -- task families ----------------------------------------------------------------------------
def resolve_family(family: str | None = None, env_id: str | None = None,
                   sampler: str | None = None) -> tuple[str, Callable, str]:
    """``(env_id, sampler, name)``: a built-in family, or an env id with a ``module:function``
    sampler."""
    from rl_seq.envs.in_context import FAMILIES

    if family is not None:
        if family not in FAMILIES:
            raise ValueError(f"unknown task family {family!r}; the package's are {', '.join(FAMILIES)} (or bring "
                             "your own: --env ENV_ID --sampler module:function)")
        env_id, fn = FAMILIES[family]
        return env_id, fn, family
    if env_id is None or sampler is None:
        raise ValueError("name a task family, or give both --env ENV_ID and --sampler module:function")
    mod, _, name = sampler.partition(":")
    try:
        fn = getattr(importlib.import_module(mod), name) if name else None
    except (ImportError, AttributeError) as e:
        raise ValueError(f"cannot import task sampler {sampler!r} ({e}); give it as module:function, with the "
                         "module on the Python path") from None
    if not callable(fn):
        raise ValueError(f"task sampler {sampler!r} is not a module:function callable")
    return env_id, fn, sampler


def make_task_env(env_id: str, task: dict) -> gym.Env:
    """``gym.make(env_id, **task)``, with the task named when the env refuses it."""
    try:
        return gym.make(env_id, **task)
    except (TypeError, ValueError, gym.error.Error) as e:
        raise ValueError(f"{env_id} refuses task {task}: {e}; fix the task sampler so that it returns "
                         f"keyword arguments {env_id} accepts") from None


def split_tasks(sampler: Callable, n_train: int, n_heldout: int, seed: int = 0,
                env_id: str | None = None) -> tuple[list[dict], list[dict]]:
    """Draw ``n_heldout`` then ``n_train`` distinct tasks from ``sampler`` (disjoint sets);
    with ``env_id``, the first task drawn is made first (a task the env refuses is named before
    many are drawn)."""
    if n_train < 1 or n_heldout < 0:
        raise ValueError(f"need >= 1 training task and >= 0 held-out ones, got {n_train} and {n_heldout}")
    rng = np.random.default_rng(seed)
    seen, out = set(), []
    tries = 0
    while len(out) < n_train + n_heldout:
        try:
            task = sampler(rng)
        except TypeError as e:
            raise ValueError(f"the task sampler failed: {e}; check its keyword arguments (--family-kwargs)") from None
        if not isinstance(task, dict):
            raise ValueError(f"the task sampler returned {task!r}; it must return a dict of gym.make keyword arguments")
        if env_id is not None and tries == 0:
            make_task_env(env_id, task).close()
        key = json.dumps(task, sort_keys=True)
        tries += 1
        if key not in seen:
            seen.add(key)
            out.append(task)
        elif tries > 100 * (n_train + n_heldout):
            raise ValueError(f"the task sampler gave only {len(out)} distinct tasks in {tries} draws, fewer than the "
                             f"{n_train} + {n_heldout} asked: ask for fewer tasks or a larger family")
    return out[n_heldout:], out[:n_heldout]


def optimal_return(env: gym.Env) -> float | None:
    fn = getattr(env.unwrapped, "optimal_return", None)
    return float(fn()) if callable(fn) else None


# -- sources ----------------------------------------------------------------------------------
class ThompsonSampling:
    """Beta-Bernoulli Thompson sampling over k arms."""

    def __init__(self, n_actions: int, rng: np.random.Generator) -> None:
        self.a, self.b, self.rng = np.ones(n_actions), np.ones(n_actions), rng

    def act(self, obs, info) -> int:
        return int(np.argmax(self.rng.beta(self.a, self.b)))

    def greedy(self, obs, info) -> int:
        return int(np.argmax(self.a / (self.a + self.b)))

    def update(self, obs, info, a, r, next_obs, next_info, done, episode, episodes) -> None:
        win = float(self.rng.random() < np.clip(r, 0.0, 1.0))
        self.a[a] += win
        self.b[a] += 1.0 - win


class UCB:
    """UCB1 over k arms (a baseline of the bandit regret table)."""

    def __init__(self, n_actions: int, rng: np.random.Generator) -> None:
        self.n, self.s = np.zeros(n_actions), np.zeros(n_actions)

    def act(self, obs, info) -> int:
        if (self.n == 0).any():
            return int(np.argmin(self.n))
        t = self.n.sum()
        return int(np.argmax(self.s / self.n + np.sqrt(2 * np.log(t) / self.n)))

    def greedy(self, obs, info) -> int:
        return int(np.argmax(self.s / np.maximum(self.n, 1)))

    def update(self, obs, info, a, r, next_obs, next_info, done, episode, episodes) -> None:
        self.n[a] += 1
        self.s[a] += r


class QLearning:
    """Tabular Q-learning, epsilon-greedy (module docstring)."""

    def __init__(self, n_actions: int, rng: np.random.Generator, lr: float = 0.5, gamma: float = 0.9,
                 explore: float = 0.6, eps_min: float = 0.05, optimism: float = 0.0) -> None:
        self.q: dict = {}
        self.n, self.rng, self.lr, self.gamma, self.explore, self.eps_min = n_actions, rng, lr, gamma, explore, eps_min
        self.optimism = optimism
        self.eps = eps_min if optimism > 0 else 1.0

    def _key(self, obs, info):
        x = np.asarray(obs)
        if x.size > 64:
            raise ValueError(f"tabular Q-learning needs small observations (got {x.size} values); give the family a "
                             "source of its own")
        return (*x.ravel().tolist(), bool((info or {}).get("has_key", False)))

    def _row(self, obs, info) -> np.ndarray:
        return self.q.setdefault(self._key(obs, info), np.full(self.n, self.optimism))

    def greedy(self, obs, info) -> int:
        row = self._row(obs, info)
        return int(self.rng.choice(np.flatnonzero(row == row.max())))

    def act(self, obs, info) -> int:
        return int(self.rng.integers(self.n)) if self.rng.random() < self.eps else self.greedy(obs, info)

    def update(self, obs, info, a, r, next_obs, next_info, done, episode, episodes) -> None:
        row = self._row(obs, info)
        target = r + (0.0 if done else self.gamma * self._row(next_obs, next_info).max())
        row[a] += self.lr * (target - row[a])
        if self.optimism == 0:
            self.eps = max(self.eps_min, 1.0 - (episode + 1) / max(1, self.explore * episodes))


def make_source(env: gym.Env, rng: np.random.Generator):
    """Thompson sampling for the bandit family, tabular Q-learning elsewhere."""
    if not isinstance(env.action_space, gym.spaces.Discrete):
        raise ValueError(f"the package's sources act in Discrete action spaces, not {env.action_space}")
    from rl_seq.envs.in_context import BanditEnv

    cls = ThompsonSampling if isinstance(env.unwrapped, BanditEnv) else QLearning
    return cls(int(env.action_space.n), rng)


def _episode(env, seed, policy, learner=None, e=0, episodes=1, restart=None) -> dict:
    """One episode; ``restart()`` (DPT's uniform roll-in) puts the env in a new state before
    every step and returns its observation, which is recorded instead of the step's."""
    obs, info = env.reset(seed=seed)
    obs = restart() if restart else obs
    ep = dict(observations=[obs], actions=[], rewards=[], terminations=[], truncations=[])
    done = False
    while not done:
        a = policy(obs, info)
        nobs, r, term, trunc, ninfo = env.step(a)
        if learner is not None:
            learner.update(obs, info, a, float(r), nobs, ninfo, term, e, episodes)
        if restart and not (term or trunc):
            nobs = restart()
        for k, v in (("observations", nobs), ("actions", a), ("rewards", float(r)), ("terminations", term),
                     ("truncations", trunc)):
            ep[k].append(v)
        obs, info, done = nobs, ninfo, term or trunc
    return {k: np.asarray(v) for k, v in ep.items()}


def learning_history(env_id: str, task: dict, episodes: int, every: int, seed: int, expert: bool = False) -> dict:
    """The source learning ``task`` for ``episodes`` episodes: every ``every``-th episode
    recorded (from the first), and every episode's return (``curve``). ``expert``: record as
    many episodes of the learnt source after it (the expert-distillation control's data)."""
    env = make_task_env(env_id, task)
    rng = np.random.default_rng(seed)
    src = make_source(env, rng)
    recorded, curve = [], []
    for e in range(episodes):
        ep = _episode(env, seed * 100_000 + e, src.act, src, e, episodes)
        curve.append(float(ep["rewards"].sum()))
        if e % every == 0 and not expert:
            recorded.append(ep)
    if expert:
        n = len(range(0, episodes, every))
        recorded = [_episode(env, seed * 100_000 + episodes + e, src.act, src, episodes - 1, episodes)
                    for e in range(n)]
    out = dict(episodes=recorded, curve=curve, optimal_return=optimal_return(env))
    env.close()
    return out


def bandit_behaviour(rng: np.random.Generator, arms: int) -> np.ndarray:
    """The arm probabilities of one DPT bandit dataset: a flat Dirichlet draw mixed with all the
    mass on one random arm, the mixing weight uniform over 0, 0.1, ..., 1 (Lee et al. 2023).
    Without the point mass (Dirichlet only) the contexts never look like an agent's own history,
    which concentrates on one arm: ``dpt`` then matched Thompson sampling for 100 pulls and kept
    exploring after (regret 27.5 at H=500 against Thompson's 12.7, one seed)."""
    w = rng.integers(0, 11) / 10
    return (1 - w) * rng.dirichlet(np.ones(arms)) + w * np.eye(arms)[rng.integers(arms)]


def in_context_dataset(env_id: str, task: dict, steps: int, seed: int, source_episodes: int) -> dict:
    """Random-behaviour episodes until ``steps`` transitions, each step with a query
    observation and its optimal action (module docstring)."""
    env = make_task_env(env_id, task)
    rng = np.random.default_rng(seed)
    env.observation_space.seed(seed)
    n = int(env.action_space.n)
    if _is_bandit(env):
        probs = bandit_behaviour(rng, n)
        behaviour = lambda o, i: int(rng.choice(n, p=probs))  # noqa: E731
    else:
        behaviour = lambda o, i: int(rng.integers(n))  # noqa: E731
    # DPT's uniform roll-in where the env can be put in a state: every transition starts from a
    # uniformly drawn one (random walks from the start state rarely reach a room's far corners)
    set_state = getattr(env.unwrapped, "set_state", None)
    restart = (lambda: set_state(env.observation_space.sample())) if callable(set_state) else None
    label = getattr(env.unwrapped, "optimal_action", None)
    labels = "the env's optimal_action"
    if not callable(label):  # a user's family: the source's final greedy policy
        src = make_source(env, rng)
        for e in range(source_episodes):
            _episode(env, seed * 100_000 + 50_000 + e, src.act, src, e, source_episodes)
        label, labels = src.greedy, f"the source's greedy action after {source_episodes} episodes"
    eps, total, e = [], 0, 0
    while total < steps:
        ep = _episode(env, seed * 100_000 + e, behaviour, restart=restart)
        T = len(ep["rewards"])
        query = np.stack([env.observation_space.sample() for _ in range(T + 1)])
        ep["infos"] = dict(query=query, optimal_action=np.asarray([label(q, {}) for q in query], np.int64))
        eps.append(ep)
        total, e = total + T, e + 1
    out = dict(episodes=eps, curve=[], optimal_return=optimal_return(env), labels=labels,
               rollin="uniform states" if restart else "episodes from the env's reset")
    env.close()
    return out


def _is_bandit(env: gym.Env) -> bool:
    from rl_seq.envs.in_context import BanditEnv

    return isinstance(env.unwrapped, BanditEnv)


def _task_job(args: tuple) -> dict:
    kind, env_id, task, seed, episodes, every, steps, expert = args
    if kind == "ad":
        return learning_history(env_id, task, episodes, every, seed, expert)
    return in_context_dataset(env_id, task, steps, seed, episodes)


def make_in_context(dataset_id: str, kind: str = "ad", family: str | None = None, env_id: str | None = None,
                    sampler: str | None = None, tasks: int = 32, heldout: int = 8, episodes: int = 200,
                    every: int = 1, steps: int = 100, runs: int = 1, seed: int = 0, workers: int = 1,
                    sampler_kwargs: dict | None = None, expert: bool = False, address: str | None = None) -> dict:
    """Make an in-context dataset and write it into the Minari store (atomically). ``kind``:
    ``ad`` (the source's learning history of ``episodes`` episodes per task, one in ``every``
    recorded) or ``dpt`` (``steps`` random-behaviour transitions per task with query labels);
    ``runs`` histories (or datasets) per training task, each seeded on its own. ``expert``
    (ad): the learnt source's episodes instead of its history, as many as a history records
    (the expert-distillation control, which should not improve in context). Histories are
    made in ``workers`` processes, or on a Ray cluster (``address``: ``auto``, ``ray://host:port``;
    ``local`` starts Ray here; the ``dist`` extra); finished ones are kept in a work folder of the
    store, so an interrupted run resumes where it stopped. ``sampler_kwargs`` go to the task sampler (the
    package's: ``arms`` / ``horizon``, ``size``). Returns the dataset's summary."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if expert and kind != "ad":
        raise ValueError("expert (the expert-distillation control) records ad data; drop it for dpt")
    for name, v, lo in (("episodes", episodes, 1), ("every", every, 1), ("steps", steps, 1), ("runs", runs, 1),
                        ("workers", workers, 1), ("seed", seed, 0)):
        if v < lo:
            raise ValueError(f"{name} must be >= {lo}, got {v}")
    env_id, fn, fam = resolve_family(family, env_id, sampler)
    if sampler_kwargs:
        fn = functools.partial(fn, **sampler_kwargs)
    train, held = split_tasks(fn, tasks, heldout, seed, env_id)
    with make_task_env(env_id, train[0]) as first:
        spaces = first.observation_space, first.action_space
    for task in train + held:  # every task's env is made and has the first's spaces
        with make_task_env(env_id, task) as env:
            for what, a, b in (("observation", spaces[0], env.observation_space),
                               ("action", spaces[1], env.action_space)):
                if not spaces_match(a, b):
                    raise ValueError(f"task {task} of {env_id} has {what} space {b}, but task {train[0]} has {a}; "
                                     "every task of a family must share its spaces")
    from minari.storage.datasets_root_dir import get_dataset_path
    from rich.progress import track

    made_of = json.dumps([kind, env_id, fam, train, episodes, every, steps, runs, seed, expert])
    digest = hashlib.sha1(made_of.encode()).hexdigest()[:12]
    work = Path(get_dataset_path()).resolve() / f".rl_seq-work-{digest}"
    work.mkdir(parents=True, exist_ok=True)
    history_task = [i for i in range(len(train)) for _ in range(runs)]
    jobs = [(kind, env_id, train[i], seed * 100_000 + j, episodes, every, steps, expert)
            for j, i in enumerate(history_task)]
    todo = [i for i in range(len(jobs)) if not (work / f"task_{i:05d}.pkl").exists()]
    if len(todo) < len(jobs):
        log.info("resuming: %d of %d tasks already made in %s", len(jobs) - len(todo), len(jobs), work)
    desc = f"{kind} data: {len(todo)} histories of {env_id}"
    with _pool(workers, address) as pool:
        for i, res in track(zip(todo, pool.map(_task_job, [jobs[i] for i in todo])), total=len(todo), description=desc):
            tmp = work / f".task_{i:05d}.tmp"
            tmp.write_bytes(pickle.dumps(res))
            tmp.replace(work / f"task_{i:05d}.pkl")
    results = [pickle.loads((work / f"task_{i:05d}.pkl").read_bytes()) for i in range(len(jobs))]
    held_opt = []
    for task in held:
        with make_task_env(env_id, task) as env:
            held_opt.append(optimal_return(env))
    meta = dict(kind=kind, env_id=env_id, family=fam, source=_source_name(env_id, train[0]) if kind == "ad" else
                "random behaviour", tasks=train, heldout_tasks=held, histories=[len(r["episodes"]) for r in results],
                history_task=history_task, runs=runs, every=every, expert=expert,
                optimal_returns=[r["optimal_return"] for r in results], heldout_optimal_returns=held_opt,
                source_curves=[r["curve"] for r in results], labels=results[0].get("labels"),
                rollin=results[0].get("rollin"), seed=seed)
    eps = [e for r in results for e in r["episodes"]]
    with make_task_env(env_id, train[0]) as first:
        _write(dataset_id, eps, first.spec, meta, *spaces)
    shutil.rmtree(work, ignore_errors=True)
    lengths = [len(e["rewards"]) for e in eps]
    return dict(id=dataset_id, kind=kind, env_id=env_id, tasks=len(train), heldout=len(held), episodes=len(eps),
                steps=int(sum(lengths)), mean_return=float(np.mean([e["rewards"].sum() for e in eps])))


def _pool(workers: int, address: str | None):
    """Where histories are made: a Ray pool (``address``), worker processes, or this one."""
    if address is not None:
        try:
            from ray.util.multiprocessing import Pool
        except ImportError:
            raise ImportError("making histories on Ray needs it: pip install 'rl-seq[dist]'") from None
        return _RayPool(Pool(ray_address=None if address == "local" else address))
    return ProcessPoolExecutor(workers) if workers > 1 else _Serial()


class _RayPool:
    """Ray's ``multiprocessing.Pool`` with ``ProcessPoolExecutor``'s ordered, lazy ``map``."""

    def __init__(self, pool) -> None:
        self.pool = pool

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.pool.terminate()
        return False

    def map(self, fn, items):
        return self.pool.imap(fn, list(items))


class _Serial:
    """``ProcessPoolExecutor``'s ``map`` in this process (one worker)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def map(self, fn, items):
        return map(fn, items)


def _source_name(env_id: str, task: dict) -> str:
    with make_task_env(env_id, task) as env:
        return "thompson sampling" if _is_bandit(env) else "tabular q-learning (epsilon-greedy)"


def _write(dataset_id: str, eps: list[dict], spec: gym.envs.registration.EnvSpec, meta: dict,
           observation_space: gym.Space, action_space: gym.Space) -> None:
    """The episodes as a Minari dataset with the tasks' spaces (the env's default keyword
    arguments may give others: a bandit's arm count), its env the first task's (a user's
    ``module:id`` made, so Minari sees the registered id; the metadata keeps ``module:id``) and
    the in-context metadata."""
    from minari.data_collector import EpisodeBuffer

    from rl_seq.data.store import create_dataset

    buffers = [EpisodeBuffer(id=i, observations=e["observations"], actions=e["actions"], rewards=list(e["rewards"]),
                             terminations=list(e["terminations"]), truncations=list(e["truncations"]),
                             infos=e.get("infos")) for i, e in enumerate(eps)]
    create_dataset(dataset_id, buffers, metadata={META_KEY: meta}, env=spec, observation_space=observation_space,
                   action_space=action_space,
                   algorithm_name=f"rl_seq in-context {meta['kind']} ({meta['source']})", author="rl_seq",
                   description=f"in-context RL data ({meta['kind']}) for {meta['env_id']}, made by rl_seq")


# -- reading ---------------------------------------------------------------------------------
@dataclass
class InContextData:
    """An in-context dataset: its env episodes (in order) and what the metadata says.
    ``history_offsets`` [H+1]: episode offsets of each task's history; ``query`` [N, ...] and
    ``optimal_action`` [N] per step (DPT)."""

    episodes: Episodes
    history_offsets: np.ndarray
    meta: dict
    query: np.ndarray | None = None
    optimal_action: np.ndarray | None = None
    extras: dict = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.meta["kind"]

    @property
    def env_observation_space(self) -> gym.Space:
        return self.episodes.env_observation_space

    @property
    def action_space(self) -> gym.Space:
        return self.episodes.action_space

    @property
    def tasks(self) -> list[dict]:
        return self.meta["tasks"]

    @property
    def heldout_tasks(self) -> list[dict]:
        return self.meta["heldout_tasks"]

    @classmethod
    def from_minari(cls, dataset) -> InContextData:
        ds_id = dataset.spec.dataset_id
        meta = dataset.storage.metadata.get(META_KEY)
        if not isinstance(meta, dict) or not {"kind", "tasks", "heldout_tasks", "histories"} <= set(meta):
            raise ValueError(f"{ds_id} holds no in-context metadata ({META_KEY!r} with kind, tasks, heldout_tasks "
                             "and histories): in-context agents train on datasets made by `rl-seq datasets in-context`")
        if meta["kind"] not in KINDS:
            raise ValueError(f"{ds_id}: in-context kind {meta['kind']!r} is not one of {', '.join(KINDS)}")
        eps = Episodes.from_minari(dataset)
        hist = np.asarray(meta["histories"], np.int64)
        of = meta.get("history_task", list(range(len(hist))))
        if len(of) != len(hist) or hist.sum() != eps.num_episodes or (hist < 1).any():
            raise ValueError(f"{ds_id}: its metadata names {hist.sum()} episodes in {len(hist)} histories of "
                             f"{len(of)} tasks, but it holds {eps.num_episodes} episodes; make it again")
        query = opt = None
        if meta["kind"] == "dpt":
            q, a = [], []
            for e in dataset.iterate_episodes():
                if not e.infos or "query" not in e.infos or "optimal_action" not in e.infos:
                    raise ValueError(f"{ds_id}: episode {e.id} has no query / optimal_action infos; a DPT dataset "
                                     "labels every step: make it again with `rl-seq datasets in-context --kind dpt`")
                q.append(np.asarray(e.infos["query"])[:-1])
                a.append(np.asarray(e.infos["optimal_action"])[:-1])
            query, opt = np.concatenate(q), np.concatenate(a).astype(np.int64)
        return cls(eps, np.concatenate([[0], np.cumsum(hist)]), meta, query, opt)

    def history_episodes(self) -> tuple[Episodes, dict[str, np.ndarray]]:
        """One "episode" per history (its env episodes joined, no reset between them) for
        :class:`rl_seq.data.SegmentSampler`, and the per-step extras: ``step`` (within its env
        episode), ``prev_act`` / ``prev_rew`` (the previous step of the history; zero at its
        start, the last step of the previous episode at an episode's start), and for DPT
        ``query`` / ``optimal_action``."""
        ep = self.episodes
        step_off = ep.offsets[self.history_offsets]  # [H+1] step offsets of the histories
        last_ep = self.history_offsets[1:] - 1
        hist = Episodes(ep.observations, ep.actions, ep.rewards, ep.terminations, ep.truncations,
                        step_off.astype(np.int64), ep.final_observations[last_ep], ep.observation_space,
                        ep.action_space, ep.ref_min_score, ep.ref_max_score, ep.env_id, ep.dataset_id, ep.env_kwargs)
        first = np.zeros(ep.num_steps, bool)
        first[step_off[:-1]] = True
        prev_act = np.concatenate([np.zeros_like(ep.actions[:1]), ep.actions[:-1]])
        prev_rew = np.concatenate([[0.0], ep.rewards[:-1]]).astype(np.float32)
        prev_act[first], prev_rew[first] = 0, 0.0
        extras = dict(step=ep.timesteps.astype(np.int64), prev_act=prev_act, prev_rew=prev_rew)
        if self.query is not None:
            extras.update(query=self.query, optimal_action=self.optimal_action)
        return hist, extras


def load_in_context(dataset_id: str, download: bool = False) -> InContextData:
    from rl_seq.data.loading import load_minari

    return InContextData.from_minari(load_minari(dataset_id, download))
