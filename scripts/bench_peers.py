"""rl_seq's offline agents and d3rlpy's, side by side: the same datasets, gradient steps,
seeds, evaluation episodes and env seeds, the return-conditioned ones on the same target
return. Prints one table (mean ± sample std over seeds of the last evaluation and of the mean
of the last three periodic evaluations, which tames the swings between hopper checkpoints),
each agent's mean over the datasets and its ratio to ``--baseline``, wall time per run; writes
JSON (``OUT/summary.json``), the table (``--table``) and a plot (``--plot``). Then, with
``--speed``, the DT training step and acting latency of rl_seq next to Hugging Face's
``DecisionTransformerModel``.

    MINARI_DATASETS_PATH=../shared/datasets python scripts/bench_peers.py \\
        --agents dt vdt d3rlpy.dt d3rlpy.iql d3rlpy.td3bc --datasets hopper/medium-v0 \\
        --steps 5000 --seeds 0 1 2 --jobs 2 --out runs/peers

Agents: any of rl_seq's offline algorithms (``dt``, ``vdt``, ``qt``, ``dc``, ``ds4``, ``lram``;
its task file ``configs/ALGO/ENV.yaml`` where there is one) and ``d3rlpy.dt``, ``d3rlpy.tacr``,
``d3rlpy.iql``, ``d3rlpy.td3bc`` (``scripts/peers/d3rlpy_offline.py``); ``NAME@STEPS`` runs one
at another budget (IQL at the gradient steps that take it rl_seq's wall time), its periodic
evaluations at the same fractions of its run; ``NAME,KEY=VALUE,...`` is a variant of an rl_seq
algorithm with those config overrides (``vdt,eta=0``: vdt without its critic term, the control
that shows what the critic adds), tabulated as an agent of its own. The peers run in a virtualenv of their own (d3rlpy
2.8.1 pins gymnasium 1.0), made on first use at ``--peers-venv`` from
``scripts/peers/requirements.txt`` (or ``--peers-python``, an interpreter that has them): they are
never rl_seq dependencies. ``--device cuda`` trains and acts on the GPU on both sides. Each
(agent, dataset, seed) job writes its JSON under ``--out`` and is skipped when the script is run
again, so a stopped benchmark resumes (a stopped rl_seq run resumes from its checkpoint);
``--jobs`` runs that many at once, one thread each. ``--report`` only tabulates the finished jobs.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TARGETS = {"hopper": 3600.0, "halfcheetah": 6000.0, "walker2d": 5000.0}  # d3rlpy's / the DT paper's


def peers_python(venv: Path) -> Path:
    """The peers' interpreter, making the virtualenv on first use. It counts as made once its
    installs have finished (a marker file): benchmarks started together wait for the first one's
    install (a lock beside it), and a half-made one (an interrupted install) is made again."""
    py, ready = venv / "bin" / "python", venv / ".rl_seq-peers-ready"
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f".{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not ready.exists():
            print(f"making the peers' virtualenv at {venv} (d3rlpy, transformers; a few minutes)", file=sys.stderr)
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
            subprocess.run([str(py), "-m", "pip", "install", "-q", "torch==2.13.0"], check=True)
            subprocess.run([str(py), "-m", "pip", "install", "-q", "-r", str(HERE / "peers" / "requirements.txt")],
                           check=True)
            ready.touch()
    return py


def job_env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


PEERS = ("d3rlpy.dt", "d3rlpy.tacr", "d3rlpy.iql", "d3rlpy.td3bc", "d3rlpy.ddt", "d3rlpy.dcql")


def parse_agent(spec: str, steps: int) -> tuple[str, list[str], int]:
    """``NAME[,KEY=VALUE...][@STEPS]`` -> (name, rl_seq config overrides, gradient steps)."""
    head, _, at = spec.partition("@")
    name, *overrides = head.split(",")
    return name, overrides, int(at) if at else steps


def eval_every(steps: int, a) -> int:
    """Periodic evaluations at the same fractions of every run (``--eval-every`` of ``--steps``)."""
    return max(1, round((a.eval_every or a.steps) * steps / a.steps))


def last3(scores: list[float]) -> float:
    return float(np.mean(scores[-3:]))


def run_d3rlpy(py: Path, algo: str, ds: str, seed: int, steps: int, a, out: Path) -> dict:
    from rl_seq.config import eval_seed

    evals = out.with_suffix(".evals.jsonl")
    evals.unlink(missing_ok=True)
    cmd = [str(py), str(HERE / "peers" / "d3rlpy_offline.py"), algo.split(".")[1], ds, "--steps", str(steps),
           "--warmup", str(a.warmup), "--seed", str(seed), "--eval-seed", str(eval_seed(seed)), "--episodes",
           str(a.episodes), "--target-return", str(target_for(ds, a)), "--threads", "1",
           "--eval-every", str(eval_every(steps, a)), "--evals-file", str(evals),
           "--device", "cuda:0" if a.device == "cuda" else "cpu"]
    t0 = time.perf_counter()
    with open(out.with_suffix(".log"), "w") as log:
        res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=log, text=True, env=job_env())
    if res.returncode != 0:
        raise RuntimeError(f"{algo} job failed (see {out.with_suffix('.log')})")
    r = json.loads(res.stdout.strip().splitlines()[-1])
    curve = [(e["step"], e["normalized_score"]) for e in r["evals"]]
    return dict(agent=algo, dataset=ds, seed=seed, steps=steps, last=r["normalized_score"],
                best=r["best_normalized_score"], last3=last3([c[1] for c in curve]), curve=curve,
                mean_return=float(np.mean(r["returns"])), train_step_s=r["train_step_s"],
                wall_s=time.perf_counter() - t0, raw=r)


def run_rl_seq(algo: str, ds: str, seed: int, steps: int, a, out: Path, overrides: tuple[str, ...] = ()) -> dict:
    import dataclasses

    from rl_seq.agents import PRESETS
    from rl_seq.runs import read_metrics

    env = ds.split("/")[0]
    conditioned = "target_returns" in {f.name for f in dataclasses.fields(PRESETS[algo][0].config_class)}
    run = out.with_suffix("")
    cmd = [sys.executable, "-m", "rl_seq", "train", algo, "--dataset", ds, "--steps", str(steps),
           "--seed", str(seed), "--out", str(run), "--set", f"warmup_steps={a.warmup}",
           "--set", f"eval_every={eval_every(steps, a)}", "--set", f"eval_episodes={a.episodes}",
           "--set", "threads=1", "--set", f"device={a.device}", *a.rl_seq_set]
    cmd += [x for kv in overrides for x in ("--set", kv)]  # the variant's own, last: they win
    if conditioned:  # the return-conditioned agents act on d3rlpy's target; qt has none
        cmd += ["--set", f"target_returns=[{target_for(ds, a)}]"]
    cfg = ROOT / "configs" / algo / f"{env}.yaml"
    if cfg.exists():
        cmd += ["--config", str(cfg)]
    if (run / "checkpoints" / "last.pt").exists():
        cmd.append("--resume")
    t0 = time.perf_counter()
    with open(out.with_suffix(".log"), "w") as log:
        if subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=job_env()).returncode != 0:
            raise RuntimeError(f"rl_seq job failed (see {out.with_suffix('.log')})")
    rep = json.loads((run / "eval.json").read_text())
    curve = [(m["step"], m["normalized_score"]) for m in read_metrics(run) if m["kind"] == "eval" and m["step"] > 0]
    return dict(agent=algo, dataset=ds, seed=seed, steps=steps, last=rep["last"]["normalized_score"],
                best=rep["best"]["normalized_score"], last3=last3([c[1] for c in curve]), curve=curve,
                mean_return=rep["last"]["mean_return"], wall_s=time.perf_counter() - t0, raw=rep)


def target_for(ds: str, a) -> float:
    """``--target-return``, else d3rlpy's for the MuJoCo tasks, else the data's best episode
    return (rl_seq's default target: MiniGrid's returns lie in [0, 1])."""
    if a.target_return is not None:
        return a.target_return
    if ds.split("/")[0] in TARGETS:
        return TARGETS[ds.split("/")[0]]
    from rl_seq.data import load_episodes

    return float(load_episodes(ds).episode_returns().max())


def job(spec: str, ds: str, seed: int, a, py: Path | None) -> dict | None:
    algo, overrides, steps = parse_agent(spec, a.steps)
    variant = ",".join([algo, *overrides])
    out = Path(a.out) / f"{variant}-{ds.replace('/', '_')}-{steps}-s{seed}.json"
    if out.exists():
        return {**json.loads(out.read_text()), "spec": spec}
    if a.report:
        return None
    print(f"[{time.strftime('%H:%M:%S')}] start {spec} {ds} seed {seed}", file=sys.stderr, flush=True)
    try:
        if algo in PEERS:
            r = run_d3rlpy(py, algo, ds, seed, steps, a, out)
        else:
            r = run_rl_seq(algo, ds, seed, steps, a, out, tuple(overrides))
    except RuntimeError as e:  # the other jobs go on; a rerun retries this one
        print(f"[{time.strftime('%H:%M:%S')}] {e}", file=sys.stderr, flush=True)
        return None
    out.write_text(json.dumps(r, indent=1))
    print(f"[{time.strftime('%H:%M:%S')}] done  {spec} {ds} seed {seed}: last {r['last']:.3f}, last three "
          f"{r['last3']:.3f}, {r['wall_s'] / 60:.1f} min", file=sys.stderr, flush=True)
    return {**r, "spec": spec}


def mean_std(xs: list[float]) -> str:
    xs = [100 * x for x in xs if x is not None]
    if len(xs) < 2:
        return f"{xs[0]:.1f}" if xs else "-"
    from rl_seq.runs import mean_std as seed_mean_std

    m, sd = seed_mean_std(xs)
    return f"{m:.1f} ± {sd:.1f}"


def score_table(rows: list[dict], a) -> tuple[str, list[dict]]:
    """The table (markdown) and the JSON summary: per dataset and agent, the seeds' last
    evaluations and last-three means; per agent, the mean over datasets and its ratio to the
    baseline's."""
    from rl_seq.data import load_episodes

    extra = " ".join(a.rl_seq_set[1::2])
    where = "1 thread per job" if a.device == "cpu" else f"{a.device}, {a.jobs} jobs sharing it"
    cells = {(r["spec"], r["dataset"]): [] for r in rows}
    for r in sorted(rows, key=lambda r: r["seed"]):
        cells[(r["spec"], r["dataset"])].append(r)
    agents = [g for g in a.agents if any(g == k[0] for k in cells)]
    head = "| dataset | data | " + " | ".join(agents) + " |"
    lines = [f"{a.steps} gradient steps unless NAME@STEPS (warm-up {a.warmup}), {a.episodes} evaluation episodes on "
             f"the same env seeds, evaluations every {a.eval_every or a.steps} steps (the same fractions of every "
             f"run); {where}; rl_seq agents with their presets and task files{', and ' + extra if extra else ''}; "
             "d3rlpy 2.8.1 with the recipes in scripts/peers/d3rlpy_offline.py. Normalised score x100, "
             "mean ± sample std over seeds; each cell: last evaluation / mean of the last three evaluations.",
             "", head, "|---" * (len(agents) + 2) + "|"]
    summary, per_agent = [], {g: [] for g in agents}
    for ds in a.datasets:
        data = load_episodes(ds).summary().get("normalized_score", float("nan"))
        row = [ds, f"{100 * data:.1f}"]
        for g in agents:
            rs = cells.get((g, ds), [])
            row.append(f"{mean_std([r['last'] for r in rs])} / {mean_std([r['last3'] for r in rs])} (n={len(rs)})"
                       if rs else "-")
            if rs:
                per_agent[g].append((ds, float(np.mean([r["last"] for r in rs])),
                                     float(np.mean([r["last3"] for r in rs]))))
                summary.append(dict(agent=g, dataset=ds, data=data, seeds=[r["seed"] for r in rs],
                                    steps=rs[0]["steps"], last=[r["last"] for r in rs], last3=[r["last3"] for r in rs],
                                    best=[r.get("best") for r in rs], wall_s=[r.get("wall_s") for r in rs],
                                    curves=[r.get("curve") for r in rs]))
        lines.append("| " + " | ".join(row) + " |")
    complete = [g for g in agents if len(per_agent[g]) == len(a.datasets)]
    means = {g: (np.mean([x[1] for x in per_agent[g]]), np.mean([x[2] for x in per_agent[g]])) for g in complete}
    lines.append("| mean over the datasets | | " + " | ".join(
        f"{100 * means[g][0]:.1f} / {100 * means[g][1]:.1f}" if g in means else "-" for g in agents) + " |")
    base = means.get(a.baseline)
    if base is not None:
        lines.append(f"| ratio to {a.baseline} | | " + " | ".join(
            f"{means[g][0] / base[0]:.2f} / {means[g][1] / base[1]:.2f}" if g in means else "-" for g in agents) + " |")
    walls = {g: [w for s in summary if s["agent"] == g for w in s["wall_s"] if w] for g in agents}
    lines.append("| wall time per run (min) | | " + " | ".join(
        f"{np.mean(walls[g]) / 60:.1f}" if walls[g] else "-" for g in agents) + " |")
    return "\n".join(lines), summary


