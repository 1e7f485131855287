"""The training engine: the one loop and the one optimiser step every algorithm trains through.

An algorithm is an object with a small interface (:class:`Algorithm`): ``prepare`` builds
what its training needs (samplers, optimisers, envs) and returns a :class:`Plan`; each
*iteration* ``collect(step)`` gathers data (offline: a batch from a sampler; online: a
rollout, or odt's trajectory) and hands back the batches to take an optimiser step on;
``loss(model, batch) -> (loss, metrics)`` scores one of them, calling ``model`` (the
algorithm's model as training runs it) for the forward pass. The engine owns everything
around it, the same way for every algorithm:

- **the optimiser step** (:class:`OptimiserStep`): the model's forward under bf16 autocast
  when ``amp`` asks for it (losses and the backward pass stay in float32), the model
  ``torch.compile``'d when ``compile`` does, wrapped in
  ``DistributedDataParallel`` under torchrun (gradients all-reduced), zero-grad, backward,
  gradient-norm clip, every optimiser's step, the scheduler, then ``after_update`` (target
  networks);
- the run folder (``out``): its lock, ``config.yaml``, metrics (JSONL; CSV at the end;
  TensorBoard and wandb when asked), the final model, ``eval.json`` and the plot;
- progress (a rich bar in a terminal, a log line every 10% otherwise), steps per second
  (``sps``) and a non-finite metrics check;
- periodic evaluation (every ``eval_every`` steps), named milestones (``Plan.milestones``;
  one at step 0 evaluates before training) and a final one, with fixed env seeds
  (:func:`rl_seq.config.eval_seed`). ``last`` is the final evaluation, ``best`` the one with
  the highest mean return;
- the resumable checkpoint (atomic, every ``checkpoint_every`` steps and at the end): weights,
  every object of ``Plan.state``, the RNGs of torch / numpy / Python, the step, the
  evaluations; ``resume`` restores all of it and drops the metrics logged after the
  checkpoint, so a run stopped at any point continues as if it had never stopped. What an
  algorithm keeps outside ``Plan.state`` is not restored: online, the envs restart at a fresh
  reset;
- SIGINT / SIGTERM: the iteration in progress finishes, a checkpoint is written, and
  :class:`KeyboardInterrupt` is raised (a second signal stops at once);
- the process group under torchrun (:mod:`rl_seq.distributed`): only rank 0 writes the run
  folder and evaluates; the checkpoint keeps every rank's sampler and RNG state.

Steps are the algorithm's unit (gradient steps offline, env steps online): an iteration
advances by one or more, and a schedule fires when the step count crosses a multiple of it.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from rl_seq import distributed as dist
from rl_seq.config import ConfigError, TrainConfig, eval_seed, to_dict
from rl_seq.runs import Run, load_checkpoint, progress, rng_state, set_rng_state, stop_on_interrupt

log = logging.getLogger(__name__)


@dataclass
class Optimiser:
    """What the one optimiser step needs from an algorithm."""

    optimizers: list[torch.optim.Optimizer]
    """Stepped in order after one backward pass (odt: the policy's, then its temperature's)."""
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    """Stepped after every optimiser step."""
    clip: float | None = None
    """Clip the gradient norm of the model's parameters to this (None: no clip)."""
    clipped: list[nn.Parameter] | None = None
    """The parameters ``clip`` applies to (None: all the model's; vdt: its actor's, not its
    critic's)."""


@dataclass
class Plan:
    """What one run trains: built by ``Algorithm.prepare``."""

    steps: int
    """The budget, in the algorithm's steps."""
    optimiser: Optimiser
    state: dict[str, Any] = field(default_factory=dict)
    """Objects a checkpoint keeps besides the model, each with ``state_dict()`` and
    ``load_state_dict()``: optimisers, schedulers, samplers, target networks, statistics."""
    per_rank: tuple[str, ...] = ()
    """Entries of ``state`` that differ between DDP ranks (each rank's sampler)."""
    info: dict = field(default_factory=dict)
    """What the run trains on (``dataset``, ``env``, ``init``) for ``config.yaml``; ``data``
    (the dataset's summary row) is returned, not written there."""
    milestones: dict[str, int] = field(default_factory=dict)
    """Named steps to evaluate at, reported under their name (``{"offline": N}``; a milestone
    at step 0 evaluates the policy training starts from)."""


@dataclass
class Collected:
    """One iteration's data: ``steps`` advanced, the ``batches`` to take an optimiser step on
    (an iterable, possibly lazy: PPO's epochs stop early on ``target_kl``) and the metrics of
    collecting (episode returns)."""

    steps: int
    batches: Iterable[Any]
    metrics: dict = field(default_factory=dict)


