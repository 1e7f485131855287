"""The training engine: the one loop every agent trains through.

An algorithm describes its training as a :class:`Work` - one *iteration* (offline: sample a
batch and take a gradient step; online: collect a rollout and update on it; odt's online
phase: collect a trajectory and update on the buffer) and the objects a checkpoint must keep. :func:`train` runs it and
owns everything around it, the same way for every agent:

- the run folder (``out``): its lock, ``config.yaml``, metrics (JSONL; CSV at the end; wandb
  when asked), the final model, ``eval.json`` and the plot;
- progress (a rich bar in a terminal, a log line every 10% otherwise) and a non-finite
  metrics check;
- periodic evaluation (every ``eval_every`` steps) and a final one, in the env the agent
  evaluates in, with fixed env seeds (:func:`eval_seed`). ``last`` is the final evaluation,
  ``best`` the one with the highest mean return (equivalently, normalised score);
- the resumable checkpoint (atomic, every ``checkpoint_every`` steps and at the end):
  weights, every object of ``Work.state``, the RNGs of torch / numpy / Python, the step,
  ``last`` / ``best`` / ``before``;
- ``resume``: everything above is restored and the metrics logged after the checkpoint are
  dropped, so a run stopped at any point continues as if it had never stopped. What an
  iteration keeps outside ``Work.state`` is not restored: online, the envs restart at a fresh
  reset (an episode in progress is lost; its seed is derived from the step);
- SIGINT / SIGTERM: the iteration in progress finishes, a checkpoint is written, and
  :class:`KeyboardInterrupt` is raised (a second signal stops at once). A SIGKILL loses the
  steps since the last checkpoint.

Steps are the algorithm's unit (gradient steps offline, env steps online): an iteration
advances by one or more, and a schedule fires when the step count crosses a multiple of it.

Under ``torchrun`` (``WORLD_SIZE`` > 1) offline training is data-parallel with PyTorch's own
DDP: :func:`init_distributed` joins the process group (NCCL on CUDA, gloo on CPU), the agent's
``training_model`` is wrapped in ``DistributedDataParallel`` (gradients all-reduced), each
rank samples its own windows from a stream derived from the seed (:func:`rank_seed`), so the
global batch is ``batch_size`` x processes. Only rank 0 writes the run folder, evaluates and
saves; the checkpoint holds every rank's sampler and RNG state, so ``--resume`` (with the same
number of processes) continues each rank's stream. The ranks agree on a stop after every
iteration, so Ctrl-C / SIGTERM stop them all at the same step.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from rl_seq.config import TrainConfig, to_dict
from rl_seq.runs import Run, load_checkpoint, progress, rng_state, seed_everything, set_rng_state, stop_on_interrupt

if TYPE_CHECKING:
    from rl_seq.agents.base import Agent

log = logging.getLogger(__name__)


def eval_seed(seed: int) -> int:
    """Seed of the first evaluation episode for a run seeded ``seed`` (fixed per run, apart
    from the training seeds)."""
    return 10_000 + 100 * seed


# -- torchrun: one process per rank -----------------------------------------------------------
def world() -> tuple[int, int]:
    """(rank, world size) of this process: torchrun's ``RANK`` / ``WORLD_SIZE``, else (0, 1)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def distributed() -> bool:
    """Whether this process trains in a process group of more than one rank."""
    return torch.distributed.is_available() and torch.distributed.is_initialized() and world()[1] > 1


def rank_seed(seed: int) -> int:
    """The seed of this rank's own sampling stream (rank 0, and a single process: ``seed``)."""
    return seed + 100_003 * world()[0]


def init_distributed(agent: Agent) -> bool:
    """Under torchrun (``WORLD_SIZE`` > 1): join the process group (NCCL when the agent is on
    CUDA, gloo on CPU), put the agent on its rank's GPU and give ranks > 0 their own torch /
    numpy streams (dropout). Returns True when it created the group (the caller ends it)."""
    rank, size = world()
    if size == 1 or torch.distributed.is_initialized():
        return False
    cuda = agent.device.type == "cuda"
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        agent.device = torch.device("cuda", torch.cuda.current_device())
        agent.model.to(agent.device)
    torch.distributed.init_process_group("nccl" if cuda else "gloo")
    if rank > 0:
        seed_everything(rank_seed(agent.config.seed))
    return True


