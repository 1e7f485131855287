"""In-context RL quality runs (#39): ``ad`` (and ``dpt``) on Dark Room against ad's source and
the expert-distillation control, per mixer and seed; ``dpt`` on bandits against Thompson sampling,
UCB and the behaviour that made its data. Prints a table, writes JSON, Markdown and a plot.

    python scripts/in_context_quality.py dark-room --mixers attention mlstm --seeds 0 1 2 --steps 8000
    python scripts/in_context_quality.py bandit --seeds 0 1 2 --steps 3000

Datasets are made once in the Minari store (``MINARI_DATASETS_PATH``); each training run is a run
folder under ``--out`` (``--resume`` reuses finished ones).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import gymnasium as gym
import numpy as np

import rl_seq
from rl_seq.data.in_context import (
    UCB,
    ThompsonSampling,
    bandit_behaviour,
    learning_history,
    load_in_context,
    make_in_context,
)

ROOM = dict(tasks=64, heldout=17, episodes=400, every=10, runs=4)


def dataset(name: str, **kw) -> str:
    try:
        load_in_context(name)
    except Exception:  # not made yet
        make_in_context(name, workers=kw.pop("workers", 1), **kw)
    return name


def train(algo: str, ds: str, out: Path, steps: int, seed: int, mixer: str, context: int, episodes: int,
          resume: bool) -> dict:
    folder = out / f"{algo}-{ds.replace('/', '_')}-{mixer}-c{context}-{steps}-s{seed}"
    if resume and (folder / "model" / "model.safetensors").exists():
        agent = rl_seq.load_agent(folder)
        wall = json.loads((folder / "quality.json").read_text())["train_s"]
    else:
        agent = rl_seq.make_agent(algo, dataset=ds, context=context, seed=seed, eval_every=0, eval_episodes=1,
                                  batch_size=32, threads=1, backbone=dict(mixer=mixer))
        t0 = time.time()
        agent.learn(dataset=ds, steps=steps, out=folder)
        wall = time.time() - t0
        (folder / "quality.json").write_text(json.dumps(dict(train_s=wall)))
    res = agent.evaluate(episodes=episodes, seed=20_000 + 100 * seed)
    return dict(curve=res.curve, optimal=res.optimal_returns, regret=res.regret, train_s=wall)


def frac(curve, optimal) -> np.ndarray:
    """[tasks, episodes] returns as fractions of each task's optimal return."""
    return np.asarray(curve) / np.asarray(optimal)[:, None]


def first_reaching(c: np.ndarray, level: float = 0.8) -> int | None:
    """The first in-context episode (1-based) whose mean fraction of optimal is >= level."""
    hit = np.flatnonzero(c >= level)
    return int(hit[0]) + 1 if len(hit) else None


def room(a) -> dict:
    ds = dataset("rl_seq/darkroom/ad4-v0", kind="ad", family="dark-room", workers=a.workers, **ROOM)
    ed = dataset("rl_seq/darkroom/ed4-v0", kind="ad", family="dark-room", workers=a.workers, expert=True, **ROOM)
    dpt = dataset("rl_seq/darkroom/dpt-v0", kind="dpt", family="dark-room", workers=a.workers, steps=100,
                  **{k: v for k, v in ROOM.items() if k in ("tasks", "heldout", "runs")})
    held = load_in_context(ds).heldout_tasks
    # the source on the held-out tasks, from scratch, for as many episodes as it learns in
    src = np.asarray([learning_history("rl_seq/DarkRoom-v0", t, ROOM["episodes"], 1, 77 + i)["curve"]
                      for i, t in enumerate(held)])
    opt = [gym.make("rl_seq/DarkRoom-v0", **t).unwrapped.optimal_return() for t in held]
    source = frac(src, opt).mean(0)
    out = dict(source_curve=source.tolist(), source_reaches_80=first_reaching(source), runs={})
    rows = []
    for mixer in a.mixers:
        for name, data in (("ad", ds), ("ed", ed), ("dpt", dpt)):
            if (name == "ed" and mixer not in a.control_mixers) or (name == "dpt" and mixer not in a.dpt_mixers):
                continue
            curves = []
            for seed in a.seeds:
                r = train("dpt" if name == "dpt" else "ad", data, a.out, a.steps, seed, mixer, a.context, a.episodes,
                          a.resume)
                curves.append(frac(r["curve"], r["optimal"]).mean(0))
                out["runs"][f"{name}-{mixer}-s{seed}"] = r
                print(f"{name} {mixer} seed {seed}: " + " ".join(f"{x:.2f}" for x in curves[-1]), flush=True)
            c = np.asarray(curves)
            m = c.mean(0)
            out[f"{name}-{mixer}"] = dict(mean=m.tolist(), std=c.std(0).tolist(), reaches_80=first_reaching(m))
            rows.append([f"{name} ({mixer})", f"{m[0]:.2f} ± {c[:, 0].std():.2f}",
                         f"{m[-1]:.2f} ± {c[:, -1].std():.2f}", str(first_reaching(m)), len(a.seeds)])
    rows.append(["source (Q-learning)", f"{source[0]:.2f}", f"{source[a.episodes - 1]:.2f} (episode {a.episodes})",
                 str(first_reaching(source)), len(held)])
    return dict(out, rows=rows, header=["agent", "first episode", f"episode {a.episodes}", "first episode >= 0.8",
                                        "seeds (source: tasks)"])