def plot(summary: list[dict], a, path: Path) -> None:
    """Bars: each agent's mean of the last three evaluations per dataset (x100), ± the std
    over seeds, the seeds as dots; the data's score as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    agents = list(dict.fromkeys(s["agent"] for s in summary))
    fig, ax = plt.subplots(figsize=(2.2 * len(a.datasets) + 3, 4))
    w = 0.8 / max(len(agents), 1)
    for i, g in enumerate(agents):
        for j, ds in enumerate(a.datasets):
            s = next((s for s in summary if s["agent"] == g and s["dataset"] == ds), None)
            if s is None:
                continue
            x, v = j + (i - (len(agents) - 1) / 2) * w, 100 * np.array(s["last3"])
            ax.bar(x, v.mean(), w, yerr=v.std(ddof=1) if len(v) > 1 else 0, color=f"C{i}",
                   label=g if j == 0 else None, capsize=2)
            ax.plot([x] * len(v), v, "k.", ms=3)
    for j, ds in enumerate(a.datasets):
        d = next((s["data"] for s in summary if s["dataset"] == ds), None)
        if d is not None:
            ax.hlines(100 * d, j - 0.45, j + 0.45, colors="k", linestyles="--", lw=1, label="data" if j == 0 else None)
    ax.set_xticks(range(len(a.datasets)), a.datasets, rotation=15)
    ax.set_ylabel("normalised score x100 (mean of last 3 evals)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def rl_seq_speed(ks=(20, 100)) -> dict:
    """rl_seq dt at the reference size on synthetic hopper-shaped data: training step
    (sample + forward + backward + AdamW, batch 64, the hopper preset) and acting ms/step,
    cached and window recompute, at each K (batch 1)."""
    import logging

    import torch

    import rl_seq
    from rl_seq.agents import config_for
    from rl_seq.bench import _timeit, synthetic_episodes
    from rl_seq.engine import uses_bf16

    logging.getLogger("rl_seq").setLevel(logging.WARNING)
    torch.set_num_threads(1)
    data = synthetic_episodes(length=1000)
    out = {"act_ms_per_step": {}}
    for K in ks:
        agent = rl_seq.make_agent("dt", dataset=data, config=config_for(
            "dt", ROOT / "configs" / "dt" / "hopper.yaml", [f"context={K}", "eval_episodes=0"]))
        if K == ks[0]:
            for key, amp in (("train_step_s", []), ("train_step_s_fp32", ["amp=off"])):  # the default, float32
                timed = agent if not amp else rl_seq.make_agent("dt", dataset=data, config=config_for(
                    "dt", ROOT / "configs" / "dt" / "hopper.yaml", [f"context={K}", "eval_episodes=0", *amp]))
                timed.learn(data, steps=2)
                t0 = time.perf_counter()
                timed.learn(data, steps=12)
                out[key] = (time.perf_counter() - t0) / 12
            out["precision"] = "bf16 autocast" if uses_bf16(agent.config, agent.device) else "float32"
        for mode in ("cached", "window"):
            obs, state = np.zeros((1, 11), np.float32), None

            def act(agent=agent, obs=obs, mode=mode):
                nonlocal state
                _, state = agent.predict(obs, state, np.array([state is None]), rewards=np.zeros(1),
                                         acting=None if state is not None else {"mode": mode})

            for _ in range(K):  # fill the history first: the cost at t >= K is the one that matters
                act()
            out["act_ms_per_step"][f"{mode}@{K}"] = _timeit(act, 200, warmup=5) * 1e3
    return out


def speed_table(py: Path) -> tuple[str, dict]:
    hf = json.loads(subprocess.run([str(py), str(HERE / "peers" / "hf_dt_speed.py"), "--ks", "20,100"],
                                   stdout=subprocess.PIPE, check=True, text=True, env=job_env()).stdout)
    ours = rl_seq_speed()
    a = ours["act_ms_per_step"]
    rows = ["", "Speed, 1 thread, reference DT size (embed 128, 3 layers, K=20; training batches of 1,280 "
            "steps as above; acting batch 1):",
            "", "| | HF DecisionTransformerModel | rl_seq dt | HF / rl_seq |", "|---|---|---|---|",
            f"| train step (s), rl_seq's default ({ours['precision']}) | {hf['train_step_s']:.3f} | "
            f"{ours['train_step_s']:.3f} | {hf['train_step_s'] / ours['train_step_s']:.2f}x |",
            f"| train step (s), rl_seq in float32 (amp=off) | {hf['train_step_s']:.3f} | "
            f"{ours['train_step_s_fp32']:.3f} | {hf['train_step_s'] / ours['train_step_s_fp32']:.2f}x |"]
    for K in (20, 100):
        h = hf["act_ms_per_step"][str(K)]
        rows.append(f"| act ms/step, K={K} (HF: window; rl_seq: cached) | {h:.2f} | {a[f'cached@{K}']:.2f} | "
                    f"{h / a[f'cached@{K}']:.1f}x |")
    rows.append(f"| rl_seq window recompute / cached, K=100 | | {a['window@100']:.2f} / {a['cached@100']:.2f} | "
                f"{a['window@100'] / a['cached@100']:.1f}x |")
    return "\n".join(rows), dict(hf=hf, rl_seq=ours)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--agents", nargs="+", default=["d3rlpy.dt", "dt"], metavar="NAME[,KEY=VALUE...][@STEPS]",
                   help=f"rl_seq algorithms (a variant: its config overrides after commas, e.g. vdt,eta=0) "
                        f"and d3rlpy peers ({', '.join(PEERS)})")
    p.add_argument("--datasets", nargs="+", default=["hopper/medium-v0"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--warmup", type=int, default=1000)
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--eval-every", type=int, default=1000, help="periodic evaluations (for best and the last three)")
    p.add_argument("--target-return", type=float, default=None,
                   help="default: 3600 hopper, 6000 halfcheetah, 5000 walker2d, else the data's best return")
    p.add_argument("--baseline", default="d3rlpy.dt", help="the agent the ratios divide by")
    p.add_argument("--rl-seq-set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="extra rl_seq config overrides (each passed as --set KEY=VALUE)")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--speed", action="store_true", help="also time training and acting against HF")
    p.add_argument("--report", action="store_true", help="only tabulate the finished jobs")
    p.add_argument("--peers-venv", default=str(ROOT / ".venv-peers"))
    p.add_argument("--peers-python", default=None, help="an interpreter with the peers installed (no virtualenv made)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where both libraries train and act")
    p.add_argument("--out", default="runs/peers")
    p.add_argument("--table", default=None, help="also write the table to this file (e.g. docs/bench/peers.md)")
    p.add_argument("--plot", default=None, help="also plot the scores to this PNG")
    a = p.parse_args()
    from rl_seq.agents import PRESETS, config_for
    from rl_seq.config import ConfigError

    for spec in a.agents:
        at = spec.partition("@")[2]
        name, overrides, _ = parse_agent(spec.partition("@")[0], 0)
        if name not in PEERS and name not in PRESETS or (at and not at.isdigit()):
            p.error(f"unknown agent {spec!r}: NAME[,KEY=VALUE...][@STEPS], NAME one of rl_seq's "
                    f"({', '.join(PRESETS)}) or {', '.join(PEERS)}")
        if any(not re.fullmatch(r"[A-Za-z_][\w.]*=[^,@/]+", kv) for kv in overrides) or (overrides and name in PEERS):
            p.error(f"bad agent variant {spec!r}: KEY=VALUE overrides of an rl_seq algorithm, e.g. vdt,eta=0 "
                    "(the d3rlpy peers run their reproduction recipes as they are)")
        if name in PRESETS:
            try:  # a bad value (--rl-seq-set's or the variant's) stops here, not one job after another
                config_for(name, overrides=[*a.rl_seq_set, *overrides])
            except (ConfigError, ValueError, TypeError) as e:
                p.error(f"agent {spec!r} with --rl-seq-set {' '.join(a.rl_seq_set) or '(none)'}: {e}")
    a.rl_seq_set = [x for kv in a.rl_seq_set for x in ("--set", kv)]
    Path(a.out).mkdir(parents=True, exist_ok=True)
    needs_peers = a.speed or (not a.report and any(parse_agent(g, 0)[0] in PEERS for g in a.agents))
    py = (Path(a.peers_python) if a.peers_python else peers_python(Path(a.peers_venv))) if needs_peers else None
    jobs = [(g, ds, s) for s in a.seeds for ds in a.datasets for g in a.agents]
    with ThreadPoolExecutor(a.jobs) as pool:
        rows = [r for r in pool.map(lambda j: job(*j, a, py), jobs) if r is not None]
    text, summary = score_table(rows, a)
    result = dict(scores=summary, steps=a.steps, warmup=a.warmup, episodes=a.episodes, eval_every=a.eval_every,
                  agents=a.agents, baseline=a.baseline)
    if a.speed:
        st, result["speed"] = speed_table(py)
        text += "\n" + st
    (Path(a.out) / "summary.json").write_text(json.dumps(result, indent=1))
    if a.table:
        Path(a.table).write_text(text + "\n")
    if a.plot and summary:
        plot(summary, a, Path(a.plot))
    print(text)


if __name__ == "__main__":
    main()