def global_mean(total: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """``total / count`` with ``count`` summed over the DDP ranks (and scaled by the world
    size, which DDP's gradient averaging divides out): the loss of the global batch, however
    its real (unpadded) steps fall on the ranks. In one process: ``total / count``."""
    if not distributed():
        return total / count
    c = count.detach().clone()
    torch.distributed.all_reduce(c)
    return total * world()[1] / c


def _agree(flags: list[float]) -> list[float]:
    """Max over ranks of each flag (a stop asked for on any rank stops all)."""
    if not distributed():
        return flags
    t = torch.tensor(flags, dtype=torch.float64)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return t.tolist()


def _mean_over_ranks(metrics: dict) -> dict:
    if not distributed() or not metrics:
        return metrics
    t = torch.tensor(list(metrics.values()), dtype=torch.float64)
    torch.distributed.all_reduce(t)
    return dict(zip(metrics, (t / world()[1]).tolist(), strict=True))


def _gather(obj: Any) -> list:
    if not distributed():
        return [obj]
    out = [None] * world()[1]
    torch.distributed.all_gather_object(out, obj)
    return out


@dataclass
class Work:
    """What an algorithm hands the engine."""

    iterate: Callable[[int], tuple[int, dict]]
    """``iterate(step) -> (steps advanced, metrics)``: one iteration, starting after ``step``
    steps. Metrics are floats or 0-d tensors (logged, shown, checked for NaN); tensors are read
    only on the steps that log, so a GPU step does not wait for its loss to reach the host."""
    steps: int
    """The budget, in the algorithm's steps."""
    state: dict[str, Any] = field(default_factory=dict)
    """Objects a checkpoint keeps besides the model, each with ``state_dict()`` and
    ``load_state_dict()``: optimisers, schedulers, samplers, target networks, statistics."""
    info: dict = field(default_factory=dict)
    """What the run trains on (``dataset``, ``env``, ``init``), for the run folder's
    ``config.yaml``; ``data`` (the dataset's summary row) is returned, not written there."""
    config: TrainConfig | None = None
    """The schedule (``eval_every``, ``eval_episodes``, ``log_every``, ``checkpoint_every``,
    ``seed``, ``wandb``); None = the agent's config."""
    before: bool = False
    """Evaluate once before the first iteration (``odt --init``: the policy it starts from)."""
    milestones: dict[str, int] = field(default_factory=dict)
    """Named steps to evaluate at, reported under their name (``{"offline": N}``: the end of
    an offline phase)."""
    per_rank: tuple[str, ...] = ()
    """Entries of ``state`` that differ between DDP ranks (each rank's sampler): the
    checkpoint keeps every rank's."""
    show: tuple[str, ...] | None = None
    """Metrics shown in the progress bar (None: all but ``lr``)."""
    close: Callable[[], None] = lambda: None
    """Called when the loop ends, however it ends (closes envs)."""


def _crossed(step: int, prev: int, every: int) -> bool:
    return bool(every) and step // every != prev // every


def train(agent: Agent, work: Work, out: str | Path | None = None, resume: bool = False) -> dict:
    """Run ``work`` for ``agent`` (see the module docstring). Returns ``last``, ``best`` and
    ``before`` evaluations (dicts or None), the final ``step``, the last logged training
    metrics (``train``), the data's summary row (``data``) and the run folder (``run``)."""
    cfg = work.config or agent.config
    run, rank = None, world()[0]
    try:
        if out is not None and rank == 0:
            run = Run(out, dict(algo=agent.algo, **{k: v for k, v in work.info.items() if k != "data"},
                                config=to_dict(cfg)), resume=resume, wandb=cfg.wandb, wandb_project=cfg.wandb_project)
        result = _loop(agent, work, cfg, run, resume, None if out is None else Path(out))
        if run is not None:
            _finish(agent, run, result, work)
    finally:
        work.close()
        if run is not None:
            run.close()
    return result


def _loop(agent: Agent, work: Work, cfg: TrainConfig, run: Run | None, resume: bool, out: Path | None) -> dict:
    total = work.steps
    rank, size = world()
    can_eval = bool(agent.meta.get("env_id")) and cfg.eval_episodes > 0 and rank == 0
    ev = dict(last=None, best=None, before=None)
    start = 0
    shared = [k for k in work.state if k not in work.per_rank]

    def checkpoint(step: int) -> None:
        if out is None:
            return
        mine = dict(rng=rng_state(), **{k: work.state[k].state_dict() for k in work.per_rank})
        ranks = _gather(mine)  # every rank's streams (a collective: every rank calls it)
        if run is not None:
            run.save_checkpoint(dict(model=agent.model.state_dict(), step=step, evals=json.dumps(ev), ranks=ranks,
                                     **{k: work.state[k].state_dict() for k in shared}))

    def evaluate(step: int, kind: str = "eval") -> dict:
        res = agent.evaluate(episodes=cfg.eval_episodes, seed=eval_seed(cfg.seed)).to_dict()
        res["step"] = step
        if run is not None:
            run.log(step, kind, {k: v for k, v in res.items() if k not in ("returns", "lengths")})
        return res

    if resume and out is not None:
        ck = run.load_checkpoint() if run is not None else load_checkpoint(out / "checkpoints" / "last.pt")
        if len(ck["ranks"]) != size:
            raise ValueError(f"the checkpoint was written by {len(ck['ranks'])} process(es), this run has {size}; "
                             f"resume with the same number (--nproc {len(ck['ranks'])})")
        agent.model.load_state_dict(ck["model"])
        for k in shared:
            work.state[k].load_state_dict(ck[k])
        for k in work.per_rank:
            work.state[k].load_state_dict(ck["ranks"][rank][k])
        set_rng_state(ck["ranks"][rank]["rng"])
        start, ev = ck["step"], json.loads(ck["evals"])
        if run is not None:
            run.truncate_metrics(start)
        log.info("resumed from step %d", start)
    elif work.before and can_eval:
        ev["before"] = evaluate(0, "before")
        log.info("before training: mean return %.4g", ev["before"]["mean_return"])

    agent.model.train()
    bar, task = progress(total, f"{agent.algo} training", start, disable=rank > 0)
    step, metrics, t0 = start, None, time.time()
    every = max(1, (total - start) // 10)  # without a terminal: a log line every 10%
    with stop_on_interrupt() as stop, bar:
        while step < total:
            prev = step
            n, m = work.iterate(step)
            step += n
            if _crossed(step, prev, cfg.log_every) or step >= total:
                metrics = m = _mean_over_ranks({k: float(v) for k, v in m.items()})
                if not all(math.isfinite(v) for v in m.values()):
                    raise FloatingPointError(
                        f"non-finite training metrics at step {step}: {m}; lower the learning rate "
                        "or check the data for extreme values")
                if run is not None:
                    run.log(step, "train", m)
                show = work.show or [k for k in m if k != "lr"]
                bar.update(task, info=" ".join(f"{k}={m[k]:.4g}" for k in show if k in m))
            for name, at in work.milestones.items():
                if can_eval and prev < at <= step:
                    ev[name] = evaluate(step, name)
                    log.info("%s: mean return %.4g at step %d", name, ev[name]["mean_return"], step)
            if can_eval and _crossed(step, prev, cfg.eval_every) and step < total:
                ev["last"] = evaluate(step)
                if ev["best"] is None or ev["last"]["mean_return"] > ev["best"]["mean_return"]:
                    ev["best"] = ev["last"]
            if _crossed(step, prev, cfg.checkpoint_every):
                checkpoint(step)
            bar.update(task, completed=step)
            quiet = rank > 0 or bar.console.is_terminal
            if not quiet and (_crossed(step - start, prev - start, every) or step >= total):
                last = ev["last"]
                tail = "" if last is None else f", last eval {last['mean_return']:.4g}"
                log.info("%s: step %d/%d, %.1f steps/s%s", agent.algo, step, total,
                         (step - start) / max(time.time() - t0, 1e-9), tail)
            if _agree([float(stop.requested)])[0]:
                checkpoint(step)
                log.warning("interrupted: checkpoint saved at step %d; continue with --resume", step)
                raise KeyboardInterrupt
    if can_eval and (ev["last"] is None or ev["last"]["step"] != step):
        ev["last"] = evaluate(step)
        if ev["best"] is None or ev["last"]["mean_return"] > ev["best"]["mean_return"]:
            ev["best"] = ev["last"]
    checkpoint(step)
    return dict(**ev, step=step, train=metrics, data=work.info.get("data"), run=None if run is None else str(run.dir))


def _finish(agent: Agent, run: Run, result: dict, work: Work) -> None:
    """The run folder's final model, ``eval.json`` and plot."""
    from rl_seq.plot import plot_runs

    agent.save(run.dir / "model")
    report = dict(last=result["last"], best=result["best"],
                  note="last = evaluation at the final step; best = the periodic evaluation with the highest "
                       "mean return")
    for k in ("before", *work.milestones):
        if result.get(k) is not None:
            report[k] = result[k]
    report.update(agent.final_evaluations())
    run.write_json("eval.json", report)
    run.write_csv()
    if result["last"] is not None:
        plot_runs([run.dir], run.dir / "plot.png")