def bandit(a) -> dict:
    H = a.horizon
    ds = dataset(f"rl_seq/bandit/dpt-H{H}-v1", kind="dpt", family="bandit", tasks=1000, heldout=100, steps=H,
                 sampler_kwargs=dict(horizon=H), workers=a.workers)
    held = load_in_context(ds).heldout_tasks

    def source(cls, task, seed):
        env = gym.make("rl_seq/Bandit-v0", **task)
        env.reset(seed=seed)
        s, reg = cls(len(task["means"]), np.random.default_rng(seed)), []
        for t in range(H):
            act = s.act(None, None)
            _, r, _, _, info = env.step(act)
            s.update(None, None, act, r, None, None, False, t, H)
            reg.append(info["regret"])
        return np.cumsum(reg)

    ts = np.asarray([source(ThompsonSampling, t, 30_000 + i) for i, t in enumerate(held)])
    ucb = np.asarray([source(UCB, t, 30_000 + i) for i, t in enumerate(held)])
    rng = np.random.default_rng(0)
    behaviour = float(np.mean([H * (max(t["means"]) - bandit_behaviour(rng, len(t["means"])) @ t["means"])
                               for t in held for _ in range(20)]))
    out = dict(thompson=ts.mean(0).tolist(), ucb=ucb.mean(0).tolist(), behaviour=behaviour, runs={})
    finals = []
    for mixer in a.mixers:
        for seed in a.seeds:
            r = train("dpt", ds, a.out, a.steps, seed, mixer, H, 1, a.resume)
            reg = np.asarray(r["regret"])
            out["runs"][f"dpt-{mixer}-s{seed}"] = dict(mean=reg.mean(0).tolist(), train_s=r["train_s"])
            finals.append((mixer, reg[:, -1].mean()))
            print(f"dpt {mixer} seed {seed}: regret at H {reg[:, -1].mean():.2f} (thompson {ts[:, -1].mean():.2f})",
                  flush=True)
    rows = []
    for mixer in a.mixers:
        v = np.asarray([f for m, f in finals if m == mixer])
        rows.append([f"dpt ({mixer})", f"{v.mean():.2f} ± {v.std():.2f}", f"{v.mean() / ts[:, -1].mean():.2f}",
                     len(v)])
    rows += [["thompson sampling", f"{ts[:, -1].mean():.2f}", "1.00", len(held)],
             ["ucb1", f"{ucb[:, -1].mean():.2f}", f"{ucb[:, -1].mean() / ts[:, -1].mean():.2f}", len(held)],
             ["data's behaviour (bandit_behaviour)", f"{behaviour:.2f}", f"{behaviour / ts[:, -1].mean():.2f}", "-"]]
    return dict(out, rows=rows, header=["agent", f"cumulative regret at H={H}", "/ thompson", "seeds (tasks)"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("family", choices=["dark-room", "bandit"])
    p.add_argument("--mixers", nargs="+", default=["attention"])
    p.add_argument("--control-mixers", nargs="*", default=["attention"], help="mixers the ED control runs with")
    p.add_argument("--dpt-mixers", nargs="*", default=[], help="mixers dpt runs with (dark-room)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--context", type=int, default=120, help="ad: steps per training window")
    p.add_argument("--episodes", type=int, default=60, help="ad: in-context episodes per held-out task")
    p.add_argument("--horizon", type=int, default=500, help="bandit: pulls")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("runs/in_context"))
    p.add_argument("--resume", action="store_true", help="reuse finished run folders")
    p.add_argument("--report", type=Path, default=None, help="write NAME.json / NAME.md / NAME.png here")
    a = p.parse_args()
    res = room(a) if a.family == "dark-room" else bandit(a)
    from rl_seq.plot import print_table

    print_table(f"in-context RL: {a.family}", res["header"], res["rows"])
    report = a.report or a.out / f"quality_{a.family}"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.with_suffix(".json").write_text(json.dumps({k: v for k, v in res.items() if k != "rows"}, indent=1))
    md = ["| " + " | ".join(res["header"]) + " |", "|" + "---|" * len(res["header"])]
    md += ["| " + " | ".join(str(x) for x in r) + " |" for r in res["rows"]]
    report.with_suffix(".md").write_text("\n".join(md) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    if a.family == "dark-room":
        for k, v in res.items():
            if isinstance(v, dict) and "mean" in v:
                m, s = np.asarray(v["mean"]), np.asarray(v["std"])
                ax.plot(np.arange(1, len(m) + 1), m, label=k)
                ax.fill_between(np.arange(1, len(m) + 1), m - s, m + s, alpha=0.2)
        src = np.asarray(res["source_curve"])
        ax.plot(np.arange(1, len(src) + 1), src, "k--", label="source (Q-learning)")
        ax.set(xscale="log", xlabel="episode (in context / of the source)", ylabel="fraction of optimal return")
    else:
        for k, v in res["runs"].items():
            ax.plot(v["mean"], label=k)
        ax.plot(res["thompson"], "k--", label="thompson")
        ax.plot(res["ucb"], "k:", label="ucb1")
        ax.set(xlabel="pull", ylabel="cumulative regret")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(report.with_suffix(".png"), dpi=120)
    print(f"wrote {report}.json / .md / .png")


if __name__ == "__main__":
    main()
