"""What every agent shares: the SB3-style ``predict`` contract (input checks, single or
batched observations), vectorised evaluation, save/load of ``{config, weights}``, and the
offline training loop (checkpoints, resume, Ctrl-C, periodic evaluation, logging).

An algorithm subclasses :class:`Agent` once (two levels at most) and supplies ``_build``,
``_act`` and ``learn``.
"""

from __future__ import annotations

import json
import logging
import math
import time
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

from rl_seq.config import TrainConfig, build, to_dict
from rl_seq.data.episodes import flat_observation_space, spaces_match
from rl_seq.runs import Run, progress, rng_state, seed_everything, set_rng_state, stop_on_interrupt

log = logging.getLogger(__name__)


def eval_seed(seed: int) -> int:
    """Seed of the first evaluation episode for a run seeded ``seed`` (fixed per run, apart
    from the training seeds)."""
    return 10_000 + 100 * seed


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
    save with its weights (reference scores, env id, target returns, ...)."""

    algo: str = ""
    config_class: type = TrainConfig
    online: bool = False  # trained in an env (learn(env=...)) rather than on a dataset

    def __init__(self, observation_space: gym.Space, action_space: gym.Space,
                 config: Any = None, meta: dict | None = None, **overrides) -> None:
        if config is None:
            config = self.config_class()
        if overrides:
            config = build(self.config_class, {**to_dict(config), **overrides})
        self.config = config
        self.observation_space = flat_observation_space(observation_space)
        self.action_space = action_space
        self.meta = dict(meta or {})
        d = config.device
        self.device = torch.device("cuda" if d == "auto" and torch.cuda.is_available() else
                                   ("cpu" if d == "auto" else d))
        if config.threads:
            torch.set_num_threads(config.threads)
        seed_everything(config.seed)  # as SB3: the seed fixes the initial weights too
        self.model = self._build().to(self.device)

    # -- to implement -------------------------------------------------------------------
    def _build(self) -> torch.nn.Module:
        raise NotImplementedError

    # -- training precision and compilation (config ``amp``, ``compile``) ------------------
    def autocast(self) -> torch.autocast:
        """Context for training forward passes: bf16 autocast when ``amp`` asks for it
        (``auto``: on CUDA only); the loss and the backward pass stay outside it."""
        on = self.config.amp == "bf16" or (self.config.amp == "auto" and self.device.type == "cuda")
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=on)

    def training_model(self) -> torch.nn.Module:
        """The model as training calls it: ``torch.compile``'d when ``compile`` asks for it
        (``auto``: on CUDA only). It shares the parameters of ``self.model``; acting and
        saving use ``self.model`` itself."""
        c = self.config.compile
        if c == "on" or (c == "auto" and self.device.type == "cuda"):
            return torch.compile(self.model)
        return self.model

    def _act(self, obs: torch.Tensor, state: Any, episode_start: np.ndarray,
             rewards: np.ndarray | None, deterministic: bool) -> tuple[np.ndarray, Any]:
        """obs [n, *obs_shape] on the device -> actions [n, ...] (numpy), new state."""
        raise NotImplementedError

    def _adopt_data(self, episodes) -> None:
        """What every offline agent takes from its dataset: a space check, the eval env,
        the reference scores (config overrides win) and the observation statistics."""
        cfg = self.config
        episodes.check_spaces(self.observation_space, self.action_space)
        episodes.check_actions()
        ref_min, ref_max = getattr(cfg, "ref_min_score", None), getattr(cfg, "ref_max_score", None)
        self.meta.update(
            env_id=episodes.env_id, env_kwargs=episodes.env_kwargs, dataset_id=episodes.dataset_id,
            ref_min_score=ref_min if ref_min is not None else episodes.ref_min_score,
            ref_max_score=ref_max if ref_max is not None else episodes.ref_max_score)
        emb = self.model.backbone.tokenizer.embed["obs"]
        if emb.kind == "box":
            emb.set_normalization(*episodes.observation_stats())

    # -- SB3's predict contract ---------------------------------------------------------
    def predict(self, observation, state: Any = None, episode_start: np.ndarray | None = None,
                deterministic: bool = True, rewards: np.ndarray | None = None):
        """Stable-Baselines3's ``predict``: observation [*obs_shape] or [n, *obs_shape];
        ``episode_start`` [n] (True on an episode's first observation); returns
        ``(actions, state)``. ``rewards`` [n], the rewards of the previous step, is for
        return-conditioned agents (see :meth:`wrap_env` for loops that cannot pass it)."""
        obs = np.asarray(observation)
        shape = self.observation_space.shape
        single = obs.shape == shape
        if single:
            obs = obs[None]
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
            actions, state = self._act(x, state, episode_start, rewards, deterministic)
        self.model.train(was_training)
        return (actions[0] if single else actions), state

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
        for what, mine, theirs in (("observation", self.observation_space, flat_observation_space(observation_space)),
                                   ("action", self.action_space, action_space)):
            if not spaces_match(mine, theirs):
                raise ValueError(f"{name}'s {what} space {theirs} does not match the agent's {mine}; "
                                 "evaluate in the env the agent was trained for")

    def evaluate(self, env: str | gym.vector.VectorEnv | None = None, episodes: int = 10,
                 seed: int = 10_000, deterministic: bool = True) -> EvalResult:
        """Run ``episodes`` episodes in parallel (one per sub-env, seeds seed..seed+N-1) and
        return their returns, lengths, normalised score and wall time."""
        if episodes < 1:
            raise ValueError(f"episodes must be >= 1, got {episodes}")
        own = not isinstance(env, gym.vector.VectorEnv)
        venv = self.make_env(env, episodes) if own else env
        n = venv.num_envs
        if n < episodes:
            raise ValueError(f"the vector env has {n} sub-envs; it needs one per episode ({episodes})")
        t0 = time.time()
        obs, _ = venv.reset(seed=[seed + i for i in range(n)])
        state, start = None, np.ones(n, bool)
        rewards = np.zeros(n)
        ret, length = np.zeros(n), np.zeros(n, int)
        done = np.zeros(n, bool)
        while not done[:episodes].all():
            act, state = self.predict(obs, state, start, deterministic, rewards=rewards)
            obs, rewards, term, trunc, _ = venv.step(act)
            ret += rewards * ~done
            length += ~done
            done |= term | trunc
            start = np.zeros(n, bool)  # finished envs autoreset; their steps are ignored
        if own:
            venv.close()
        ref = (self.meta.get("ref_min_score"), self.meta.get("ref_max_score"))
        ns = None if None in ref else ((ret[:episodes] - ref[0]) / (ref[1] - ref[0])).tolist()
        return EvalResult(ret[:episodes].tolist(), length[:episodes].tolist(), time.time() - t0,
                          ns, self.meta.get("target_return"))

    # -- save / load -----------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Writes ``config.yaml`` (algo, config, spaces, meta) and ``model.safetensors``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        doc = dict(algo=self.algo, config=to_dict(self.config),
                   observation_space=json.loads(serialize_space(self.observation_space)),
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
            raise FileNotFoundError(f"{path} holds no saved agent (config.yaml + model.safetensors)")
        doc = yaml.safe_load(cfg_file.read_text())
        klass = ALGOS[doc["algo"]]
        agent = klass(deserialize_space(json.dumps(doc["observation_space"])),
                      deserialize_space(json.dumps(doc["action_space"])),
                      build(klass.config_class, doc["config"]), doc.get("meta"))
        try:
            state = load_file(str(weights))
        except Exception as e:  # safetensors raises its own error types
            raise ValueError(f"{weights} is corrupt or truncated ({e}); re-save the agent") from None
        agent.model.load_state_dict(state)
        agent.algo = doc["algo"]
        return agent

    # -- SB3 loops that cannot pass rewards ------------------------------------------------
    def wrap_env(self, env):
        """Wrap a Gymnasium env or an SB3 VecEnv so that each step's rewards reach this
        agent's ``predict`` (SB3's ``evaluate_policy`` and ``model.predict`` loops never
        pass them). Return-conditioned agents need this in such loops."""
        from rl_seq.agents.reward_feed import wrap_env

        return wrap_env(self, env)


# -- the offline training loop, shared by the offline algorithms ---------------------------
def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices only (not biases, norms, embeddings' vectors)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    rest = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return [dict(params=decay, weight_decay=weight_decay), dict(params=rest, weight_decay=0.0)]


def warmup(steps: int) -> Callable[[int], float]:
    return lambda s: min(1.0, (s + 1) / max(1, steps))


def train_offline(agent: Agent, sampler, update: Callable[[dict], dict], optimizer, scheduler,
                  run: Run | None, steps: int, resume: bool = False, extra_state: dict | None = None) -> dict:
    """Run ``update(batch) -> metrics`` for ``steps`` steps with checkpoints, resume,
    Ctrl-C safety, periodic evaluation (in the data's env, when it names one) and logging.
    Returns ``{"last": ..., "best": ...}`` evaluations (dicts), the final ``step`` and the
    last step's training metrics (``train``)."""
    cfg = agent.config
    evaluate = None
    if agent.meta.get("env_id") and cfg.eval_episodes > 0:
        def evaluate() -> EvalResult:
            return agent.evaluate(episodes=cfg.eval_episodes, seed=eval_seed(cfg.seed))
    start, best, last = 0, None, None
    extra_state = extra_state or {}

    def checkpoint(step: int) -> None:
        if run is None:
            return
        run.save_checkpoint(dict(
            model=agent.model.state_dict(), optimizer=optimizer.state_dict(),
            scheduler=scheduler.state_dict(), step=step, sampler=sampler.get_state(),
            rng=rng_state(), best=json.dumps(best), last=json.dumps(last),
            extra={k: v.state_dict() for k, v in extra_state.items()}))

    if resume and run is not None and run.ckpt_path.exists():
        ck = run.load_checkpoint()
        agent.model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        sampler.set_state(ck["sampler"])
        set_rng_state(ck["rng"])
        for k, v in extra_state.items():
            v.load_state_dict(ck["extra"][k])
        start, best, last = ck["step"], json.loads(ck["best"]), json.loads(ck["last"])
        run.truncate_metrics(start)
        log.info("resumed from step %d", start)

    def do_eval(step: int) -> None:
        nonlocal best, last
        res = evaluate().to_dict()
        res["step"] = step
        last = res
        key = "normalized_score" if res["normalized_score"] is not None else "mean_return"
        if best is None or res[key] > best[key]:
            best = res
        if run is not None:
            run.log(step, "eval", {k: v for k, v in res.items() if k not in ("returns", "lengths")})

    agent.model.train()
    bar, task = progress(steps, f"{agent.algo} training", start)
    step, t0 = start, time.time()
    every = max(1, (steps - start) // 10)  # without a terminal: a log line every 10%
    with stop_on_interrupt() as stop, bar:
        for step in range(start + 1, steps + 1):
            batch = sampler.sample(agent.config.batch_size)
            metrics = update(batch)
            if step % cfg.log_every == 0 or step == steps:
                metrics["lr"] = scheduler.get_last_lr()[0]
                if not all(math.isfinite(v) for v in metrics.values()):
                    raise FloatingPointError(
                        f"non-finite training metrics at step {step}: {metrics}; lower the "
                        "learning rate or check the data for extreme values")
                if run is not None:
                    run.log(step, "train", metrics)
                bar.update(task, info=" ".join(f"{k}={v:.4g}" for k, v in metrics.items() if k != "lr"))
            if evaluate is not None and cfg.eval_every and step % cfg.eval_every == 0 and step != steps:
                do_eval(step)
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                checkpoint(step)
            bar.update(task, completed=step)
            if not bar.console.is_terminal and ((step - start) % every == 0 or step == steps):
                rate = (step - start) / max(time.time() - t0, 1e-9)
                ev = "" if last is None else f", last eval {last.get('normalized_score') or last['mean_return']:.3f}"
                log.info("%s: step %d/%d, %.1f steps/s, loss %.4g%s", agent.algo, step, steps, rate,
                         metrics.get("loss", float("nan")), ev)
            if stop.requested:
                checkpoint(step)
                log.warning("interrupted: checkpoint saved at step %d; continue with --resume", step)
                raise KeyboardInterrupt
    if evaluate is not None and (last is None or last.get("step") != steps):
        do_eval(steps)
    checkpoint(steps)
    return dict(last=last, best=best, step=steps, train=metrics if steps > start else None)