class Algorithm(Protocol):
    """What the engine drives. Every agent of :mod:`rl_seq.agents` is one."""

    algo: str
    config: TrainConfig
    device: torch.device
    model: nn.Module
    meta: dict
    progress_metrics: tuple[str, ...] | None

    def prepare(self, steps: int, data: Any, env: str | None, **options) -> Plan: ...

    def collect(self, step: int) -> Collected: ...

    def loss(self, model: Callable[..., Any], batch: Any) -> tuple[torch.Tensor, dict]: ...

    def after_update(self) -> None: ...

    def close(self) -> None: ...

    def evaluate(self, env: Any = None, episodes: int = 10, seed: int = 0) -> Any: ...

    def final_evaluations(self) -> dict: ...

    def save(self, path: str | Path) -> Path: ...


@functools.cache
def native_bf16(device_type: str) -> bool:
    """Whether the device computes bf16 matmuls natively: CUDA, or a CPU with AVX512-BF16 or
    AMX (read from /proc/cpuinfo; elsewhere False, so ``auto`` keeps float32)."""
    if device_type == "cuda":
        return True
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def uses_bf16(cfg: TrainConfig, device: torch.device) -> bool:
    """``amp``: ``bf16``, ``off``, or ``auto`` = bf16 where the device computes it natively."""
    return cfg.amp == "bf16" or (cfg.amp == "auto" and native_bf16(device.type))


