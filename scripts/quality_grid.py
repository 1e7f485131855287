"""Issue #5's quality grid: train each offline algorithm on each D4RL-style dataset and
write a table of normalised scores (last and best evaluation) next to the data's own score.

    MINARI_DATASETS_PATH=../shared/datasets python scripts/quality_grid.py \\
        --algos dt dc ds4 lram qt --steps 10000 --warmup 1000 --seeds 0 --out runs/grid

Runs that already finished (their eval.json exists) are skipped, so the grid resumes; a run
stopped midway resumes from its checkpoint. Add --device cuda on a GPU machine; --report
writes the table of the finished runs without training the others.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rl_seq.cli import main as cli

DATASETS = [f"{env}/{lvl}-v0" for env in ("hopper", "halfcheetah") for lvl in ("medium", "medium-replay", "expert")]


def run_grid(a) -> list[dict]:
    rows = []
    for ds in a.datasets:
        env = ds.split("/")[0]
        for algo in a.algos:
            for seed in a.seeds:
                out = Path(a.out) / f"{algo}-{ds.replace('/', '_')}-s{seed}"
                if a.report and not (out / "eval.json").exists():
                    continue
                if not (out / "eval.json").exists():
                    cfg = Path("configs") / algo / f"{env}.yaml"
                    argv = ["train", algo, "--dataset", ds, "--steps", str(a.steps), "--seed", str(seed),
                            "--out", str(out), "--set", f"warmup_steps={a.warmup}",
                            "--set", f"eval_every={a.eval_every}", "--set", f"device={a.device}",
                            "--set", f"threads={a.threads}"]
                    if cfg.exists():
                        argv += ["--config", str(cfg)]
                    if (out / "checkpoints" / "last.pt").exists():
                        argv.append("--resume")
                    if cli(argv) != 0:
                        print(f"failed: {' '.join(argv)}", file=sys.stderr)
                        continue
                rep = json.loads((out / "eval.json").read_text())
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
            spread = f" ± {100 * np.std([r['last'] for r in rs]):.1f}" if len(rs) > 1 else ""
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
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", default="runs/grid")
    p.add_argument("--table", default="docs/results_grid.md")
    p.add_argument("--report", action="store_true", help="only write the table of the runs already finished")
    a = p.parse_args()
    rows = run_grid(a)
    from rl_seq.data import load_episodes

    scores = {ds: load_episodes(ds).summary().get("normalized_score", float("nan")) for ds in a.datasets}
    text = table(rows, scores, f"{a.steps} gradient steps (warm-up {a.warmup}), batch 64, seeds {a.seeds}")
    Path(a.table).write_text(text + "\n")
    print(text)
