"""The offline quality grid: train each offline algorithm on each D4RL-style dataset and write
a table of normalised scores (last and best evaluation) next to the data's own score. Each
(algorithm, dataset) is one ``rl-seq sweep`` (Ray Tune, its seeds in parallel).

    MINARI_DATASETS_PATH=../shared/datasets python scripts/quality_grid.py \\
        --algos dt dc ds4 lram qt --steps 10000 --warmup 1000 --seeds 0 1 2 --out runs/grid

Finished runs are kept and stopped ones resume, so running it again completes the grid. Add
--device cuda --gpus-per-trial 1 on a GPU machine (--address for a Ray cluster); --report
writes the table of the finished runs without training the others.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rl_seq.runs import mean_std
from rl_seq.sweep import Sweep, run_sweep

DATASETS = [f"{env}/{lvl}-v0" for env in ("hopper", "halfcheetah") for lvl in ("medium", "medium-replay", "expert")]


def run_grid(a) -> list[dict]:
    rows = []
    for ds in a.datasets:
        for algo in a.algos:
            cfg = Path("configs") / algo / f"{ds.split('/')[0]}.yaml"
            sweep = Sweep(algo, dataset=ds, seeds=a.seeds, config=str(cfg) if cfg.exists() else None,
                          overrides=[f"steps={a.steps}", f"warmup_steps={a.warmup}", f"eval_every={a.eval_every}",
                                     f"device={a.device}"],
                          out=str(Path(a.out) / f"{algo}-{ds.replace('/', '_')}"), cpus_per_trial=a.cpus_per_trial,
                          gpus_per_trial=a.gpus_per_trial, address=a.address)
            if not a.report:
                run_sweep(sweep)
            for seed in a.seeds:
                f = sweep.trial_dir({}, seed) / "eval.json"
                if f.exists():
                    rep = json.loads(f.read_text())
                    rows.append(dict(algo=algo, dataset=ds, seed=seed, last=rep["last"]["normalized_score"],
                                     best=rep["best"]["normalized_score"], step=rep["last"]["step"]))
    return rows


def table(rows: list[dict], data_scores: dict[str, float], budget: str) -> str:
    import numpy as np

    lines = [f"Budget: {budget}. Normalised score x100 (0 = random, 100 = expert), mean over seeds "
             "(n = seeds, ± their std); last = final evaluation, best = best periodic evaluation.", "",
             "| dataset | data | " + " | ".join(sorted({r['algo'] for r in rows})) + " |",
             "|---|---|" + "---|" * len({r['algo'] for r in rows})]
    for ds in dict.fromkeys(r["dataset"] for r in rows):
        cells = []
        for algo in sorted({r["algo"] for r in rows}):
            rs = [r for r in rows if r["dataset"] == ds and r["algo"] == algo]
            if not rs:
                cells.append("")
                continue
            last = 100 * np.mean([r["last"] for r in rs])
            best = 100 * np.mean([r["best"] for r in rs])
            spread = f" ± {100 * mean_std([r['last'] for r in rs])[1]:.1f}" if len(rs) > 1 else ""
            cells.append(f"{last:.1f}{spread} / {best:.1f} (n={len(rs)})")
        lines.append(f"| {ds} | {100 * data_scores.get(ds, float('nan')):.1f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--algos", nargs="+", default=["dt", "dc", "ds4", "lram", "qt"])
    p.add_argument("--datasets", nargs="+", default=DATASETS)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--steps", type=int, default=10_000)
    p.add_argument("--warmup", type=int, default=1_000)
    p.add_argument("--eval-every", type=int, default=2_000)
    p.add_argument("--device", default="auto")
    p.add_argument("--cpus-per-trial", type=float, default=1, help="CPUs per run (its torch threads)")
    p.add_argument("--gpus-per-trial", type=float, default=0)
    p.add_argument("--address", help="a Ray cluster (default: Ray on this machine)")
    p.add_argument("--out", default="runs/grid")
    p.add_argument("--table", default="docs/bench/quality_grid.md")
    p.add_argument("--report", action="store_true", help="only write the table of the runs already finished")
    a = p.parse_args()
    rows = run_grid(a)
    from rl_seq.data import load_episodes

    scores = {ds: load_episodes(ds).summary().get("normalized_score", float("nan")) for ds in a.datasets}
    text = table(rows, scores, f"{a.steps} gradient steps (warm-up {a.warmup}), seeds {a.seeds}")
    Path(a.table).write_text(text + "\n")
    print(text)