def precision(cfg: TrainConfig, device: torch.device) -> torch.autocast:
    """The autocast context of training forwards (:func:`uses_bf16`)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=uses_bf16(cfg, device))


def compiled(cfg: TrainConfig, device: torch.device) -> bool:
    """Whether ``compile`` asks for ``torch.compile`` (``auto``: on CUDA only)."""
    return cfg.compile == "on" or (cfg.compile == "auto" and device.type == "cuda")


class OptimiserStep:
    """The one optimiser step of the code base (module docstring)."""

    def __init__(self, algo: Algorithm, opt: Optimiser) -> None:
        self.algo, self.opt = algo, opt
        cfg, dev = algo.config, algo.device
        model = algo.model
        if dist.distributed():  # gradients all-reduced over the ranks
            model = nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
        self.net = torch.compile(model) if compiled(cfg, dev) else model
        log.info("training forward: %s on %s (amp=%s), %s (compile=%s)",
                 "bf16 autocast" if uses_bf16(cfg, dev) else "float32", dev.type, cfg.amp,
                 "torch.compile" if self.net is not model else "eager", cfg.compile)

    def model(self, *args, **kwargs) -> Any:
        """What losses call: the algorithm's model under DDP / ``torch.compile`` (sharing its
        parameters), its forward under the ``amp`` autocast."""
        with precision(self.algo.config, self.algo.device):
            return self.net(*args, **kwargs)

    def __call__(self, batch: Any) -> dict:
        """One step on ``batch``; returns its metrics (0-d tensors, read only when logged)."""
        loss, metrics = self.algo.loss(self.model, batch)
        for o in self.opt.optimizers:
            o.zero_grad(set_to_none=True)
        loss.backward()
        out = {"loss": loss.detach(), **metrics}
        if self.opt.clip is not None:
            out["grad_norm"] = nn.utils.clip_grad_norm_(
                self.algo.model.parameters() if self.opt.clipped is None else self.opt.clipped, self.opt.clip)
        out["lr"] = self.opt.optimizers[0].param_groups[0]["lr"]
        for o in self.opt.optimizers:
            o.step()
        if self.opt.scheduler is not None:
            self.opt.scheduler.step()
        self.algo.after_update()
        return out


def iterate(algo: Algorithm, step: OptimiserStep, at: int) -> tuple[int, dict]:
    """One iteration after ``at`` steps: collect, then an optimiser step per batch. Returns the
    steps advanced and the metrics (collection's, and the mean of the steps')."""
    got = algo.collect(at)
    sums: dict[str, Any] = {}
    n = 0
    for batch in got.batches:
        for k, v in step(batch).items():
            sums[k] = sums.get(k, 0.0) + v
        n += 1
    return got.steps, {**{k: v / n for k, v in sums.items()}, **got.metrics}


def _crossed(step: int, prev: int, every: int) -> bool:
    return bool(every) and step // every != prev // every


def check_device(cfg: TrainConfig) -> torch.device:
    """The device ``cfg.device`` names, refused with the fix when this machine has none."""
    if cfg.device == "cuda" and not torch.cuda.is_available():
        why = "this torch is a CPU build" if torch.version.cuda is None else "no CUDA GPU is visible"
        raise ConfigError(f"device=cuda, but {why}; use --set device=cpu (or auto), or install a CUDA build of torch "
                          "on a GPU machine")
    return torch.device("cuda" if cfg.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu")


def train(algo: Algorithm, steps: int, data: Any = None, env: str | None = None, out: str | Path | None = None,
          resume: bool = False, **options) -> dict:
    """Train ``algo`` for ``steps`` (see the module docstring) on ``data`` (offline) or in
    ``env`` (online). Returns ``last``, ``best`` and the milestones' evaluations (dicts or
    None), the final ``step``, the last logged training metrics (``train``), the data's
    summary row (``data``) and the run folder (``run``)."""
    owns_group, device = dist.init(algo.device, algo.config.seed)
    if device != algo.device:  # this rank's own GPU
        algo.device = device
        algo.model.to(device)
    run = None
    try:
        plan = algo.prepare(steps, data, env, **options)
        if plan.steps < 1:
            raise ValueError(f"nothing to train: {algo.algo} was asked for {plan.steps} steps; give steps >= 1")
        cfg = algo.config
        if out is not None and dist.world()[0] == 0:
            info = {k: v for k, v in plan.info.items() if k != "data"}
            run = Run(out, dict(algo=algo.algo, **info, config=to_dict(cfg)), resume=resume, wandb=cfg.wandb,
                      wandb_project=cfg.wandb_project, tensorboard=cfg.tensorboard)
            log.info("run folder: %s", run.dir)
        result = _loop(algo, plan, run, resume, None if out is None else Path(out))
        if run is not None:
            _finish(algo, run, result, plan)
        return result
    finally:
        algo.close()
        if run is not None:
            run.close()
        if owns_group:
            torch.distributed.destroy_process_group()


class _Evaluations:
    """``last``, ``best`` and the milestones' evaluations of a run (rank 0 only)."""

    def __init__(self, algo: Algorithm, run: Run | None) -> None:
        cfg = algo.config
        self.algo, self.run = algo, run
        self.can = bool(algo.meta.get("env_id")) and cfg.eval_episodes > 0 and dist.world()[0] == 0
        self.found: dict[str, dict | None] = dict(last=None, best=None)

    def evaluate(self, step: int, kind: str = "eval") -> dict | None:
        """Evaluate now (``kind``: ``eval`` updates last / best; a milestone's name records it
        under that name). None where this rank does not evaluate."""
        if not self.can:
            return None
        cfg = self.algo.config
        res = self.algo.evaluate(episodes=cfg.eval_episodes, seed=eval_seed(cfg.seed)).to_dict()
        res["step"] = step
        if self.run is not None:
            self.run.log(step, kind, {k: v for k, v in res.items() if k not in ("returns", "lengths")})
        if kind == "eval":
            self.found["last"] = res
            best = self.found["best"]
            if best is None or res["mean_return"] > best["mean_return"]:
                self.found["best"] = res
        else:
            self.found[kind] = res
            log.info("%s: mean return %.4g at step %d", kind, res["mean_return"], step)
        return res

    def milestones(self, milestones: dict[str, int], prev: int, step: int) -> None:
        """Evaluate the milestones crossed from ``prev`` to ``step``."""
        for name, at in milestones.items():
            if prev < at <= step:
                self.evaluate(step, name)


class _Checkpoints:
    """The run's resumable checkpoint: written by rank 0, with every rank's streams."""

    def __init__(self, algo: Algorithm, plan: Plan, run: Run | None, out: Path | None, ev: _Evaluations) -> None:
        self.algo, self.plan, self.run, self.out, self.ev = algo, plan, run, out, ev
        self.shared = [k for k in plan.state if k not in plan.per_rank]

    def save(self, step: int) -> None:
        if self.out is None:
            return
        plan = self.plan
        mine = dict(rng=rng_state(), **{k: plan.state[k].state_dict() for k in plan.per_rank})
        ranks = dist.gather(mine)  # every rank's streams (a collective: every rank calls it)
        if self.run is not None:
            self.run.save_checkpoint(dict(model=self.algo.model.state_dict(), step=step,
                                          evals=json.dumps(self.ev.found), ranks=ranks,
                                          **{k: plan.state[k].state_dict() for k in self.shared}))

    def restore(self) -> int:
        """Load the checkpoint into the model, ``Plan.state``, the RNGs and the evaluations;
        drop the metrics logged after it. Returns its step."""
        rank, size = dist.world()
        run, plan = self.run, self.plan
        ck = run.load_checkpoint() if run is not None else load_checkpoint(self.out / "checkpoints" / "last.pt")
        if len(ck["ranks"]) != size:
            raise ValueError(f"the checkpoint was written by {len(ck['ranks'])} process(es), this run has {size}; "
                             f"resume with the same number (--nproc {len(ck['ranks'])})")
        self.algo.model.load_state_dict(ck["model"])
        for k in self.shared:
            plan.state[k].load_state_dict(ck[k])
        for k in plan.per_rank:
            plan.state[k].load_state_dict(ck["ranks"][rank][k])
        set_rng_state(ck["ranks"][rank]["rng"])
        self.ev.found = json.loads(ck["evals"])
        if run is not None:
            run.truncate_metrics(ck["step"])
        log.info("resumed from step %d", ck["step"])
        return ck["step"]


