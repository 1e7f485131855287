"""rl_seq's online memory agents against sb3-contrib's RecurrentPPO, side by side (issue #18):
the same popgym tasks, env steps, seeds and evaluation episodes (same env seeds), each job on
one thread. Prints one table (return mean ± sample std over seeds, training wall time, and each rl_seq
agent's difference in return and speed-up against sb3-contrib), writes ``OUT/summary.json``,
the table (``--table``) and a plot of the training return against env steps and against wall
time (``--plot``).

    python scripts/bench_online_peers.py --tasks popgym-RepeatPreviousEasy-v0 \\
        popgym-CountRecallEasy-v0 --steps 100000 --seeds 0 1 2 --jobs 2 --out runs/online-peers

sb3-contrib runs with its own defaults (``scripts/peers/sb3_recurrent_ppo.py``: MlpLstmPolicy,
LSTM 256, 10 epochs of batches of 128) from this interpreter (it is one of rl_seq's ``dev``
extras, never a dependency of the package); rl_seq agents run ``rl-seq train AGENT --env`` with
their defaults plus ``--rl-seq-set``. Each (agent, task, seed) job writes its JSON under
``--out`` and is skipped when the script runs again, so a stopped benchmark resumes (a stopped
rl_seq run resumes from its checkpoint). ``--report`` only tabulates the finished jobs.

A task may be a MiniGrid/BabyAI level (``MiniGrid-MemoryS7-v0``, ``MiniGrid-DoorKey-5x5-v0``):
both sides then train on ``rl_seq/MiniGrid-v0`` with that level (the 7x7x3 view and heading;
rl_seq embeds the view with its grid encoder, sb3-contrib's MlpLstmPolicy reads it flattened).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from bench_peers import job_env  # one thread per job, as in the offline benchmark

from rl_seq.config import eval_seed
from rl_seq.runs import mean_std as seed_mean_std

HERE = Path(__file__).resolve().parent
SB3 = "sb3-contrib"
TASKS = ["popgym-RepeatPreviousEasy-v0", "popgym-CountRecallEasy-v0", "popgym-PositionOnlyCartPoleEasy-v0",
         "popgym-RepeatFirstEasy-v0"]


def run_sb3(task: str, seed: int, a, out: Path) -> dict:
    cmd = [sys.executable, str(HERE / "peers" / "sb3_recurrent_ppo.py"), task, "--steps", str(a.steps),
           "--seed", str(seed), "--eval-seed", str(eval_seed(seed)), "--episodes", str(a.episodes), "--threads", "1"]
    with open(out.with_suffix(".log"), "w") as log:
        res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=log, text=True, env=job_env())
    if res.returncode != 0:
        raise RuntimeError(f"{SB3} job failed (see {out.with_suffix('.log')})")
    return from_runner(json.loads(res.stdout.strip().splitlines()[-1]))


def from_runner(r: dict) -> dict:
    """A job row from the sb3-contrib runner's JSON line."""
    return dict(agent=SB3, task=r["env_id"], seed=r["seed"], mean_return=r["mean_return"], train_s=r["train_s"],
                curve=r["curve"], raw={k: v for k, v in r.items() if k != "curve"})


def run_rl_seq(agent: str, task: str, seed: int, a, out: Path) -> dict:
    from rl_seq.runs import read_metrics

    run = out.with_suffix("")
    env, level = task if ":" in task or not task.startswith("popgym-") else f"popgym:{task}", []
    if task.startswith(("MiniGrid-", "BabyAI-")):
        env, level = "rl_seq/MiniGrid-v0", ["--set", f"env_kwargs.level={task}"]
    cmd = [sys.executable, "-m", "rl_seq", "train", agent, "--env", env, "--steps", str(a.steps), "--seed", str(seed),
           "--out", str(run), "--set", "threads=1", "--set", "eval_every=0", "--set", f"eval_episodes={a.episodes}",
           *level, *a.rl_seq_set]
    if (run / "checkpoints" / "last.pt").exists():
        cmd.append("--resume")
    with open(out.with_suffix(".log"), "w") as log:
        if subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=job_env()).returncode != 0:
            raise RuntimeError(f"rl_seq job failed (see {out.with_suffix('.log')})")
    last = json.loads((run / "eval.json").read_text())["last"]
    rows = [r for r in read_metrics(run) if r["kind"] == "train"]
    curve = [dict(step=r["step"], time=r["time"], episode_return=r["episode_return"])
             for r in rows if "episode_return" in r]
    # the run's clock starts with the run folder; training ends at its last logged update
    return dict(agent=agent, task=task, seed=seed, mean_return=last["mean_return"], train_s=rows[-1]["time"],
                curve=curve, raw=last)


def job(agent: str, task: str, seed: int, a) -> dict | None:
    out = Path(a.out) / f"{agent}-{task.replace(':', '_')}-{a.steps}-s{seed}.json"
    if out.exists():  # a finished job (or the runner's own output, saved under the job's name)
        r = json.loads(out.read_text())
        return r if "agent" in r else from_runner(r)
    if a.report:
        return None
    print(f"[{time.strftime('%H:%M:%S')}] start {agent} {task} seed {seed}", file=sys.stderr, flush=True)
    try:
        r = run_sb3(task, seed, a, out) if agent == SB3 else run_rl_seq(agent, task, seed, a, out)
    except RuntimeError as e:  # the other jobs go on; a rerun retries this one
        print(f"[{time.strftime('%H:%M:%S')}] {e}", file=sys.stderr, flush=True)
        return None
    out.write_text(json.dumps(r, indent=1))
    print(f"[{time.strftime('%H:%M:%S')}] done  {agent} {task} seed {seed}: {r['mean_return']:.3f} "
          f"in {r['train_s']:.0f} s", file=sys.stderr, flush=True)
    return r


