"""The engine drives every algorithm through one protocol and one optimiser step: ``amp`` and
``compile`` reach every family, the engine knows no agent class, and runs log where users
read them (JSONL/CSV, TensorBoard, offline wandb)."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import rl_seq

ROOT = Path(__file__).resolve().parents[1]
DATA = "rl_seq/pointgoal/medium-v0"
OFFLINE = dict(backbone=dict(d_model=16, n_layers=1), batch_size=4, context=3, warmup_steps=2, eval_every=0,
               eval_episodes=0, log_every=1, threads=1)
PPO = dict(n_envs=2, n_steps=16, seq_len=8, n_minibatches=2, n_epochs=1, eval_every=0, eval_episodes=0, log_every=1,
           threads=1, env_kwargs=dict(corridor_length=2), backbone=dict(d_model=16))
# one agent of each training family: offline BC, offline Q-learning, offline actor-critic, offline -> online,
# online PPO
FAMILIES = {
    "dt": (lambda **kw: rl_seq.make_agent("dt", dataset=DATA, **OFFLINE, **kw),
           lambda a: a.learn(DATA, steps=2)),
    "qt": (lambda **kw: rl_seq.make_agent("qt", dataset=DATA, **OFFLINE, **kw),
           lambda a: a.learn(DATA, steps=2)),
    "vdt": (lambda **kw: rl_seq.make_agent("vdt", dataset=DATA, **OFFLINE, **kw),
            lambda a: a.learn(DATA, steps=2)),
    "odt": (lambda **kw: rl_seq.make_agent("odt", dataset=DATA, **OFFLINE, updates_per_trajectory=2, **kw),
            lambda a: a.learn(DATA, steps=1, online_steps=5)),
    "lstm": (lambda **kw: rl_seq.make_agent("lstm", "rl_seq/TMaze-v0", **PPO, **kw),
             lambda a: a.learn("rl_seq/TMaze-v0", steps=32)),
}
# and the other memories (GRU-gated blocks, Transformer-XL attention, AGaLiTe)
FAMILIES.update({algo: (lambda algo=algo, **kw: rl_seq.make_agent(algo, "rl_seq/TMaze-v0", **PPO, **kw),
                        lambda a: a.learn("rl_seq/TMaze-v0", steps=32)) for algo in ("gtrxl", "relit")})


def test_the_engine_imports_no_agent_and_names_none():
    """No import of rl_seq.agents in the engine (directly or through what it imports), so no
    circle between them; the engine drives the ``Algorithm`` protocol."""
    code = "import sys, rl_seq.engine; print([m for m in sys.modules if m.startswith('rl_seq.agents')])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    tree = ast.parse((ROOT / "rl_seq" / "engine.py").read_text())
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} | {
        n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    assert not names & {"Agent", "DecisionAgent", "QTAgent", "ODTAgent", "PPOAgent"}


def test_one_optimiser_step_in_the_code_base():
    """backward / zero_grad / an optimiser's step / clip_grad_norm_ appear in the engine only
    (``rl-seq bench kernels`` times a mixer's backward pass, with no optimiser)."""
    found = {}
    for path in (ROOT / "rl_seq").rglob("*.py"):
        if path.name == "bench.py":
            continue
        src = path.read_text()
        for needle in (".backward(", ".zero_grad(", "clip_grad_norm_(", "scheduler.step(", "o.step()"):
            if needle in src:
                found.setdefault(needle, set()).add(path.relative_to(ROOT).as_posix())
    assert found == {k: {"rl_seq/engine.py"} for k in found} and ".backward(" in found


@pytest.mark.parametrize("family", list(FAMILIES))
def test_compile_applies_to_every_family(family, monkeypatch):
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda model, **kw: compiled.append(model) or model)
    make, learn = FAMILIES[family]
    agent = make(compile="on")
    learn(agent)
    assert compiled == [agent.model]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_bf16_autocast_applies_to_every_family(family):
    """``amp=bf16``: the training forward's linear layers run in bfloat16 (on the CPU too);
    ``amp=off``: in float32."""
    make, learn = FAMILIES[family]
    for amp, dtype in (("bf16", torch.bfloat16), ("off", torch.float32)):
        agent = make(amp=amp)
        seen: set = set()
        hooks = [m.register_forward_hook(lambda _m, _i, out, seen=seen: seen.add(out.dtype))
                 for m in agent.model.modules() if isinstance(m, nn.Linear)]
        learn(agent)
        for h in hooks:
            h.remove()
        assert dtype in seen, (amp, seen)
        if amp == "off":
            assert seen == {torch.float32}


