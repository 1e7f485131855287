"""Ragged episodes stored flat: one array per field plus episode offsets.

Built from a Minari dataset or from online rollouts. Episode ``e`` covers steps
``offsets[e]:offsets[e+1]``; ``observations`` holds the observation *before* each step
(Minari's ``T+1`` observations minus the last, which is kept in ``final_observations``).

Composite observations (Dict and Tuple spaces, nested) are flattened by one rule,
Gymnasium's (``gymnasium.spaces.flatten``, the reference :func:`flatten_observations` is held
equal to): Box leaves raveled, Discrete and MultiDiscrete leaves one-hot, MultiBinary leaves as
their bits, concatenated in the space's order (Dict: its key order) into one float32 vector per
step, which the agents embed as a Box (a linear map of a one-hot is an embedding table, so each
leaf is embedded by its own space; only the Box leaves are normalised, :func:`box_dims`), the
way Stable-Baselines3 feeds Dict observations to an MLP. Image leaves are raveled too, and the
model takes each back to its own CNN (``Agent.model_observation_space``). Leaves with no
fixed-size vector form (Text, Sequence, Graph) are refused with an error naming the key. The
agent keeps the env's space, so ``predict`` takes the env's dicts and tuples as they come.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np


@dataclass
class Episodes:
    """Flat ragged episodes. Shapes: N steps, E episodes."""

    observations: np.ndarray  # [N, *obs_shape]
    actions: np.ndarray  # [N, *act_shape]
    rewards: np.ndarray  # [N] float32
    terminations: np.ndarray  # [N] bool
    truncations: np.ndarray  # [N] bool
    offsets: np.ndarray  # [E+1] int64
    final_observations: np.ndarray  # [E, *obs_shape]
    observation_space: gym.Space
    action_space: gym.Space
    ref_min_score: float | None = None
    ref_max_score: float | None = None
    env_id: str | None = None
    dataset_id: str | None = None
    env_kwargs: dict = field(default_factory=dict)
    composite_space: gym.Space | None = None  # the env's Dict/Tuple space, flattened into observation_space

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def from_episode_list(cls, episodes: list[dict], observation_space: gym.Space,
                          action_space: gym.Space, **meta) -> Episodes:
        """episodes: dicts with ``observations`` [T+1, ...], ``actions`` [T, ...],
        ``rewards``, ``terminations``, ``truncations`` [T]."""
        if not episodes:
            raise ValueError("the dataset holds no episodes: record some before training")
        obs_space = flat_observation_space(observation_space)
        lengths = [len(e["rewards"]) for e in episodes]
        if min(lengths) == 0:
            raise ValueError("an episode has no steps; drop empty episodes before loading")
        obs = [flatten_observations(observation_space, e["observations"]) for e in episodes]
        out = cls(
            observations=np.concatenate([o[:-1] for o in obs]),
            actions=np.concatenate([np.asarray(e["actions"]) for e in episodes]),
            rewards=np.concatenate([np.asarray(e["rewards"], np.float32) for e in episodes]),
            terminations=np.concatenate([np.asarray(e["terminations"], bool) for e in episodes]),
            truncations=np.concatenate([np.asarray(e["truncations"], bool) for e in episodes]),
            offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            final_observations=np.stack([o[-1] for o in obs]),
            observation_space=obs_space, action_space=action_space,
            composite_space=observation_space if isinstance(observation_space, COMPOSITE) else None, **meta)
        out.validate()
        return out

    def to_episode_list(self) -> list[dict]:
        """The inverse of :meth:`from_episode_list`: one dict per episode (``observations``
        [T+1, ...] with the final one, ``actions``, ``rewards``, ``terminations``,
        ``truncations`` [T])."""
        out = []
        for i, (a, b) in enumerate(zip(self.offsets[:-1], self.offsets[1:], strict=True)):
            out.append(dict(observations=np.concatenate([self.observations[a:b], self.final_observations[i:i + 1]]),
                            actions=self.actions[a:b], rewards=self.rewards[a:b],
                            terminations=self.terminations[a:b], truncations=self.truncations[a:b]))
        return out

    @classmethod
    def from_minari(cls, dataset) -> Episodes:
        """From a loaded ``minari.MinariDataset``."""
        meta = dataset.storage.metadata
        spec = dataset.spec.env_spec
        eps = [dict(observations=e.observations, actions=e.actions, rewards=e.rewards,
                    terminations=e.terminations, truncations=e.truncations)
               for e in dataset.iterate_episodes()]
        if not eps:
            raise ValueError(f"dataset {dataset.spec.dataset_id!r} is empty: it holds no episodes")
        return cls.from_episode_list(
            eps, dataset.observation_space, dataset.action_space,
            ref_min_score=meta.get("ref_min_score"), ref_max_score=meta.get("ref_max_score"),
            env_id=spec.id if spec is not None else None,
            env_kwargs=dict(spec.kwargs) if spec is not None else {},
            dataset_id=dataset.spec.dataset_id)

    # -- views -----------------------------------------------------------------------------
    @property
    def env_observation_space(self) -> gym.Space:
        """The env's observation space (a Dict/Tuple one for flattened data)."""
        return self.composite_space or self.observation_space

    @property
    def num_episodes(self) -> int:
        return len(self.offsets) - 1

    @property
    def num_steps(self) -> int:
        return int(self.offsets[-1])

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def episode_index(self) -> np.ndarray:
        """[N] episode of each step."""
        return np.repeat(np.arange(self.num_episodes), self.lengths)

    @property
    def timesteps(self) -> np.ndarray:
        """[N] step number within its episode."""
        return np.arange(self.num_steps) - np.repeat(self.offsets[:-1], self.lengths)

    def episode_returns(self) -> np.ndarray:
        """[E] undiscounted return of each episode."""
        return np.add.reduceat(self.rewards.astype(np.float64), self.offsets[:-1])

    def returns_to_go(self, gamma: float = 1.0) -> np.ndarray:
        """[N] Σ_{t'>=t} γ^(t'-t) r_t' within each episode (float32)."""
        r = self.rewards.astype(np.float64)
        if gamma == 1.0:
            cs = np.cumsum(r)
            end = cs[self.offsets[1:] - 1]
            return (np.repeat(end, self.lengths) - cs + r).astype(np.float32)
        out = np.empty_like(r)
        for s, e in zip(self.offsets[:-1], self.offsets[1:]):
            acc = 0.0
            for i in range(e - 1, s - 1, -1):
                acc = r[i] + gamma * acc
                out[i] = acc
        return out.astype(np.float32)

    def observation_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std of the observations (float32; std floored at 1e-6)."""
        x = self.observations.reshape(self.num_steps, -1).astype(np.float64)
        return x.mean(0).astype(np.float32), np.maximum(x.std(0), 1e-6).astype(np.float32)

    def normalized_score(self, returns) -> np.ndarray:
        """Returns -> normalised score (0 = random, 1 = expert) from the reference scores."""
        return normalized_score(returns, self.ref_min_score, self.ref_max_score, self.dataset_id)

    # -- checks -----------------------------------------------------------------------------
    def validate(self) -> None:
        """Clear errors for NaN/inf values and inconsistent lengths."""
        n = self.num_steps
        for name in ("observations", "actions", "rewards"):
            arr = getattr(self, name)
            if len(arr) != n:
                raise ValueError(f"{name} has {len(arr)} rows but the episodes hold {n} steps")
            if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
                bad = np.unique(self.episode_index[~np.isfinite(arr.reshape(n, -1)).all(1)])
                raise ValueError(
                    f"{self.dataset_id or 'dataset'}: {name} contain NaN or inf in episode(s) "
                    f"{bad[:10].tolist()}{' ...' if len(bad) > 10 else ''}; drop or repair them "
                    "(e.g. episodes.select(mask)) before training")

    def select(self, keep: np.ndarray) -> Episodes:
        """A new Episodes with only the episodes where ``keep`` [E] is True."""
        keep = np.asarray(keep, bool)
        idx = np.concatenate([np.arange(s, e) for s, e, k in
                              zip(self.offsets[:-1], self.offsets[1:], keep) if k] or [[]]).astype(np.int64)
        lengths = self.lengths[keep]
        return Episodes(
            self.observations[idx], self.actions[idx], self.rewards[idx], self.terminations[idx],
            self.truncations[idx], np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            self.final_observations[keep], self.observation_space, self.action_space,
            self.ref_min_score, self.ref_max_score, self.env_id, self.dataset_id, self.env_kwargs,
            self.composite_space)

    def check_actions(self) -> None:
        """Raise if the data's actions lie outside its action space: a bounded Box (a tanh head
        cannot reach them, and training on them would fit silently wrong targets) or a
        Discrete / MultiDiscrete one (an index off the categorical head's table)."""
        sp = self.action_space
        if isinstance(sp, gym.spaces.Discrete | gym.spaces.MultiDiscrete) and len(self.actions):
            a = np.asarray(self.actions)
            whole = bool((a == np.round(a)).all())  # 1.5 would be truncated silently
            if isinstance(sp, gym.spaces.Discrete):
                ok = (a.shape[1:] in ((), (1,))) and bool(((a >= sp.start) & (a < sp.start + sp.n)).all())
            else:
                ok = a.shape[1:] == sp.shape and bool(((a >= sp.start) & (a < sp.start + sp.nvec)).all())
            ok = ok and whole
            if not ok:
                raise ValueError(
                    f"actions of {self.dataset_id} do not fit its action space {sp} (shape {a.shape[1:]}, values "
                    f"{a.min()}..{a.max()}); record the dataset with the env's own action space, or map the actions "
                    "into it before training")
            return
        if not isinstance(sp, gym.spaces.Box) or not len(self.actions):
            return
        a = self.actions.reshape(len(self.actions), -1)
        low, high = np.broadcast_to(sp.low, sp.shape).ravel(), np.broadcast_to(sp.high, sp.shape).ravel()
        tol = 1e-6 * np.maximum(1.0, np.abs(np.where(np.isfinite(high), high, 0)))
        bad = (a < low - tol) | (a > high + tol)
        if bad.any():
            raise ValueError(
                f"{int(bad.any(1).sum())} action(s) of {self.dataset_id} lie outside its action space "
                f"(range {a.min():.4g}..{a.max():.4g}, bounds {low.min():.4g}..{high.max():.4g}); clip them "
                "to the bounds (Episodes.actions = np.clip(...)) or record the dataset with the right space")

    def check_spaces(self, observation_space: gym.Space, action_space: gym.Space) -> None:
        """Raise if an env's spaces do not match the data's."""
        obs_ok = spaces_match(self.observation_space, flat_observation_space(observation_space))
        for what, ok, theirs, mine in (("observation", obs_ok, observation_space, self.env_observation_space),
                                       ("action", spaces_match(self.action_space, action_space), action_space,
                                        self.action_space)):
            if not ok:  # compared flat, shown as the env gives them
                raise ValueError(
                    f"the env's {what} space {theirs} does not match the dataset's {mine} "
                    f"({self.dataset_id}); evaluate in the env the data came from "
                    f"({self.env_id}) or pass a matching --env")

    def summary(self) -> dict:
        ret = self.episode_returns()
        out = dict(dataset=self.dataset_id, env=self.env_id, episodes=self.num_episodes,
                   steps=self.num_steps, mean_return=float(ret.mean()),
                   max_return=float(ret.max()), mean_length=float(self.lengths.mean()))
        if self.ref_min_score is not None and self.ref_max_score is not None:
            out["normalized_score"] = float(self.normalized_score(ret).mean())
        return out


def normalized_score(returns, ref_min: float | None, ref_max: float | None,
                     dataset_id: str | None = None) -> np.ndarray:
    """(R - ref_min) / (ref_max - ref_min): 0 = random, 1 = expert (x100 for D4RL tables)."""
    if ref_min is None or ref_max is None:
        raise ValueError(
            f"dataset {dataset_id or ''} has no reference scores (ref_min_score/ref_max_score); "
            "pass them (--set ref_min_score=... ref_max_score=...) or record the dataset with "
            "`rl-seq datasets make`, which sets them")
    return (np.asarray(returns, np.float64) - ref_min) / (ref_max - ref_min)


def spaces_match(a: gym.Space, b: gym.Space) -> bool:
    if type(a) is not type(b) or a.shape != b.shape:
        return False
    if isinstance(a, gym.spaces.Box):
        return bool(np.allclose(a.low, b.low) and np.allclose(a.high, b.high))
    if isinstance(a, gym.spaces.Discrete):
        return a.n == b.n and a.start == b.start
    if isinstance(a, gym.spaces.MultiDiscrete):
        return bool(np.array_equal(a.nvec, b.nvec))
    return True


COMPOSITE = (gym.spaces.Dict, gym.spaces.Tuple)
FLAT_LEAVES = (gym.spaces.Box, gym.spaces.Discrete, gym.spaces.MultiDiscrete, gym.spaces.MultiBinary)


def _leaves(space: gym.Space, obs=None, path: str = "") -> list[tuple[str, gym.Space, object]]:
    """(path, leaf space, leaf value) of a composite space in flatten order (values None
    without ``obs``)."""
    if isinstance(space, gym.spaces.Dict):
        if obs is not None and not isinstance(obs, dict):
            raise ValueError(f"observation{path} is a {type(obs).__name__}, but the space is a Dict {space}")
        return [leaf for k, s in space.spaces.items()
                for leaf in _leaves(s, None if obs is None else _key(obs, k, path), f"{path}[{k!r}]")]
    if isinstance(space, gym.spaces.Tuple):
        if obs is not None and (not isinstance(obs, tuple | list) or len(obs) != len(space.spaces)):
            raise ValueError(f"observation{path} should be a tuple of {len(space.spaces)} parts for {space}, "
                             f"got {type(obs).__name__}")
        return [leaf for i, s in enumerate(space.spaces)
                for leaf in _leaves(s, None if obs is None else obs[i], f"{path}[{i}]")]
    return [(path, space, obs)]


def composite_leaves(space: gym.Space) -> list[gym.Space]:
    """The leaf spaces of a Dict/Tuple space, in flatten order."""
    return [leaf for _, leaf, _ in _leaves(space)]


def _key(obs: dict, k: str, path: str):
    if k not in obs:
        raise ValueError(f"observation{path} has no key {k!r} (keys: {', '.join(map(str, obs))}); "
                         "pass the env's observations as they come")
    return obs[k]


def flat_observation_space(space: gym.Space) -> gym.Space:
    """Dict and Tuple spaces -> one float32 Box (module docstring); others unchanged."""
    if not isinstance(space, COMPOSITE):
        return space
    for path, leaf, _ in _leaves(space):
        if not isinstance(leaf, FLAT_LEAVES):
            raise TypeError(
                f"observation{path} is {leaf}, which has no fixed-size vector form; rl_seq flattens Dict and "
                "Tuple observations of Box, Discrete, MultiDiscrete and MultiBinary leaves: drop or convert that "
                "key with a wrapper first (gymnasium.wrappers.FilterObservation; for a MiniGrid/BabyAI level, "
                "gym.make(\"rl_seq/MiniGrid-v0\", level=ID) drops the mission text)")
    flat = gym.spaces.flatten_space(space)
    return gym.spaces.Box(flat.low.astype(np.float32), flat.high.astype(np.float32), dtype=np.float32)


def box_dims(space: gym.Space) -> np.ndarray:
    """[n] bool over the flat observation: True where a dimension comes from a Box leaf (the
    dimensions normalisation statistics apply to; one-hot and bit dimensions are left as they
    are)."""
    if not isinstance(space, COMPOSITE):
        return np.ones(int(np.prod(space.shape)), bool)
    flat_observation_space(space)
    return np.concatenate([np.full(gym.spaces.flatdim(leaf), isinstance(leaf, gym.spaces.Box))
                           for _, leaf, _ in _leaves(space)])


def _flat_leaf(path: str, leaf: gym.Space, x) -> np.ndarray:
    """A leaf's values [T, *leaf.shape] -> [T, flatdim] (float32)."""
    x = np.asarray(x)
    n = len(x)
    if x.shape[1:] != leaf.shape:
        raise ValueError(f"observation{path} has shape {x.shape[1:]} per step, but its space {leaf} has shape "
                         f"{leaf.shape}; check that the env or the dataset matches the one the agent was trained on")
    bad = ValueError(f"observation{path} holds values outside its space {leaf}; check that the env or the "
                     "dataset matches the one the agent was trained on")
    if isinstance(leaf, gym.spaces.Box):
        return x.reshape(n, -1).astype(np.float32)
    if isinstance(leaf, gym.spaces.MultiBinary):
        if not ((x == 0) | (x == 1)).all():
            raise bad
        return x.reshape(n, -1).astype(np.float32)
    if isinstance(leaf, gym.spaces.Discrete):
        sizes, raw = np.array([leaf.n]), x.reshape(n, 1) - leaf.start
    else:  # MultiDiscrete
        sizes, raw = leaf.nvec.ravel(), x.reshape(n, -1) - leaf.start.ravel()
    idx = raw.astype(np.int64)
    if idx.size and ((idx != raw) | (idx < 0) | (idx >= sizes)).any():  # fractions too
        raise bad
    out = np.zeros((n, int(sizes.sum())), np.float32)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    np.put_along_axis(out, idx + offsets, 1.0, 1)
    return out


def flatten_observations(space: gym.Space, obs) -> np.ndarray:
    """A batch of observations [T, ...] (for Dict/Tuple spaces the batched dict/tuple of leaf
    arrays a vector env or Minari gives) -> [T, n] float32 (composite spaces; others
    unchanged): ``gymnasium.spaces.flatten`` of each, at once."""
    if not isinstance(space, COMPOSITE):
        return np.asarray(obs)
    leaves = _leaves(space, obs)
    if not all(isinstance(leaf, FLAT_LEAVES) for _, leaf, _ in leaves):
        flat_observation_space(space)  # the error naming the leaf (not rebuilt per call: rollouts call this every step)
    steps = {path: np.shape(x)[0] if np.ndim(x) else None for path, _, x in leaves}
    if None in steps.values() or len(set(steps.values())) > 1:
        raise ValueError(f"the observation's parts hold different numbers of steps ({steps}); pass one batch of "
                         "observations, each part with the same leading length")
    return np.concatenate([_flat_leaf(path, leaf, x) for path, leaf, x in leaves], 1)


def is_single_observation(space: gym.Space, obs) -> bool:
    """Whether ``obs`` of a composite space is one observation (its first leaf has the leaf's
    shape) rather than a batch."""
    _, leaf, x = _leaves(space, obs)[0]
    return np.shape(x) == leaf.shape