def mean_std(xs: list[float], digits: int = 3) -> str:
    if not xs:
        return "-"
    m, sd = seed_mean_std(xs)
    return f"{m:.{digits}f} ± {sd:.{digits}f} (n={len(xs)})"


def table(rows: list[dict], a) -> tuple[str, list[dict]]:
    rl = [g for g in a.agents if g != SB3]
    lines = [f"{a.steps:,} env steps, 8 envs, one thread per job, {a.episodes} deterministic evaluation episodes "
             "on the same env seeds after training; return mean ± sample std over seeds (n). Δ = rl_seq − sb3-contrib "
             "in mean return; speed-up = sb3-contrib's mean training wall time / the agent's.", "",
             "| task | " + " | ".join(a.agents) + " | " + " | ".join(f"{g}: Δ, speed-up" for g in rl) + " |",
             "|---|" + "---|" * (len(a.agents) + len(rl))]
    summary = []
    for task in a.tasks:
        by = {g: [r for r in rows if r["task"] == task and r["agent"] == g] for g in a.agents}
        ret = {g: [r["mean_return"] for r in v] for g, v in by.items()}
        wall = {g: float(np.mean([r["train_s"] for r in v])) if v else float("nan") for g, v in by.items()}
        cells = [f"{mean_std(ret[g])}, {wall[g]:.0f} s" if ret[g] else "-" for g in a.agents]
        cmp = []
        for g in rl:
            if ret[g] and ret.get(SB3):
                cmp.append(f"{np.mean(ret[g]) - np.mean(ret[SB3]):+.3f}, {wall[SB3] / wall[g]:.1f}x")
            else:
                cmp.append("-")
        lines.append(f"| {task} | " + " | ".join(cells + cmp) + " |")
        summary.append(dict(task=task, returns=ret, seeds={g: [r["seed"] for r in v] for g, v in by.items()},
                            train_s=wall))
    return "\n".join(lines), summary


def plot(rows: list[dict], a, path: Path) -> None:
    """Training return (episodes ended in each rollout, mean over seeds) against env steps
    (top row) and against wall time (bottom row), one column per task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(a.tasks), figsize=(4.2 * len(a.tasks), 6.4), squeeze=False)
    grid = np.linspace(0, a.steps, 51)[1:]
    for j, task in enumerate(a.tasks):
        for k, g in enumerate(a.agents):
            runs = [r for r in rows if r["task"] == task and r["agent"] == g and len(r["curve"]) > 1]
            if not runs:
                continue
            ys = np.array([np.interp(grid, [c["step"] for c in r["curve"]], [c["episode_return"] for c in r["curve"]])
                           for r in runs])
            ts = np.array([np.interp(grid, [c["step"] for c in r["curve"]], [c["time"] for c in r["curve"]])
                           for r in runs])
            label = f"{g} ({len(runs)})"
            axes[0, j].plot(grid, ys.mean(0), label=label, color=f"C{k}")  # one colour per agent
            axes[0, j].fill_between(grid, ys.min(0), ys.max(0), alpha=0.15, color=f"C{k}")
            axes[1, j].plot(ts.mean(0), ys.mean(0), label=label, color=f"C{k}")
        axes[0, j].set_title(task.replace("popgym-", ""), fontsize=9)
        axes[0, j].set_xlabel("env steps")
        axes[1, j].set_xlabel("wall time (s)")
        axes[1, j].set_xscale("log")
        for ax in axes[:, j]:
            ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("training return")
    axes[1, 0].set_ylabel("training return")
    for ax in axes[0]:
        if ax.get_legend_handles_labels()[0]:  # a task no job has finished yet has no lines
            ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", nargs="+", default=TASKS)
    p.add_argument("--agents", nargs="+", default=[SB3, "gtrxl", "lstm"],
                   help=f"{SB3} and/or rl_seq online algos (gtrxl, relit, lstm)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=100_000)
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--rl-seq-set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="extra rl_seq config overrides (each passed as --set KEY=VALUE)")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--report", action="store_true", help="only tabulate the finished jobs")
    p.add_argument("--out", default="runs/online-peers")
    p.add_argument("--table", default=None, help="also write the table to this file")
    p.add_argument("--plot", default=None, help="the learning-curve figure (default OUT/curves.png)")
    a = p.parse_args()
    a.rl_seq_set = [x for kv in a.rl_seq_set for x in ("--set", kv)]
    Path(a.out).mkdir(parents=True, exist_ok=True)
    jobs = [(g, t, s) for s in a.seeds for t in a.tasks for g in a.agents]
    with ThreadPoolExecutor(a.jobs) as pool:
        rows = [r for r in pool.map(lambda j: job(*j, a), jobs) if r is not None]
    text, summary = table(rows, a)
    (Path(a.out) / "summary.json").write_text(json.dumps(dict(tasks=summary, steps=a.steps, episodes=a.episodes,
                                                              rl_seq_set=a.rl_seq_set[1::2]), indent=1))
    if a.table:
        Path(a.table).write_text(text + "\n")
    plot(rows, a, Path(a.plot or Path(a.out) / "curves.png"))
    print(text)


if __name__ == "__main__":
    main()
