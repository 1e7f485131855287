"""Data-parallel training throughput (issue #16): ``rl-seq train dt`` in 1 process with 1
thread, 1 process with N threads, and N processes under torchrun (DDP, gloo on CPU) with
1 thread each, at the reference DT size. Prints a table and writes JSON.

    MINARI_DATASETS_PATH=../shared/datasets python scripts/bench_ddp.py --dataset hopper/medium-v0

steps/s is measured between the first and the last logged training step (start-up, dataset
loading and the final save excluded); samples/s counts windows of the global batch (per-rank
batch x processes). Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from rl_seq.plot import print_table
from rl_seq.runs import read_metrics


def run(dataset: str, steps: int, procs: int, threads: int, out: Path) -> dict:
    train = ["-m", "rl_seq", "train", "dt", "--dataset", dataset, "--steps", str(steps), "--out", str(out),
             "--set", f"threads={threads}", "--set", "eval_episodes=0", "--set", "log_every=10",
             "--set", "checkpoint_every=0", "--set", "warmup_steps=100"]
    cmd = [sys.executable, *(["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"]
                             if procs > 1 else []), *train]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    res = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    if res.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{res.stderr[-3000:]}")
    rows = [r for r in read_metrics(out) if r["kind"] == "train"]
    first, last = rows[0], rows[-1]
    sps = (last["step"] - first["step"]) / (last["time"] - first["time"])
    batch = yaml.safe_load((out / "config.yaml").read_text())["config"]
    return dict(processes=procs, threads=threads, steps_per_s=sps, samples_per_s=sps * batch["batch_size"] * procs,
                per_rank_batch=batch["batch_size"], segment_steps=batch["segment"] or batch["context"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="rl_seq/pointgoal/medium-v0")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--procs", type=int, default=2, help="N: processes (and threads of the threaded run)")
    p.add_argument("--json", default="bench_ddp.json")
    a = p.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for procs, threads in ((1, 1), (1, a.procs), (a.procs, 1)):
            results.append(run(a.dataset, a.steps, procs, threads, Path(tmp) / f"p{procs}t{threads}"))
    base = results[0]
    for r in results:
        r["speedup_samples"] = r["samples_per_s"] / base["samples_per_s"]
    print_table(f"dt on {a.dataset}, reference size (embed 128, 3 layers), {a.steps} steps, per-rank batch "
                f"{base['per_rank_batch']} x {base['segment_steps']} steps",
                ["processes", "threads each", "steps/s", "samples/s (windows)", "samples/s vs 1x1"],
                [[r["processes"], r["threads"], r["steps_per_s"], r["samples_per_s"], r["speedup_samples"]]
                 for r in results])
    Path(a.json).write_text(json.dumps(dict(dataset=a.dataset, steps=a.steps, results=results), indent=1))


if __name__ == "__main__":
    main()
