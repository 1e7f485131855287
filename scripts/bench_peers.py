"""rl_seq against its peers, side by side (issue #14): rl_seq ``dt`` and d3rlpy's
DecisionTransformer on the same dataset, recipe, gradient steps, seeds, target return and
evaluation episodes (same env seeds); then the DT training step and acting latency of rl_seq
next to Hugging Face's ``DecisionTransformerModel``. Prints one table with ratios and writes
JSON (``OUT/summary.json``) and the table (``--table``).

    MINARI_DATASETS_PATH=../shared/datasets python scripts/bench_peers.py \\
        --datasets hopper/medium-v0 --steps 5000 --seeds 0 1 2 --jobs 2 --out runs/peers

The peers run in a virtualenv of their own (d3rlpy 2.8.1 pins gymnasium 1.0), made on first
use at ``--peers-venv`` from ``scripts/peers/requirements.txt`` (or ``--peers-python``, an
interpreter that has them): they are never rl_seq dependencies. ``--device cuda`` trains and
acts on the GPU on both sides (many jobs can share one GPU: ``--jobs``); ``--algo`` picks
another of rl_seq's return-conditioned agents. Each (library, dataset, seed) job writes its
JSON under ``--out`` and is skipped when the script is run again, so a stopped benchmark
resumes (a stopped rl_seq run resumes from its checkpoint); ``--jobs`` runs that many at once,
one thread each. ``--speed`` adds the
speed rows (run it on an idle machine); ``--report`` only tabulates the finished jobs.
"""

from __future__ import annotations

import argparse
import json
import os
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
    """The peers' interpreter, making the virtualenv on first use."""
    py = venv / "bin" / "python"
    if not py.exists():
        print(f"making the peers' virtualenv at {venv} (d3rlpy, transformers; a few minutes)", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "torch==2.13.0"], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "-r", str(HERE / "peers" / "requirements.txt")],
                       check=True)
    return py


def job_env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run_d3rlpy(py: Path, ds: str, seed: int, a, out: Path) -> dict:
    from rl_seq.config import eval_seed

    evals = out.with_suffix(".evals.jsonl")
    evals.unlink(missing_ok=True)
    cmd = [str(py), str(HERE / "peers" / "d3rlpy_dt.py"), ds, "--steps", str(a.steps), "--warmup", str(a.warmup),
           "--seed", str(seed), "--eval-seed", str(eval_seed(seed)), "--episodes", str(a.episodes),
           "--target-return", str(target_for(ds, a)), "--threads", "1", "--eval-every", str(a.eval_every),
           "--evals-file", str(evals), "--device", "cuda:0" if a.device == "cuda" else "cpu"]
    with open(out.with_suffix(".log"), "w") as log:
        res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=log, text=True, env=job_env())
    if res.returncode != 0:
        raise RuntimeError(f"d3rlpy job failed (see {out.with_suffix('.log')})")
    r = json.loads(res.stdout.strip().splitlines()[-1])
    return dict(lib="d3rlpy", dataset=ds, seed=seed, last=r["normalized_score"], best=r["best_normalized_score"],
                mean_return=float(np.mean(r["returns"])), train_step_s=r["train_step_s"], raw=r)


def run_rl_seq(ds: str, seed: int, a, out: Path) -> dict:
    import dataclasses

    from rl_seq.agents import PRESETS

    env = ds.split("/")[0]
    conditioned = "target_returns" in {f.name for f in dataclasses.fields(PRESETS[a.algo][0].config_class)}
    run = out.with_suffix("")
    cmd = [sys.executable, "-m", "rl_seq", "train", a.algo, "--dataset", ds, "--steps", str(a.steps),
           "--seed", str(seed), "--out", str(run), "--set", f"warmup_steps={a.warmup}",
           "--set", f"eval_every={a.eval_every or a.steps}", "--set", f"eval_episodes={a.episodes}",
           "--set", "threads=1", "--set", f"device={a.device}", *a.rl_seq_set]
    if conditioned:  # the return-conditioned agents act on d3rlpy's target; qt has none
        cmd += ["--set", f"target_returns=[{target_for(ds, a)}]"]
    cfg = ROOT / "configs" / a.algo / f"{env}.yaml"
    if cfg.exists():
        cmd += ["--config", str(cfg)]
    if (run / "checkpoints" / "last.pt").exists():
        cmd.append("--resume")
    t0 = time.perf_counter()
    with open(out.with_suffix(".log"), "w") as log:
        if subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=job_env()).returncode != 0:
            raise RuntimeError(f"rl_seq job failed (see {out.with_suffix('.log')})")
    rep = json.loads((run / "eval.json").read_text())
    return dict(lib="rl_seq", dataset=ds, seed=seed, last=rep["last"]["normalized_score"],
                best=rep["best"]["normalized_score"], mean_return=rep["last"]["mean_return"],
                wall_s_per_step=(time.perf_counter() - t0) / a.steps, raw=rep)  # evaluations included


def target_for(ds: str, a) -> float:
    return a.target_return if a.target_return is not None else TARGETS[ds.split("/")[0]]


