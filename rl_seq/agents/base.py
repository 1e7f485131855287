"""What every agent shares: the interface (``learn``, the SB3-style ``predict`` contract with
its input checks, ``evaluate``, ``save`` / ``load``) and what offline agents take from their
data. Training itself runs on :mod:`rl_seq.engine`.

An algorithm subclasses :class:`Agent` once (two levels at most) and supplies ``_build``
(the model), ``_act`` (one acting step) and the engine's protocol: ``prepare`` (its
samplers, optimisers, envs), ``collect`` (one iteration's batches) and ``loss``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import yaml
from minari.serialization import deserialize_space, serialize_space
from safetensors.torch import load_file, save_file

from rl_seq import engine
from rl_seq.config import EVAL_SEED, ConfigError, OfflineConfig, TrainConfig, build, to_dict
from rl_seq.data.episodes import (
    COMPOSITE,
    Episodes,
    box_dims,
    composite_leaves,
    flat_observation_space,
    flatten_observations,
    is_single_observation,
    normalized_score,
    spaces_match,
)
from rl_seq.distributed import world
from rl_seq.engine import Collected, Plan
from rl_seq.runs import seed_everything
from rl_seq.tokenizer import is_image_space

log = logging.getLogger(__name__)


@dataclass
class EvalResult:
    """One evaluation: N episodes run in parallel with fixed seeds."""

    returns: list[float]
    lengths: list[int]
    seconds: float
    normalized_scores: list[float] | None = None
    target_return: float | None = None

    @property
    def mean_return(self) -> float:
        return float(np.mean(self.returns))

    @property
    def std_return(self) -> float:
        return float(np.std(self.returns))

    @property
    def normalized_score(self) -> float | None:
        return None if self.normalized_scores is None else float(np.mean(self.normalized_scores))

    def to_dict(self) -> dict:
        ns = self.normalized_score
        return dict(mean_return=self.mean_return, std_return=self.std_return,
                    normalized_score=ns, normalized_score_100=None if ns is None else 100 * ns,
                    episodes=len(self.returns), mean_length=float(np.mean(self.lengths)),
                    seconds=self.seconds, target_return=self.target_return,
                    returns=self.returns, lengths=self.lengths)


class Agent:
    """Base of all agents. ``meta`` holds what the agent learnt from its data and must
    save with its weights (reference scores, env id, target returns, ...). ``algo`` is the
    registry name it saves under (``rl_seq.make_agent`` passes the preset's; the class
    attribute is the default)."""

    algo: str = ""
    config_class: type = TrainConfig
    online: bool = False  # trained in an env (learn(env=...)) rather than on a dataset
    in_context: bool = False  # trained on in-context data (ad, dpt), evaluated on held-out tasks
    data_parallel: bool = True  # trains under torchrun (DDP); False: one process only
    progress_metrics: tuple[str, ...] | None = None  # shown in the progress bar (None: all)

    def __init__(self, observation_space: gym.Space, action_space: gym.Space,
                 config: Any = None, meta: dict | None = None, algo: str | None = None, **overrides) -> None:
        if config is None:
            config = self.config_class()
        if overrides:
            config = build(self.config_class, {**to_dict(config), **overrides})
        self.config = config
        self.algo = algo or type(self).algo
        self.reward_feed = None  # set by wrap_env: rewards for loops that cannot pass them
        self.env_observation_space = observation_space  # a Dict/Tuple space is kept for predict's inputs
        self.observation_space = flat_observation_space(observation_space)  # what the model and buffers see
        self.action_space = action_space
        self.meta = dict(meta or {})
        self.train_env = None  # an env training opened (online agents), closed by close()
        self.device = engine.check_device(config)
        if config.threads:
            torch.set_num_threads(config.threads)
        seed_everything(config.seed)  # as SB3: the seed fixes the initial weights too
        self.model = self._build().to(self.device)

    @property
    def model_observation_space(self) -> gym.Space:
        """The space the model embeds: the flat one, or a Dict/Tuple space with image leaves
        (each through its own CNN; :class:`rl_seq.tokenizer.SpaceEmbedding`)."""
        space = self.env_observation_space
        if isinstance(space, COMPOSITE) and any(is_image_space(leaf) for leaf in composite_leaves(space)):
            return space
        return self.observation_space

    @classmethod
    def load_data(cls, dataset_id: str, download: bool = False) -> Episodes:
        """The training data of a dataset id, as this algorithm reads it (offline agents)."""
        from rl_seq.data import load_episodes

        return load_episodes(dataset_id, download)

    # -- to implement -------------------------------------------------------------------
    def _build(self) -> torch.nn.Module:
        raise NotImplementedError

    def _act(self, obs: torch.Tensor, state: Any, episode_start: np.ndarray, rewards: np.ndarray | None,
             deterministic: bool, acting: Any) -> tuple[np.ndarray, Any]:
        """obs [n, *obs_shape] on the device -> actions [n, ...] (numpy), new state. ``acting``:
        the checked acting settings of a new state (``state`` None), else None."""
        raise NotImplementedError

    # -- training: the engine's Algorithm protocol (rl_seq.engine) ---------------------------
    def prepare(self, steps: int, data: Episodes | None, env: str | None) -> Plan:
        """Build what training needs (samplers, optimisers, envs) for ``steps`` in the
        algorithm's unit, on ``data`` (offline; loaded, its env checked) or in ``env``
        (online), and return the engine's plan."""
        raise NotImplementedError

    def collect(self, step: int) -> Collected:
        """One iteration's data, after ``step`` steps."""
        raise NotImplementedError

    def loss(self, model: Callable[..., Any], batch: Any) -> tuple[torch.Tensor, dict]:
        """``batch`` -> (loss, metrics); ``model`` is ``self.model`` as training calls it
        (under DDP / ``torch.compile`` / autocast: cast its outputs to float)."""
        raise NotImplementedError

    def after_update(self) -> None:
        """After each optimiser step (target networks)."""

    def close(self) -> None:
        """Release what ``prepare`` opened (training envs)."""
        if self.train_env is not None:
            self.train_env.close()
            self.train_env = None

    def setup_from_data(self, episodes: Episodes) -> None:
        """What every offline agent takes from its dataset: a space check, the eval env,
        the reference scores (config overrides win) and the observation statistics."""
        cfg = self.config
        episodes.check_spaces(self.observation_space, self.action_space)
        episodes.check_actions()
        ref_min, ref_max = (cfg.ref_min_score, cfg.ref_max_score) if isinstance(cfg, OfflineConfig) else (None, None)
        self.meta.update(
            env_id=episodes.env_id, env_kwargs=episodes.env_kwargs, dataset_id=episodes.dataset_id,
            ref_min_score=ref_min if ref_min is not None else episodes.ref_min_score,
            ref_max_score=ref_max if ref_max is not None else episodes.ref_max_score)
        self.set_observation_stats(*episodes.observation_stats())

    def set_observation_stats(self, mean: np.ndarray, std: np.ndarray) -> None:
        """Normalise the observations' Box dimensions by ``mean``/``std`` [n] (a composite
        space's one-hot and bit dimensions stay as they are)."""
        box = box_dims(self.env_observation_space)
        self.model.backbone.tokenizer.set_observation_stats(np.where(box, mean, 0.0), np.where(box, std, 1.0))

    def final_evaluations(self) -> dict:
        """Evaluations a finished run adds to its ``eval.json`` beyond last and best."""
        return {}

    # -- training (one interface; the loop is rl_seq.engine) ---------------------------
    def learn(self, source: Any = None, steps: int | None = None, *, dataset: Any = None, env: str | None = None,
              out: str | Path | None = None, resume: bool = False, **options) -> dict:
        """Train for ``steps`` (default ``config.steps``): gradient steps on ``dataset`` for
        offline agents (a Minari id or :class:`Episodes`; ``env``: evaluate in this env id
        instead of the dataset's), env steps in ``env`` (a Gymnasium id) for online agents.
        ``source`` is either, positionally. Under torchrun, offline training is data-parallel
        (see :mod:`rl_seq.engine`). With ``out`` the run is a run folder (metrics,
        checkpoints, final model, ``eval.json``, plot); ``resume`` continues it from its
        checkpoint. ``options`` go to the algorithm (``odt``: ``online_steps``). Returns
        ``last``/``best`` evaluations (dicts), ``step``, ``train``
        (the last logged metrics), ``data`` (the dataset's summary) and ``run``."""
        if self.online:
            env = env if env is not None else source
            if dataset is not None:
                from rl_seq.agents import algos_that

                raise ValueError(f"{self.algo} trains online in an env and reads no dataset; drop the dataset "
                                 f"(or train an offline algorithm on it: {algos_that('online', False)})")
            if not isinstance(env, str):
                raise TypeError(f"{self.algo} trains online: pass a Gymnasium env id, not {type(env).__name__}")
            data = None
        else:
            data = self.offline_data(dataset if dataset is not None else source, env)
        if world()[1] > 1 and not self.data_parallel:  # checked before the process group is joined
            from rl_seq.agents import algos_that

            raise ValueError(f"{self.algo} trains in one process; torchrun/DDP is for {algos_that('data_parallel')} "
                             "(run many runs at once with `rl-seq sweep`)")
        steps = self.config.steps if steps is None else steps
        if steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        return engine.train(self, steps, data, env, out, resume, **options)

    def offline_data(self, dataset: Any, env: str | None) -> Episodes:
        """``learn``'s dataset (an id or the data :meth:`load_data` gives), loaded and checked
        against ``env`` (the evaluation env, when given) or its own env."""
        if dataset is None:
            raise ValueError(f"{self.algo} trains offline: pass a dataset (a Minari id or Episodes)")
        data = self.load_data(dataset) if isinstance(dataset, str) else dataset
        if env is not None:
            with gym.make(env) as e:
                data.check_spaces(e.observation_space, e.action_space)
        elif data.env_id and self.config.eval_episodes > 0:  # found now, not at the first evaluation
            try:
                gym.make(data.env_id, **(data.env_kwargs or {})).close()
            except (gym.error.Error, ImportError, ModuleNotFoundError) as e:
                raise ValueError(f"cannot make {data.dataset_id}'s evaluation env {data.env_id!r}: {e}; install "
                                 "what it needs, or train without evaluations (--set eval_episodes=0)") from None
        return data

    def _data_info(self, episodes: Episodes, env: str | None) -> dict:
        """An offline run's ``Plan.info``: its dataset, eval env and the data's summary row."""
        if env is not None:  # evaluate in this env rather than the dataset's
            self.meta.update(env_id=env, env_kwargs={})
        s = episodes.summary()
        row = dict(mean_return=s["mean_return"], std_return=float(episodes.episode_returns().std()),
                   normalized_score=s.get("normalized_score"), episodes=s["episodes"], step="")
        return dict(dataset=episodes.dataset_id, env=self.meta.get("env_id"), data=row)

    # -- acting settings --------------------------------------------------------------------
    def default_acting(self) -> Any:
        """The agent's acting settings (an instance of ``acting_class``, from its config and
        data), or None for an agent that has none."""
        return None

    def acting_settings(self, acting: Any = None, **fields) -> Any:
        """The default acting settings with ``acting`` (a dict or an ``acting_class``) and
        ``fields`` applied, checked. The built model and its config are not touched."""
        if dataclasses.is_dataclass(acting):
            acting = dataclasses.asdict(acting)
        if acting is not None and not isinstance(acting, dict):
            raise ValueError(f"acting settings must be a dict (e.g. {{'mode': 'window'}}) or the agent's acting "
                             f"settings object, got {acting!r}")
        given = dict(acting or {})
        given.update({k: v for k, v in fields.items() if v is not None})
        default = self.default_acting()
        if default is None:
            if given:
                raise ValueError(f"{self.algo} has no acting settings (got {', '.join(given)})")
            return None
        names = [f.name for f in dataclasses.fields(default)]
        unknown = [k for k in given if k not in names]
        if unknown:
            raise ValueError(f"{unknown[0]!r} is not an acting setting of {self.algo}; its acting settings are "
                             f"{', '.join(names)} (the rest was fixed by training: train again to change it)")
        return build(type(default), {**dataclasses.asdict(default), **given})  # typed and checked as configs are

    # -- SB3's predict contract ---------------------------------------------------------
    def predict(self, observation, state: Any = None, episode_start: np.ndarray | None = None,
                deterministic: bool = True, rewards: np.ndarray | None = None, acting: Any = None):
        """Stable-Baselines3's ``predict``: observation [*obs_shape] or [n, *obs_shape];
        ``episode_start`` [n] (True on an episode's first observation); returns
        ``(actions, state)``. ``rewards`` [n], the rewards of the previous step, is for
        return-conditioned agents (see :meth:`wrap_env` for loops that cannot pass it).
        ``acting`` (a dict or the agent's acting settings, :meth:`acting_settings`) starts a new
        acting state (``state=None``), which keeps them."""
        if acting is not None and state is not None:
            raise ValueError("acting settings start a new acting state: pass them with state=None (the state "
                             "keeps them)")
        settings = self.acting_settings(acting) if state is None else None
        shape = self.observation_space.shape
        obs, single = self.flat_observations(observation)
        if obs.shape[1:] != shape:
            raise ValueError(
                f"observation has shape {np.asarray(observation).shape}, but this agent expects "
                f"{shape} (one observation) or (n_envs, {', '.join(map(str, shape))}) (a batch); "
                "check that the env matches the one the agent was trained on")
        n = obs.shape[0]
        if np.issubdtype(obs.dtype, np.floating) and not np.isfinite(obs).all():
            bad = sorted({int(i) for i in np.argwhere(~np.isfinite(obs.reshape(n, -1)))[:, 0]})
            raise ValueError(f"observation of env(s) {bad} holds NaN or inf; the agent's state is unchanged. "
                             "Check the env (or its wrappers) for the step that produced it")
        if episode_start is None:
            episode_start = np.full(n, state is None)
        episode_start = np.asarray(episode_start, bool).reshape(-1)
        if episode_start.shape[0] != n:
            raise ValueError(f"episode_start has {episode_start.shape[0]} entries for {n} observations")
        if rewards is not None:
            rewards = np.asarray(rewards, np.float64).reshape(-1)
        x = torch.as_tensor(obs, device=self.device)
        if x.is_floating_point():
            x = x.float()
        was_training = self.model.training
        self.model.eval()
        with torch.no_grad():
            actions, state = self._act(x, state, episode_start, rewards, deterministic, settings)
        self.model.train(was_training)
        return (actions[0] if single else actions), state

    def flat_observations(self, observation) -> tuple[np.ndarray, bool]:
        """The env's observation(s) as the model reads them: ``[n, *observation_space.shape]``
        (a Dict/Tuple space's dicts and tuples flattened) and whether one observation (not a
        batch) was given."""
        if isinstance(self.env_observation_space, COMPOSITE):
            single = is_single_observation(self.env_observation_space, observation)
            batch = _tree_map(lambda x: np.asarray(x)[None], observation) if single else observation
            return flatten_observations(self.env_observation_space, batch), single
        obs = np.asarray(observation)
        single = obs.shape == self.observation_space.shape
        return (obs[None] if single else obs), single

    # -- evaluation -----------------------------------------------------------------------
    def make_env(self, env_id: str | None = None, n: int = 1) -> gym.vector.VectorEnv:
        """A vector env of the agent's env (from its data's metadata unless given)."""
        env_id = env_id or self.meta.get("env_id")
        if env_id is None:
            raise ValueError("no environment to evaluate in: the dataset names none; pass --env ENV_ID")
        kwargs = self.meta.get("env_kwargs", {}) if env_id == self.meta.get("env_id") else {}
        try:
            env = gym.make_vec(env_id, num_envs=n, vectorization_mode="sync", **kwargs)
        except gym.error.Error as e:
            raise ValueError(f"cannot make env {env_id!r}: {e}") from None
        self.check_env(env.single_observation_space, env.single_action_space, env_id)
        return env

    def check_env(self, observation_space: gym.Space, action_space: gym.Space, name: str = "env") -> None:
        """Refuses an env whose spaces differ from the agent's (a Dict's keys in any order: the
        agent reads observations by key)."""
        observation_space = _keys_like(observation_space, self.env_observation_space)
        if not spaces_match(self.observation_space, flat_observation_space(observation_space)):
            raise ValueError(f"{name}'s observation space {observation_space} does not match the agent's "
                             f"{self.env_observation_space}; evaluate in the env the agent was trained for")
        if not spaces_match(self.action_space, action_space):
            raise ValueError(f"{name}'s action space {action_space} does not match the agent's {self.action_space}; "
                             "evaluate in the env the agent was trained for")

    def evaluate(self, env: str | gym.Env | gym.vector.VectorEnv | None = None, episodes: int = 10,
                 seed: int = EVAL_SEED, deterministic: bool = True, acting: Any = None,
                 **acting_fields) -> EvalResult:
        """Run ``episodes`` episodes, episode i from env seed ``seed + i``, and return their
        returns, lengths, normalised score and wall time. ``env``: an env id (default: the
        training data's env; all episodes at once, one sub-env each), a ``gymnasium.Env``
        (one episode after another) or a ``gymnasium.vector.VectorEnv`` (as many at once as
        it has sub-envs). The same seeds give the same episodes whichever is used.
        ``acting`` and ``acting_fields`` (``target_return=3600``, ``mode="window"``,
        ``decode="soft"``: the agent's :meth:`acting_settings`) change how it acts for these
        episodes only."""
        if episodes < 1:
            raise ValueError(f"episodes must be >= 1, got {episodes}")
        if seed < 0:
            raise ValueError(f"seed (of the first evaluation episode) must be >= 0, got {seed}")
        settings = self.acting_settings(acting, **acting_fields)
        if isinstance(env, gym.vector.VectorEnv):
            venv, own = env, False
            self.check_env(venv.single_observation_space, venv.single_action_space, "the vector env")
        elif isinstance(env, gym.Env):
            self.check_env(env.observation_space, env.action_space, str(env.spec.id if env.spec else "env"))
            venv, own = gym.vector.SyncVectorEnv([lambda: env]), False  # not closed: the env is the caller's
        else:
            venv, own = self.make_env(env, episodes), True
        n, t0 = venv.num_envs, time.time()
        returns, lengths = [], []
        try:
            for first in range(0, episodes, n):  # waves of n episodes
                k = min(n, episodes - first)
                ret, length = self._episodes(venv, [seed + first + i for i in range(n)], k, deterministic, settings)
                returns += ret
                lengths += length
        finally:
            if own:
                venv.close()
        ref = (self.meta.get("ref_min_score"), self.meta.get("ref_max_score"))
        ns = None if None in ref else normalized_score(returns, *ref).tolist()
        return EvalResult(returns, lengths, time.time() - t0, ns, getattr(settings, "target_return", None))

    def _episodes(self, venv: gym.vector.VectorEnv, seeds: list[int], k: int, deterministic: bool,
                  acting: Any) -> tuple[list[float], list[int]]:
        """One episode in each of the first ``k`` sub-envs (reset with ``seeds``)."""
        n = venv.num_envs
        obs, _ = venv.reset(seed=seeds)
        state, start = None, np.ones(n, bool)
        rewards = np.zeros(n)
        ret, length = np.zeros(n), np.zeros(n, int)
        done = np.zeros(n, bool)
        while not done[:k].all():
            act, state = self.predict(obs, state, start, deterministic, rewards=rewards,
                                      acting=acting if state is None else None)
            obs, rewards, term, trunc, _ = venv.step(act)
            ret += rewards * ~done
            length += ~done
            done |= term | trunc
            start = np.zeros(n, bool)  # finished envs autoreset; their steps are ignored
        return ret[:k].tolist(), length[:k].tolist()

    # -- save / load -----------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Writes ``config.yaml`` (algo, config, spaces, meta) and ``model.safetensors``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        doc = dict(algo=self.algo, config=to_dict(self.config),
                   observation_space=json.loads(serialize_space(self.env_observation_space)),
                   action_space=json.loads(serialize_space(self.action_space)),
                   meta=self.meta)
        weights = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        save_file(weights, str(path / ".model.safetensors.tmp"))
        (path / ".model.safetensors.tmp").replace(path / "model.safetensors")
        (path / "config.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Agent:
        from rl_seq.agents import ALGOS

        path = Path(path)
        if (path / "model" / "model.safetensors").exists():
            path = path / "model"  # a run folder
        cfg_file, weights = path / "config.yaml", path / "model.safetensors"
        if not cfg_file.exists() or not weights.exists():
            unfinished = (path / "checkpoints" / "last.pt").exists()
            raise FileNotFoundError(f"{path} holds no saved agent (config.yaml + model.safetensors)" + (
                "; it is an unfinished run: finish it with the same `rl-seq train ...` command plus --resume"
                if unfinished else ""))
        try:
            doc = yaml.safe_load(cfg_file.read_text())
        except yaml.YAMLError as e:
            raise ValueError(f"{cfg_file} is not valid YAML ({' '.join(str(e).split())}); re-save the agent") from None
        if not isinstance(doc, dict) or not {"algo", "config", "observation_space", "action_space"} <= set(doc):
            raise ValueError(f"{cfg_file} is not a saved agent's config (it needs algo, config, observation_space "
                             "and action_space); re-save the agent")
        if doc["algo"] not in ALGOS:
            raise ValueError(f"{cfg_file} names algorithm {doc['algo']!r}, which this rl_seq does not have "
                             f"({', '.join(ALGOS)}); load it with the version that saved it")
        klass = ALGOS[doc["algo"]]
        saved = {**klass.config_class.legacy_defaults, **doc["config"]}
        if saved.get("device") == "cuda" and not torch.cuda.is_available():  # trained on a GPU, loaded here
            log.info("%s was saved with device=cuda; this machine has none, so it loads on the CPU", path)
            saved["device"] = "auto"
        try:
            config = build(klass.config_class, saved)
        except ConfigError as e:
            raise ConfigError(f"{cfg_file}: {e}; restore the config.yaml saved with the weights") from None
        agent = klass(deserialize_space(json.dumps(doc["observation_space"])),
                      deserialize_space(json.dumps(doc["action_space"])), config, doc.get("meta"), algo=doc["algo"])
        try:
            state = load_file(str(weights))
        except Exception as e:  # safetensors raises its own error types
            raise ValueError(f"{weights} is corrupt or truncated ({e}); re-save the agent") from None
        try:
            agent.model.load_state_dict(state)  # (modules convert the layouts of older saves they know)
        except RuntimeError:
            problem = weights_mismatch(agent.model.state_dict(), state)
            raise ValueError(f"{weights} does not fit the model {cfg_file} describes: {problem}. Restore the "
                             "config.yaml saved with these weights, or load them with the rl_seq version that saved "
                             "them") from None
        return agent

    # -- SB3 loops that cannot pass rewards ------------------------------------------------
    def wrap_env(self, env):
        """Wrap a Gymnasium env or an SB3 VecEnv so that each step's rewards reach this
        agent's ``predict`` (SB3's ``evaluate_policy`` and ``model.predict`` loops never
        pass them). Return-conditioned agents need this in such loops."""
        from rl_seq.agents.reward_feed import wrap_env

        return wrap_env(self, env)


def weights_mismatch(expected: dict[str, torch.Tensor], saved: dict[str, torch.Tensor]) -> str:
    """What differs between a model's state dict and saved weights ('' when they fit): the
    first few missing and unexpected names and shape mismatches."""
    missing = [k for k in expected if k not in saved]
    extra = [k for k in saved if k not in expected]
    shapes = [f"{k} {tuple(saved[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
              if k in saved and saved[k].shape != v.shape]
    parts = []
    for what, items in (("missing from the weights", missing), ("not in the model", extra),
                        ("shapes differ (saved vs model)", shapes)):
        if items:
            more = f" and {len(items) - 3} more" if len(items) > 3 else ""
            parts.append(f"{what}: {', '.join(items[:3])}{more}")
    return "; ".join(parts)


# -- what the offline algorithms' optimisers share ---------------------------------------
def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices only (not biases, norms, embeddings' vectors)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    rest = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return [dict(params=decay, weight_decay=weight_decay), dict(params=rest, weight_decay=0.0)]


def fused(optimizer: type[torch.optim.Optimizer], params, **kwargs) -> torch.optim.Optimizer:
    """``optimizer(params, **kwargs)`` (Adam or AdamW) as one fused kernel where this torch has
    one for the parameters' device (CUDA; CPU from torch 2.4): the same update as the
    per-tensor loop, a few launches instead of four per parameter."""
    try:
        return optimizer(params, fused=True, **kwargs)
    except RuntimeError:  # no fused kernel for this device in this torch
        return optimizer(params, **kwargs)


def adamw(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (:func:`param_groups`), fused (:func:`fused`)."""
    return fused(torch.optim.AdamW, param_groups(model, weight_decay), lr=lr)


def warmup(steps: int) -> Callable[[int], float]:
    return lambda s: min(1.0, (s + 1) / max(1, steps))


def _tree_map(fn: Callable, obs):
    """``fn`` on every leaf of a (nested) dict / tuple observation."""
    if isinstance(obs, dict):
        return {k: _tree_map(fn, v) for k, v in obs.items()}
    if isinstance(obs, tuple | list):
        return tuple(_tree_map(fn, v) for v in obs)
    return fn(obs)


def _keys_like(space: gym.Space, like: gym.Space) -> gym.Space:
    """``space`` with its Dict keys (nested too) in ``like``'s order where both have the same keys."""
    if isinstance(space, gym.spaces.Dict) and isinstance(like, gym.spaces.Dict) and set(space) == set(like):
        return gym.spaces.Dict(OrderedDict((k, _keys_like(space[k], like[k])) for k in like))
    return space
