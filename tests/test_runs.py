"""Run folders, atomic checkpoints, resume and the CLI's errors."""

import json
import os
import signal
import time

import pytest
import torch

from rl_seq.cli import main
from rl_seq.runs import CheckpointError, load_checkpoint, save_checkpoint

TINY = ["--set", "backbone.d_model=16", "--set", "backbone.n_layers=1", "--set", "batch_size=8",
        "--set", "context=5", "--set", "warmup_steps=10", "--set", "eval_episodes=2",
        "--set", "log_every=5"]


def train(out, steps, *extra, algo="dt"):
    return main(["train", algo, "--dataset", "rl_seq/pointgoal/medium-v0", "--steps", str(steps),
                 "--out", str(out), *TINY, "--set", "eval_every=10", "--set", "checkpoint_every=10",
                 *extra])


def test_run_folder_layout_and_eval_json(tmp_path, capsys):
    assert train(tmp_path / "r", 20) == 0
    r = tmp_path / "r"
    for f in ("config.yaml", "metrics.jsonl", "metrics.csv", "checkpoints/last.pt", "model/config.yaml",
              "model/model.safetensors", "eval.json", "plot.png"):
        assert (r / f).exists(), f
    rep = json.loads((r / "eval.json").read_text())
    assert rep["last"]["step"] == 20 and rep["best"]["step"] in (10, 20)
    assert set(rep["last"]) >= {"mean_return", "std_return", "normalized_score", "episodes", "seconds"}
    kinds = {json.loads(line)["kind"] for line in (r / "metrics.jsonl").read_text().splitlines()}
    assert kinds == {"train", "eval"}
    assert main(["eval", str(r), "--episodes", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    meta = __import__("rl_seq").load_agent(r / "model").meta
    lo, hi = meta["ref_min_score"], meta["ref_max_score"]
    assert out["episodes"] == 3 and len(out["returns"]) == 3
    assert abs(out["normalized_score"] - (out["mean_return"] - lo) / (hi - lo)) < 1e-9  # D4RL's formula


@pytest.mark.parametrize("sig,algo", [(signal.SIGINT, "dt"), (signal.SIGTERM, "dt"), (signal.SIGTERM, "vdt")])
def test_interrupted_run_resumes_to_the_same_weights(tmp_path, monkeypatch, sig, algo):
    """vdt: its critic, target critic and the critic's optimiser come back too."""
    assert train(tmp_path / "full", 30, algo=algo) == 0
    # Ctrl-C / SIGTERM arrives during step 17: the step finishes, a checkpoint is written, exit 130
    from rl_seq.data.sampler import SegmentSampler
    calls = {"n": 0}
    real = SegmentSampler.sample

    def sample(self, n):
        calls["n"] += 1
        if calls["n"] == 17:
            os.kill(os.getpid(), sig)
        return real(self, n)

    monkeypatch.setattr(SegmentSampler, "sample", sample)
    assert train(tmp_path / "part", 30, algo=algo) == 130
    monkeypatch.setattr(SegmentSampler, "sample", real)
    assert torch.load(tmp_path / "part" / "checkpoints" / "last.pt", weights_only=True)["step"] == 17
    assert not (tmp_path / "part" / "model").exists()
    assert train(tmp_path / "part", 30, "--resume", algo=algo) == 0
    from safetensors.torch import load_file
    a = load_file(str(tmp_path / "full" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "part" / "model" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = [json.loads(line) for line in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    full = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["kind"]) for r in rows] == [(r["step"], r["kind"]) for r in full]
    assert [r.get("loss") for r in rows] == [r.get("loss") for r in full]


def test_resume_with_another_config_is_refused(tmp_path, capsys):
    assert train(tmp_path / "r", 10) == 0
    assert train(tmp_path / "r", 10, "--resume", "--set", "lr=0.1") == 2
    assert "different config" in capsys.readouterr().err


def test_checkpoints_are_atomic_and_corruption_is_reported(tmp_path):
    p = tmp_path / "ck.pt"
    save_checkpoint(p, {"w": torch.ones(3), "step": 5})
    assert load_checkpoint(p)["step"] == 5
    assert [f.name for f in tmp_path.iterdir()] == ["ck.pt"]  # no temp file left behind
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(p)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


def test_existing_run_is_not_overwritten(tmp_path, capsys):
    assert train(tmp_path / "r", 10) == 0
    assert train(tmp_path / "r", 10) == 2
    assert "--resume" in capsys.readouterr().err


@pytest.mark.parametrize("argv,needle", [
    (["train", "dt", "--dataset", "nope/missing-v0"], "not in the local Minari store"),
    (["train", "transformer", "--dataset", "rl_seq/pointgoal/medium-v0"], "unknown algorithm"),
    (["train", "dt", "--dataset", "rl_seq/pointgoal/medium-v0", "--set", "lrr=1"], "did you mean 'lr'"),
    (["train", "dt", "--dataset", "rl_seq/pointgoal/medium-v0", "--set", "lr"], "key=value"),
    (["train", "dt"], "--dataset"),
    (["train", "relit", "--dataset", "rl_seq/pointgoal/medium-v0"], "--env"),
    (["eval", "/nonexistent/run"], "holds no saved agent"),
])
def test_cli_errors_are_clear(argv, needle, capsys, tmp_path):
    assert main(argv + (["--out", str(tmp_path / "x")] if argv[0] == "train" else [])) == 2
    assert needle in capsys.readouterr().err


def test_online_training_from_the_cli(tmp_path):
    out = tmp_path / "ppo"
    assert main(["train", "lstm", "--env", "rl_seq/TMaze-v0", "--steps", "1024", "--out", str(out),
                 "--set", "env_kwargs.corridor_length=2", "--set", "eval_episodes=2"]) == 0
    rep = json.loads((out / "eval.json").read_text())
    assert rep["last"]["episodes"] == 2 and (out / "model" / "model.safetensors").exists()
    assert main(["eval", str(out), "--episodes", "2", "--json"]) == 0


def test_help_texts(capsys):
    for argv in (["--help"], ["train", "--help"], ["eval", "--help"], ["datasets", "--help"],
                 ["bench", "--help"], ["plot", "--help"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 0
        assert "example" in capsys.readouterr().out
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "dt" in out and "mlstm" in out and "rl_seq/PointGoal-v0" in out


def test_train_help_names_every_algorithm_and_its_keys(capsys):
    """The train help is made from PRESETS: every algorithm in its description and each config
    class's keys under the algorithms that share it (vdt's critic keys under [vdt])."""
    from rl_seq.agents import PRESETS

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    description = text.split("positional arguments")[0]
    assert all(f" {name}" in description for name in PRESETS), description
    assert "[dt dc ds4 lram]" in text and "[gtrxl relit lstm]" in text
    vdt_keys = text.split("[vdt]")[1].split("[qt]")[0]
    assert " eta " in vdt_keys and " critic_lr " in vdt_keys


def test_bench_train_times_the_chosen_algorithms(tmp_path):
    out = tmp_path / "bench.json"
    t0 = time.perf_counter()
    assert main(["bench", "train", "--quick", "--algos", "dt", "qt", "--threads", "1", "--compile", "off",
                 "--json", str(out)]) == 0
    elapsed = time.perf_counter() - t0
    res = json.loads(out.read_text())
    assert {k for k in res if "@" in k} == {"dt@1", "qt@1"}
    for algo in ("dt", "qt"):
        r = res[f"{algo}@1"]
        # --quick times 3 training steps and 50 acting steps per algorithm, all inside the wall time
        assert r["compile"] == "off" and 0 < 3 * r["train_step_s"] < elapsed
        assert 0 < 50 * r["act_ms_per_step"] / 1e3 < elapsed