def job(lib: str, ds: str, seed: int, a, py: Path | None) -> dict | None:
    out = Path(a.out) / f"{lib}-{ds.replace('/', '_')}-{a.steps}-s{seed}.json"
    if out.exists():
        return json.loads(out.read_text())
    if a.report:
        return None
    print(f"[{time.strftime('%H:%M:%S')}] start {lib} {ds} seed {seed}", file=sys.stderr, flush=True)
    try:
        r = run_d3rlpy(py, ds, seed, a, out) if lib == "d3rlpy" else run_rl_seq(ds, seed, a, out)
    except RuntimeError as e:  # the other jobs go on; a rerun retries this one
        print(f"[{time.strftime('%H:%M:%S')}] {e}", file=sys.stderr, flush=True)
        return None
    out.write_text(json.dumps(r, indent=1))
    print(f"[{time.strftime('%H:%M:%S')}] done  {lib} {ds} seed {seed}: {r['last']:.3f}", file=sys.stderr, flush=True)
    return r


def mean_std(xs: list[float]) -> str:
    xs = [100 * x for x in xs if x is not None]
    if len(xs) < 2:
        return f"{xs[0]:.1f}" if xs else "-"
    from rl_seq.runs import mean_std as seed_mean_std

    m, sd = seed_mean_std(xs)
    return f"{m:.1f} ± {sd:.1f}"


def score_table(rows: list[dict], a) -> tuple[str, list[dict]]:
    from rl_seq.data import load_episodes

    extra = " ".join(a.rl_seq_set[1::2])
    where = "1 thread" if a.device == "cpu" else f"{a.device}, {a.jobs} jobs sharing it"
    lines = [f"{a.steps} gradient steps (warm-up {a.warmup}), context K=20, batches of 64 windows of 20 steps "
             f"(rl_seq: its {a.algo} preset{', with ' + extra if extra else ''}), {where}, "
             f"{a.episodes} evaluation episodes on the same env seeds; normalised score x100, mean ± sample std over "
             f"seeds (n). Best is the best of the evaluations every {a.eval_every or a.steps} steps and the "
             "last; the ratio compares the last evaluations.",
             "", f"| dataset | data | target | d3rlpy DT (last) | d3rlpy DT (best) | rl_seq {a.algo} (last) "
             f"| rl_seq {a.algo} (best) | rl_seq / d3rlpy |", "|---|---|---|---|---|---|---|---|"]
    summary = []
    for ds in a.datasets:
        d = [r for r in rows if r["dataset"] == ds and r["lib"] == "d3rlpy"]
        s = [r for r in rows if r["dataset"] == ds and r["lib"] == "rl_seq"]
        data = load_episodes(ds).summary().get("normalized_score", float("nan"))
        dm = np.mean([r["last"] for r in d]) if d else float("nan")
        sm = np.mean([r["last"] for r in s]) if s else float("nan")
        ratio = sm / dm if d and s and dm > 0 else float("nan")
        lines.append(f"| {ds} | {100 * data:.1f} | {target_for(ds, a):.0f} | {mean_std([r['last'] for r in d])} "
                     f"(n={len(d)}) | {mean_std([r.get('best') for r in d])} | {mean_std([r['last'] for r in s])} "
                     f"(n={len(s)}) | {mean_std([r['best'] for r in s])} | {ratio:.2f} |")
        summary.append(dict(dataset=ds, data=data, d3rlpy=[r["last"] for r in d],
                            d3rlpy_best=[r.get("best") for r in d], rl_seq_last=[r["last"] for r in s],
                            rl_seq_best=[r["best"] for r in s], seeds_d3rlpy=[r["seed"] for r in d],
                            seeds_rl_seq=[r["seed"] for r in s], ratio=ratio))
    return "\n".join(lines), summary


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
    p.add_argument("--datasets", nargs="+", default=["hopper/medium-v0"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--warmup", type=int, default=1000)
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--eval-every", type=int, default=1000, help="rl_seq's periodic evaluations (for its best)")
    p.add_argument("--target-return", type=float, default=None, help="default: 3600 hopper, 6000 halfcheetah")
    p.add_argument("--libs", nargs="+", default=["d3rlpy", "rl_seq"], choices=["d3rlpy", "rl_seq"])
    p.add_argument("--algo", default="dt", help="rl_seq's agent (any offline one: dt, dc, ds4, lram, qt)")
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
    a = p.parse_args()
    a.rl_seq_set = [x for kv in a.rl_seq_set for x in ("--set", kv)]
    Path(a.out).mkdir(parents=True, exist_ok=True)
    needs_peers = a.speed or (not a.report and "d3rlpy" in a.libs)
    py = (Path(a.peers_python) if a.peers_python else peers_python(Path(a.peers_venv))) if needs_peers else None
    jobs = [(lib, ds, s) for ds in a.datasets for s in a.seeds for lib in a.libs]
    with ThreadPoolExecutor(a.jobs) as pool:
        rows = [r for r in pool.map(lambda j: job(*j, a, py), jobs) if r is not None]
    text, summary = score_table(rows, a)
    result = dict(scores=summary, steps=a.steps, warmup=a.warmup, episodes=a.episodes)
    if a.speed:
        st, result["speed"] = speed_table(py)
        text += "\n" + st
    (Path(a.out) / "summary.json").write_text(json.dumps(result, indent=1))
    if a.table:
        Path(a.table).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
