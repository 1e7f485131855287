"""rl-seq sweep: grid points x seeds as run folders through Ray Tune."""

import builtins
import json

import pytest

from rl_seq.cli import main
from rl_seq.data import load_episodes
from rl_seq.sweep import Sweep, parse_grid, run_sweep

DATA = "rl_seq/pointgoal/medium-v0"
TINY = ["--set", "backbone.d_model=16", "--set", "backbone.n_layers=1", "--set", "batch_size=4", "--set", "context=5",
        "--set", "warmup_steps=1", "--set", "eval_episodes=2", "--set", "eval_every=0", "--steps", "10"]


def test_grid_values_split_on_top_level_commas():
    assert parse_grid(["lr=1e-4,3e-4", "target_returns=[1,2],[3]"]) == {
        "lr": ["1e-4", "3e-4"], "target_returns": ["[1,2]", "[3]"]}
    with pytest.raises(ValueError, match="key=v1,v2"):
        parse_grid(["lr"])
    s = Sweep("dt", dataset=DATA, grid={"lr": ["1e-4", "3e-4"], "context": ["5"]}, seeds=[0, 1])
    assert s.points() == [{"lr": "1e-4", "context": "5"}, {"lr": "3e-4", "context": "5"}]


def test_a_bad_grid_key_fails_before_ray_starts(capsys, tmp_path):
    assert main(["sweep", "dt", "--dataset", DATA, "--grid", "lrr=1,2", "--out", str(tmp_path / "s")]) == 2
    assert "did you mean 'lr'" in capsys.readouterr().err and not (tmp_path / "s").exists()


def test_without_ray_the_error_names_the_extra(monkeypatch):
    real = builtins.__import__

    def no_ray(name, *a, **k):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(ImportError, match=r"pip install 'rl-seq\[dist\]'"):
        run_sweep(Sweep("dt", dataset=DATA))


def test_one_trial_on_local_ray(tmp_path, capsys):
    pytest.importorskip("ray.tune")
    import ray

    load_episodes(DATA)
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        assert main(["sweep", "dt", "--dataset", DATA, "--out", str(tmp_path / "s"), *TINY]) == 0
    finally:
        ray.shutdown()
    assert "| (defaults) | 1 |" in capsys.readouterr().out and (tmp_path / "s" / "default-s0" / "model").exists()


@pytest.mark.slow  # about 80 s on 2 cores
def test_a_2x2_sweep_on_local_ray_writes_run_folders_and_a_summary_and_resumes(tmp_path, capsys):
    pytest.importorskip("ray.tune")
    import ray

    load_episodes(DATA)
    out = tmp_path / "sweep"
    argv = ["sweep", "dt", "--dataset", DATA, "--grid", "lr=1e-3,3e-3", "--seeds", "0", "1", "--out", str(out), *TINY]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        assert main(argv) == 0
        printed = capsys.readouterr().out
        assert "| lr=1e-3 | 2 |" in printed and "| lr=3e-3 | 2 |" in printed
        runs = sorted(p.name for p in out.iterdir() if (p / "eval.json").exists())
        assert runs == ["lr=1e-3-s0", "lr=1e-3-s1", "lr=3e-3-s0", "lr=3e-3-s1"]
        summary = json.loads((out / "sweep.json").read_text())
        assert [len(r["last"]["values"]) for r in summary["rows"]] == [2, 2] and (out / "sweep.png").exists()
        stamps = {r: (out / r / "eval.json").stat().st_mtime_ns for r in runs}
        assert main(argv) == 0  # run again: every trial is finished, none retrains
        assert {r: (out / r / "eval.json").stat().st_mtime_ns for r in runs} == stamps
    finally:
        ray.shutdown()