def _train_metrics(metrics: dict, step: int, sps: float) -> dict:
    """One iteration's metrics as floats averaged over the ranks, with ``sps``; refused when
    any is not finite."""
    m = {**dist.mean_over_ranks({k: float(v) for k, v in metrics.items()}), "sps": sps}
    if not all(math.isfinite(v) for v in m.values()):
        raise FloatingPointError(f"non-finite training metrics at step {step}: {m}; lower the learning rate "
                                 "or check the data for extreme values")
    return m


def _loop(algo: Algorithm, plan: Plan, run: Run | None, resume: bool, out: Path | None) -> dict:
    cfg, total, rank = algo.config, plan.steps, dist.world()[0]
    ev = _Evaluations(algo, run)
    ckpt = _Checkpoints(algo, plan, run, out, ev)
    start = ckpt.restore() if resume and out is not None else 0
    if not start and not resume:
        ev.milestones(plan.milestones, -1, 0)  # a milestone at step 0: the policy training starts from
    step_fn = OptimiserStep(algo, plan.optimiser)
    algo.model.train()
    bar, task = progress(total, f"{algo.algo} training", start, disable=rank > 0)
    step, metrics, t0 = start, None, time.time()
    every = max(1, (total - start) // 10)  # without a terminal: a log line every 10%
    with stop_on_interrupt() as stop, bar:
        while step < total:
            prev = step
            n, m = iterate(algo, step_fn, step)
            step += n
            sps = (step - start) / max(time.time() - t0, 1e-9)
            if _crossed(step, prev, cfg.log_every) or step >= total:
                metrics = _train_metrics(m, step, sps)
                if run is not None:
                    run.log(step, "train", metrics)
                show = algo.progress_metrics or [k for k in metrics if k not in ("lr", "sps")]
                bar.update(task, info=" ".join(f"{k}={metrics[k]:.4g}" for k in show if k in metrics))
            ev.milestones(plan.milestones, prev, step)
            if _crossed(step, prev, cfg.eval_every) and step < total:
                ev.evaluate(step)
            if _crossed(step, prev, cfg.checkpoint_every):
                ckpt.save(step)
            bar.update(task, completed=step)
            if rank == 0 and not bar.console.is_terminal and (_crossed(step - start, prev - start, every)
                                                              or step >= total):
                last = ev.found["last"]
                tail = "" if last is None else f", last eval {last['mean_return']:.4g}"
                log.info("%s: step %d/%d, %.1f steps/s%s", algo.algo, step, total, sps, tail)
            if dist.agree([float(stop.requested)])[0]:
                ckpt.save(step)
                log.warning("interrupted: checkpoint saved at step %d; continue with --resume", step)
                raise KeyboardInterrupt
    last = ev.found["last"]
    if last is None or last["step"] != step:
        ev.evaluate(step)
    ckpt.save(step)
    return dict(**ev.found, step=step, train=metrics, data=plan.info.get("data"),
                run=None if run is None else str(run.dir))


def _finish(algo: Algorithm, run: Run, result: dict, plan: Plan) -> None:
    """The run folder's final model, ``eval.json`` and plot."""
    from rl_seq.plot import plot_runs

    algo.save(run.dir / "model")
    report = dict(last=result["last"], best=result["best"],
                  note="last = evaluation at the final step; best = the periodic evaluation with the highest "
                       "mean return")
    for k in plan.milestones:
        if result.get(k) is not None:
            report[k] = result[k]
    report.update(algo.final_evaluations())
    run.write_json("eval.json", report)
    run.write_csv()
    if result["last"] is not None:
        plot_runs([run.dir], run.dir / "plot.png")
