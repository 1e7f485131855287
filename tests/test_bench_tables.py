"""The benchmarks' tables: one cell per header column, whichever agents are asked for."""

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import bench_online_peers as bench  # noqa: E402


def row(agent: str, ret: float, seed: int = 0) -> dict:
    return dict(agent=agent, task="t", seed=seed, mean_return=ret, train_s=100.0 if agent == bench.SB3 else 50.0)


@pytest.mark.parametrize("agents", [["lstm"], [bench.SB3, "gtrxl", "lstm"], ["gtrxl", bench.SB3]])
def test_every_table_row_has_as_many_cells_as_the_header(agents):
    a = SimpleNamespace(agents=agents, tasks=["t"], steps=1000, episodes=2)
    text, _ = bench.table([row(bench.SB3, 0.5), row("gtrxl", 0.7), row("gtrxl", 0.9, 1), row("lstm", 0.1)], a)
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    assert len({ln.count("|") for ln in lines}) == 1, lines
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    if "gtrxl" in agents:
        assert cells[header.index("gtrxl")] == "0.800 ± 0.141 (n=2), 50 s"  # the sample std of 0.7, 0.9
    if bench.SB3 in agents and "gtrxl" in agents:
        assert cells[header.index("gtrxl: Δ, speed-up")] == "+0.300, 2.0x"


def test_offline_table_cells_means_ratios_and_budgets(store):
    """The offline benchmark (bench_peers): each cell holds the seeds' last and last-three
    means with their sample std, the mean over datasets and the ratio to the baseline below,
    and NAME@STEPS evaluates at the same fractions of its run."""
    import bench_peers as peers

    ds = "rl_seq/pointgoal/medium-v0"
    a = SimpleNamespace(rl_seq_set=[], device="cpu", jobs=1, steps=5000, warmup=10, episodes=2, eval_every=1000,
                        agents=["vdt", "d3rlpy.iql", "d3rlpy.td3bc"], datasets=[ds], baseline="d3rlpy.iql")
    rows = [dict(spec="vdt", agent="vdt", dataset=ds, seed=s, steps=5000, last=last, last3=peers.last3(curve),
                 wall_s=600.0) for s, last, curve in ((0, 0.7, [0.1, 0.5, 0.6, 0.7]), (1, 0.9, [0.2, 0.8, 0.8, 0.8]))]
    rows.append(dict(spec="d3rlpy.iql", agent="d3rlpy.iql", dataset=ds, seed=0, steps=5000, last=0.4, last3=0.5,
                     wall_s=60.0))
    text, summary = peers.score_table(rows, a)
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    assert len({ln.count("|") for ln in lines}) == 1, lines
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == ["dataset", "data", "vdt", "d3rlpy.iql"]  # td3bc has no finished job: no column
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    assert cells[2] == "80.0 ± 14.1 / 70.0 ± 14.1 (n=2)"  # last three: 0.6 and 0.8
    assert lines[-2].split("|")[3].strip() == "2.00 / 1.40"  # ratio to the baseline: 0.8 / 0.4, 0.7 / 0.5
    assert lines[-1].split("|")[3:5] == [" 10.0 ", " 1.0 "]  # wall time per run, minutes
    assert [s["agent"] for s in summary] == ["vdt", "d3rlpy.iql"] and summary[0]["last"] == [0.7, 0.9]
    assert peers.parse_agent("d3rlpy.iql@46000", 5000) == ("d3rlpy.iql", [], 46000)
    assert peers.eval_every(46000, a) == 9200 and peers.eval_every(5000, a) == 1000


def test_offline_agent_variants_run_with_their_overrides_under_their_own_name(tmp_path, monkeypatch):
    """``vdt,eta=0@500``: vdt trained with ``--set eta=0`` (after the shared overrides, so it
    wins), 500 steps, its job file apart from plain vdt's, so both resume and tabulate apart."""
    import bench_peers as peers

    calls = []

    def fake_run(cmd, **kw):
        calls.append(cmd)
        run = Path(cmd[cmd.index("--out") + 1])
        run.mkdir(parents=True)
        (run / "eval.json").write_text(json.dumps(dict(last=dict(normalized_score=0.5, mean_return=1.0),
                                                       best=dict(normalized_score=0.6))))
        return SimpleNamespace(returncode=0)

    monkeypatch.setattr(peers.subprocess, "run", fake_run)
    monkeypatch.setattr("rl_seq.runs.read_metrics", lambda run: [dict(kind="eval", step=500, normalized_score=0.5)])
    a = SimpleNamespace(rl_seq_set=["--set", "eta=2"], device="cpu", steps=5000, warmup=10, episodes=2,
                        eval_every=1000, out=str(tmp_path), report=False, target_return=None)
    assert peers.parse_agent("vdt,eta=0,tau=0.01@500", 5000) == ("vdt", ["eta=0", "tau=0.01"], 500)
    r = peers.job("vdt,eta=0@500", "hopper/medium-v0", 0, a, None)
    cmd = calls[0]
    assert cmd[cmd.index("--steps") + 1] == "500"
    sets = [cmd[i + 1] for i, x in enumerate(cmd) if x == "--set"]
    assert sets.index("eta=0") > sets.index("eta=2")  # the variant's own override is passed last
    assert r["spec"] == "vdt,eta=0@500" and (tmp_path / "vdt,eta=0-hopper_medium-v0-500-s0.json").exists()
    peers.job("vdt@500", "hopper/medium-v0", 0, a, None)
    assert "eta=0" not in calls[1] and (tmp_path / "vdt-hopper_medium-v0-500-s0.json").exists()