def test_an_iteration_takes_a_step_per_batch_and_averages_their_metrics():
    """``engine.iterate``: one optimiser step per collected batch (in order), the steps'
    metrics averaged, collection's metrics beside them."""
    from types import SimpleNamespace

    from rl_seq import engine

    class Algo:
        algo, meta, progress_metrics = "toy", {}, None
        config = SimpleNamespace(amp="off", compile="off")
        device = torch.device("cpu")

        def __init__(self):
            self.model = nn.Linear(1, 1, bias=False)
            self.seen, self.updates = [], 0

        def collect(self, step):
            return engine.Collected(7, (torch.tensor([[x]]) for x in (1.0, 2.0, 6.0)), {"episode_return": 5.0})

        def loss(self, model, batch):
            self.seen.append(float(batch))
            return model(batch).sum(), {"x": batch.sum()}

        def after_update(self):
            self.updates += 1

    algo = Algo()
    opt = torch.optim.SGD(algo.model.parameters(), lr=0.0)
    n, m = engine.iterate(algo, engine.OptimiserStep(algo, engine.Optimiser([opt], clip=1.0)), 0)
    assert n == 7 and algo.seen == [1.0, 2.0, 6.0] and algo.updates == 3
    assert float(m["x"]) == 3.0 and m["episode_return"] == 5.0 and {"loss", "grad_norm", "lr"} <= set(m)


def test_the_clip_applies_to_the_parameters_named():
    """``Optimiser.clipped``: only those parameters' gradient norm is clipped (vdt: the
    policy's, not the critic's)."""
    from types import SimpleNamespace

    from rl_seq import engine

    class Algo:
        config, device = SimpleNamespace(amp="off", compile="off"), torch.device("cpu")

        def __init__(self):
            self.model = nn.ModuleDict(dict(a=nn.Linear(1, 1, bias=False), b=nn.Linear(1, 1, bias=False)))

        def loss(self, model, batch):
            return 100 * (self.model["a"](batch) + self.model["b"](batch)).sum(), {}

        def after_update(self):
            pass

    algo = Algo()
    opt = torch.optim.SGD(algo.model.parameters(), lr=0.0)
    engine.OptimiserStep(algo, engine.Optimiser([opt], clip=1.0, clipped=list(algo.model["a"].parameters())))(
        torch.ones(1, 1))
    assert algo.model["a"].weight.grad.abs().item() == pytest.approx(1.0)
    assert algo.model["b"].weight.grad.abs().item() == pytest.approx(100.0)


def test_every_run_reports_sps_and_odt_its_own_metrics():
    agent = FAMILIES["odt"][0]()
    out = FAMILIES["odt"][1](agent)
    assert {"loss", "nll", "entropy", "temperature", "grad_norm", "lr", "sps", "episode_return"} <= set(out["train"])
    assert out["train"]["sps"] > 0 and out["step"] >= 6


def test_tensorboard_and_offline_wandb_runs(tmp_path, monkeypatch):
    """``tensorboard=true`` writes TensorBoard event files with the training and evaluation
    scalars; ``wandb=true`` logs an offline wandb run into the run folder."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    agent = rl_seq.make_agent("dt", dataset=DATA, **{**OFFLINE, "eval_every": 2, "eval_episodes": 2},
                              tensorboard=True)
    agent.learn(DATA, steps=4, out=tmp_path / "tb")
    acc = EventAccumulator(str(tmp_path / "tb" / "tb"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert {"train/loss", "train/grad_norm", "eval/mean_return", "eval/normalized_score"} <= set(tags)
    rows = [json.loads(r) for r in (tmp_path / "tb" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if r["kind"] == "train"]
    assert [e.value for e in acc.Scalars("train/loss")] == pytest.approx(losses)

    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    agent = rl_seq.make_agent("dt", dataset=DATA, **OFFLINE, wandb=True)
    agent.learn(DATA, steps=3, out=tmp_path / "wb")
    runs = list((tmp_path / "wb" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))


def test_tensorboard_without_the_package_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if not installed
    agent = rl_seq.make_agent("dt", dataset=DATA, **OFFLINE, tensorboard=True)
    with pytest.raises(ImportError, match=r"pip install 'rl-seq\[tensorboard\]'"):
        agent.learn(DATA, steps=2, out=tmp_path / "r")
    assert not (tmp_path / "r").exists()
