"""Many runs at once through Ray Tune: every grid point x seed is an ordinary run folder.

    rl-seq sweep dt --dataset hopper/medium-v0 --grid lr=1e-4,3e-4 --grid context=10,20 --seeds 0 1 2
    rl-seq sweep gtrxl --env rl_seq/TMaze-v0 --grid ent_coef=0.0,0.01 --address ray://head:10001

Ray schedules the trials (local Ray by default, a cluster with ``address``), each with
``cpus_per_trial`` CPUs (its torch threads) and ``gpus_per_trial`` GPUs. A trial trains
through the usual engine into ``OUT/<point>-s<seed>``: a finished trial (its ``eval.json``
exists) is not run again and a stopped one resumes from its checkpoint, so running the same
sweep again completes it. The summary aggregates the run folders over seeds (mean ± sample std of
the last and the best evaluation: normalised score when the data has reference scores, mean
return otherwise) into ``OUT/sweep.json``, ``OUT/sweep.md`` and ``OUT/sweep.png``.

Ray is an optional extra: ``pip install 'rl-seq[dist]'``.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rl_seq.runs import mean_std

log = logging.getLogger(__name__)


@dataclass
class Sweep:
    algo: str
    dataset: str | None = None
    """Offline algorithms: the dataset of every trial."""
    env: str | None = None
    """Online algorithms: the env (offline ones: the env to evaluate in)."""
    grid: dict[str, list[str]] = field(default_factory=dict)
    """Config key -> values (as ``--set`` strings); the trials are their cartesian product."""
    seeds: list[int] = field(default_factory=lambda: [0])
    config: str | None = None
    """A YAML config file for every trial."""
    overrides: list[str] = field(default_factory=list)
    """``key=value`` settings for every trial (``--set``)."""
    out: str = "runs/sweep"
    cpus_per_trial: float = 1
    gpus_per_trial: float = 0
    address: str | None = None
    """A Ray cluster (``ray://host:10001`` or ``auto``); None = start Ray on this machine."""

    def points(self) -> list[dict[str, str]]:
        keys = list(self.grid)
        return [dict(zip(keys, vals, strict=True)) for vals in itertools.product(*self.grid.values())]

    def trial_dir(self, point: dict[str, str], seed: int) -> Path:
        name = "_".join(f"{k}={v}" for k, v in point.items()).replace("/", "_") or "default"
        return Path(self.out).resolve() / f"{name}-s{seed}"

    def trial_overrides(self, point: dict[str, str], seed: int) -> list[str]:
        """The ``key=value`` settings of one trial."""
        threads = max(1, int(self.cpus_per_trial))
        return [f"threads={threads}", *self.overrides, *(f"{k}={v}" for k, v in point.items()), f"seed={seed}"]

    def trial_config(self, point: dict[str, str], seed: int):
        from rl_seq.agents import config_for

        return config_for(self.algo, self.config, self.trial_overrides(point, seed))


def parse_grid(items: list[str]) -> dict[str, list[str]]:
    """``["lr=1e-4,3e-4", "target_returns=[1,2],[3]"]`` -> ``{"lr": ["1e-4", "3e-4"], ...}``
    (commas inside brackets belong to the value)."""
    grid = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--grid {item!r} must look like key=v1,v2 (e.g. lr=1e-4,3e-4)")
        key, raw = item.split("=", 1)
        values, depth, cur = [], 0, ""
        for ch in raw:
            depth += 1 if ch in "[{" else -1 if ch in "]}" else 0
            if ch == "," and depth == 0:
                values.append(cur)
                cur = ""
            else:
                cur += ch
        values.append(cur)
        if any(v == "" for v in values):
            raise ValueError(f"--grid {item!r} has an empty value")
        grid[key.strip()] = values
    return grid


def _run_trial(spec: dict) -> dict:
    """One trial, in a Ray worker: an ordinary run (resumed or skipped when it exists)."""
    from rl_seq.training import train

    sweep = Sweep(**spec["sweep"])
    point, seed = spec["point"], spec["seed"]
    out = sweep.trial_dir(point, seed)
    if not (out / "eval.json").exists():
        train(sweep.algo, dataset=sweep.dataset, env=sweep.env, config=sweep.config,
              overrides=sweep.trial_overrides(point, seed), out=out,
              resume=(out / "checkpoints" / "last.pt").exists())
    report = json.loads((out / "eval.json").read_text())
    return {k: _score(report.get(k)) for k in ("last", "best")}


def _score(ev: dict | None) -> float:
    if ev is None:
        return float("nan")
    return ev["normalized_score"] if ev.get("normalized_score") is not None else ev["mean_return"]


def _trainable(spec: dict) -> None:
    from ray import tune

    tune.report(_run_trial(spec))


def run_sweep(sweep: Sweep) -> list[dict]:
    """Run (or complete) every trial on Ray, then summarise the run folders; returns one row
    per grid point (mean ± std over its seeds)."""
    try:
        import ray
        from ray import tune
    except ImportError:
        raise ImportError("rl-seq sweep needs Ray Tune: pip install 'rl-seq[dist]'") from None
    for point in sweep.points():  # a bad key or value fails here, before Ray starts
        sweep.trial_config(point, sweep.seeds[0])
    out = Path(sweep.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if not ray.is_initialized():
        env_vars = {k: os.environ[k] for k in ("MINARI_DATASETS_PATH", "HF_HUB_OFFLINE", "WANDB_MODE")
                    if k in os.environ}
        ray.init(address=sweep.address, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": env_vars})
    spec = {k: v for k, v in sweep.__dict__.items()}
    space = {"sweep": spec, "point": tune.grid_search(sweep.points()), "seed": tune.grid_search(sweep.seeds)}
    trainable = tune.with_resources(_trainable, {"cpu": sweep.cpus_per_trial, "gpu": sweep.gpus_per_trial})
    tuner = tune.Tuner(trainable, param_space=space,
                       run_config=tune.RunConfig(name="tune", storage_path=str(out / ".ray"), verbose=1))
    results = tuner.fit()
    failed = [r for r in results if r.error is not None]
    rows = summarize(sweep)
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(results)} trial(s) failed; the first: {failed[0].error}. "
                           f"Fix it and run the same sweep again: finished trials are kept")
    return rows


def summarize(sweep: Sweep) -> list[dict]:
    """One row per grid point from the trials' run folders: mean ± std of last and best."""
    rows = []
    for point in sweep.points():
        scores = {"last": [], "best": []}
        for seed in sweep.seeds:
            f = sweep.trial_dir(point, seed) / "eval.json"
            if f.exists():
                report = json.loads(f.read_text())
                for k in scores:
                    scores[k].append(_score(report.get(k)))
        row = dict(point=point, seeds=len(scores["last"]))
        for k, v in scores.items():
            m, sd = mean_std(v) if v else (None, None)
            row[k] = dict(mean=m, std=sd, values=v)
        rows.append(row)
    out = Path(sweep.out)
    (out / "sweep.json").write_text(json.dumps(dict(algo=sweep.algo, dataset=sweep.dataset, env=sweep.env,
                                                    seeds=sweep.seeds, rows=rows), indent=1))
    (out / "sweep.md").write_text(table(sweep, rows) + "\n")
    _plot(sweep, rows, out / "sweep.png")
    return rows


def _label(point: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in point.items()) or "(defaults)"


def table(sweep: Sweep, rows: list[dict]) -> str:
    what = "normalised score" if _has_reference(sweep) else "mean return"
    lines = [f"{sweep.algo} on {sweep.dataset or sweep.env}: {what}, mean ± sample std over seeds {sweep.seeds}", "",
             "| grid point | seeds | last | best |", "|---|---|---|---|"]
    for r in rows:
        cell = lambda s: "-" if s["mean"] is None else f"{s['mean']:.3f} ± {s['std']:.3f}"  # noqa: E731
        lines.append(f"| {_label(r['point'])} | {r['seeds']} | {cell(r['last'])} | {cell(r['best'])} |")
    return "\n".join(lines)


def _has_reference(sweep: Sweep) -> bool:
    for f in Path(sweep.out).glob("*/eval.json"):
        return (json.loads(f.read_text()).get("last") or {}).get("normalized_score") is not None
    return False


def _plot(sweep: Sweep, rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(rows) + 2), 3.5))
    for i, k in enumerate(("last", "best")):
        means = [np.nan if r[k]["mean"] is None else r[k]["mean"] for r in rows]
        stds = [0 if r[k]["std"] is None else r[k]["std"] for r in rows]
        ax.bar(x + (i - 0.5) * 0.38, means, 0.38, yerr=stds, capsize=3, label=k)
    ax.set_xticks(x, [_label(r["point"]) for r in rows], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("normalised score" if _has_reference(sweep) else "mean return")
    ax.set_title(f"{sweep.algo} on {sweep.dataset or sweep.env} ({len(sweep.seeds)} seeds)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
