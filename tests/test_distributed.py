"""Data-parallel offline training under torchrun (DDP, gloo on CPU)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import rl_seq
from rl_seq.cli import main
from rl_seq.data import load_episodes

HERE = Path(__file__).parent
DATA = "rl_seq/pointgoal/medium-v0"
TINY = ["--set", "backbone.d_model=16", "--set", "backbone.n_layers=1", "--set", "batch_size=4",
        "--set", "context=5", "--set", "warmup_steps=1", "--set", "eval_episodes=2", "--set", "threads=1"]


def torchrun(*args: str, n: int = 2) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
                           *args], capture_output=True, text=True, timeout=240,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_two_ranks_train_the_weights_of_one_process_on_the_global_batch(tmp_path):
    """Rank r gets rows [rB, (r+1)B) of the 2B windows one process draws: after k steps the
    DDP weights equal the single-process run's (gradients all-reduced, the loss normalised
    over the real steps of both ranks)."""
    sys.path.insert(0, str(HERE))
    from ddp_worker import CONFIG, B

    load_episodes(DATA)  # made once, before the ranks start
    res = torchrun(str(HERE / "ddp_worker.py"), str(tmp_path), "6")
    assert res.returncode == 0, res.stderr[-3000:]
    ddp = torch.load(tmp_path / "weights.pt", weights_only=True)
    one = rl_seq.make_agent("dt", dataset=DATA, batch_size=2 * B, **CONFIG)
    one.learn(DATA, steps=6)
    ref = one.model.state_dict()
    assert max((ddp[k] - ref[k]).abs().max().item() for k in ref) < 1e-5


def test_torchrun_writes_one_complete_run_folder_and_resumes(tmp_path):
    load_episodes(DATA)
    out = tmp_path / "ddp"
    argv = ["-m", "rl_seq", "train", "dt", "--dataset", DATA, "--steps", "20", "--out", str(out), *TINY,
            "--set", "eval_every=10", "--set", "checkpoint_every=10", "--set", "log_every=5"]
    res = torchrun(*[a if a != "20" else "10" for a in argv])
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("run: ") == 1  # rank 0 reports
    ck = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert ck["step"] == 10 and len(ck["ranks"]) == 2
    assert ck["ranks"][0]["sampler"] != ck["ranks"][1]["sampler"]  # each rank its own stream
    res = torchrun(*argv, "--resume")
    assert res.returncode == 0, res.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == [".lock", "checkpoints", "config.yaml", "eval.json",
                                                       "metrics.csv", "metrics.jsonl", "model", "plot.png"]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["kind"] == "train"] == [5, 10, 15, 20]
    assert json.loads((out / "eval.json").read_text())["last"]["step"] == 20
    assert rl_seq.load_agent(out).algo == "dt"


def test_resume_with_another_number_of_processes_is_refused(tmp_path, capsys):
    load_episodes(DATA)
    out = tmp_path / "ddp"
    argv = ["train", "dt", "--dataset", DATA, "--steps", "4", "--out", str(out), *TINY, "--set", "checkpoint_every=2"]
    assert torchrun("-m", "rl_seq", *argv).returncode == 0
    assert main([*argv[:4], "--steps", "8", *argv[6:], "--resume"]) == 2
    assert "written by 2 process(es), this run has 1; resume with the same number (--nproc 2)" in \
        capsys.readouterr().err


@pytest.mark.parametrize("argv", [["lstm", "--env", "CartPole-v1"], ["odt", "--dataset", DATA]], ids=["lstm", "odt"])
def test_nproc_is_for_the_data_parallel_algorithms(argv, tmp_path, capsys):
    assert main(["train", *argv, "--nproc", "2", "--out", str(tmp_path / "r")]) == 2
    assert "trains in one process; --nproc is for dt, dc, ds4, lram and qt" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("argv", [["lstm", "--env", "CartPole-v1"], ["odt", "--dataset", DATA]], ids=["lstm", "odt"])
def test_a_hand_started_torchrun_of_a_one_process_algorithm_is_refused(argv, tmp_path, monkeypatch, capsys):
    """Under ``torchrun -m rl_seq train ...`` (WORLD_SIZE > 1, the process group not joined
    yet) lstm and odt stop before joining it, and write nothing."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["train", *argv, "--steps", "4", "--out", str(tmp_path / "r"), *TINY[:2]]) == 2
    assert "trains in one process; torchrun/DDP is for dt, dc, ds4, lram and qt" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_nproc_starts_torchrun_for_the_user(tmp_path, capsys):
    load_episodes(DATA)
    out = tmp_path / "np"
    assert main(["train", "dt", "--dataset", DATA, "--nproc", "2", "--steps", "4", "--out", str(out), *TINY]) == 0
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=True)["step"] == 4
    assert len(torch.load(out / "checkpoints" / "last.pt", weights_only=True)["ranks"]) == 2
    assert (out / "model" / "model.safetensors").exists()