def test_peers_virtualenv_is_made_once_and_remade_when_half_made(tmp_path, monkeypatch):
    """Two benchmarks started together make the peers' virtualenv once (the second waits for the
    first's install, not failing on a half-made one); an interrupted install is made again."""
    import threading
    import time

    import bench_peers as peers

    made = []

    def fake_run(cmd, **kw):
        if cmd[1:3] == ["-m", "venv"]:
            made.append(cmd[-1])
            (Path(cmd[-1]) / "bin").mkdir(parents=True, exist_ok=True)
            (Path(cmd[-1]) / "bin" / "python").touch()
        time.sleep(0.1)  # an install takes a while: the other benchmark must wait, not go on
        return SimpleNamespace(returncode=0)

    monkeypatch.setattr(peers.subprocess, "run", fake_run)
    venv = tmp_path / "venv-peers"
    pythons = []
    threads = [threading.Thread(target=lambda: pythons.append(peers.peers_python(venv))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert made == [str(venv)] and pythons == [venv / "bin" / "python"] * 2
    assert (venv / ".rl_seq-peers-ready").exists()
    (venv / ".rl_seq-peers-ready").unlink()  # an install that stopped half-way: python there, no marker
    assert peers.peers_python(venv) == venv / "bin" / "python" and made == [str(venv)] * 2


@pytest.mark.parametrize("argv", [["--agents", "vdt,eta=-1"], ["--agents", "vdt,eta"], ["--agents", "d3rlpy.iql,tau=1"],
                                  ["--agents", "vdt,nosuch=1"], ["--agents", "vdt@x"],
                                  ["--agents", "vdt", "--rl-seq-set", "eta=-1"]])
def test_bad_agents_and_overrides_stop_before_any_job(argv, tmp_path, monkeypatch, capsys):
    """A bad variant, budget or shared override: exit 2 with one message, no output folder."""
    import bench_peers as peers

    monkeypatch.setattr(sys, "argv", ["bench_peers.py", *argv, "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit) as e:
        peers.main()
    assert e.value.code == 2 and "error:" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_minigrid_levels_reach_both_libraries_as_the_same_observation(tmp_path, monkeypatch):
    """A MiniGrid task in the online benchmark trains rl_seq on ``rl_seq/MiniGrid-v0`` with that
    level; the offline peers (d3rlpy) read a MiniGrid dataset's Dict as one vector, the view's
    147 indices then the heading one-hot, the same for a step and a stack of steps, and evaluate
    on the level made by minigrid itself with the same layouts for the same seeds."""
    pytest.importorskip("minigrid")
    import gymnasium as gym
    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts" / "peers"))
    import d3rlpy_offline as d3

    calls = []

    def fake_run(cmd, **kw):
        calls.append(cmd)
        run = Path(cmd[cmd.index("--out") + 1])
        run.mkdir(parents=True)
        (run / "eval.json").write_text(json.dumps(dict(last=dict(mean_return=0.5))))
        return SimpleNamespace(returncode=0)

    monkeypatch.setattr(bench.subprocess, "run", fake_run)
    monkeypatch.setattr("rl_seq.runs.read_metrics", lambda run: [dict(kind="train", step=8, time=1.0)])
    a = SimpleNamespace(steps=8, episodes=2, rl_seq_set=[], out=str(tmp_path), report=False)
    bench.job("gtrxl", "MiniGrid-MemoryS7-v0", 0, a)
    cmd = calls[0]
    assert cmd[cmd.index("--env") + 1] == "rl_seq/MiniGrid-v0" and "env_kwargs.level=MiniGrid-MemoryS7-v0" in cmd

    spec = SimpleNamespace(id="rl_seq/MiniGrid-v0", kwargs=dict(level="BabyAI-GoToRedBallNoDists-v0"))
    raw = d3.eval_env(SimpleNamespace(spec=SimpleNamespace(env_spec=spec)), gym)
    ours = gym.make("rl_seq/MiniGrid-v0", level="BabyAI-GoToRedBallNoDists-v0")
    o_raw, _ = raw.reset(seed=3)
    o_ours, _ = ours.reset(seed=3)
    np.testing.assert_array_equal(o_raw["image"], o_ours["image"])
    x = d3.flat(o_raw, np)
    assert x.shape == (151,) and x.dtype == np.float32
    np.testing.assert_array_equal(x[:147], o_raw["image"].reshape(-1))
    assert x[147:].tolist() == np.eye(4)[o_raw["direction"]].tolist()
    stack = dict(image=np.stack([o_raw["image"]] * 2), direction=np.array([o_raw["direction"], 0]))
    np.testing.assert_array_equal(d3.flat(stack, np)[0], x)
    assert d3.flat(stack, np)[1, 147:].tolist() == [1, 0, 0, 0]


def test_the_return_target_is_d3rlpys_for_mujoco_else_the_datas_best(store):
    """Both libraries condition on one target: d3rlpy's for the MuJoCo tasks, else the data's
    best episode return (MiniGrid's returns lie in [0, 1]); ``--target-return`` wins."""
    import bench_peers as peers
    from conftest import make_minari, point_episode

    make_minari("grid/level/mixed-v0", [point_episode(5, seed=0, reward=[0, 0, 0, 0, 0.25]),
                                        point_episode(5, seed=1, reward=[0, 0, 0, 0, 0.75])])
    a = SimpleNamespace(target_return=None)
    assert peers.target_for("hopper/medium-v0", a) == 3600.0
    assert peers.target_for("grid/level/mixed-v0", a) == pytest.approx(0.75)
    assert peers.target_for("grid/level/mixed-v0", SimpleNamespace(target_return=0.5)) == 0.5
