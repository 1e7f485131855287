"""The CUDA path: every mixer's laws on the GPU and against the CPU, and each agent family
training, acting, saving and loading on the GPU with its defaults there (bf16 autocast,
``torch.compile``). Skipped without a GPU (CI has none); run on a GPU machine with
``python -m pytest tests/test_cuda.py``."""

import numpy as np
import pytest
import torch
from test_kernels import D, build, example, max_diff, warm_state

import rl_seq
from rl_seq.kernels import MIXERS

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
CUDA = torch.device("cuda")
TOL = 1e-4  # float32 on both sides; kernels sum in another order on the GPU


@pytest.fixture(autouse=True)
def exact_float32():
    """No TF32 in matmuls or convolutions while comparing float32 results."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def to(x, device):
    if isinstance(x, tuple):
        return tuple(to(v, device) for v in x)
    return x.to(device) if isinstance(x, torch.Tensor) else x


@pytest.mark.parametrize("name", MIXERS)
def test_mixer_laws_on_cuda(name):
    """forward = T steps, fast = reference (outputs, states, gradients), GPU = CPU."""
    cpu = build(name)
    fast, ref = build(name).to(CUDA), build(name, backend="reference").to(CUDA)
    ref.load_state_dict(fast.state_dict())
    x, resets = example(T=37)
    state = warm_state(cpu)
    y_cpu, s_cpu = cpu(x, state, resets)
    xg, rg, sg = x.to(CUDA), resets.to(CUDA), to(state, CUDA)
    xs = [xg.clone().requires_grad_(True) for _ in range(2)]
    (yf, sf), (yr, sr) = fast(xs[0], sg, rg), ref(xs[1], sg, rg)
    assert max_diff(yf.cpu(), y_cpu) < TOL
    assert max_diff(to(sf, "cpu"), s_cpu) < TOL
    assert max_diff(yf, yr) < TOL and max_diff(sf, sr) < TOL
    if name != "none":  # gradients in training mode (cuDNN's LSTM backward needs it; no mixer here drops)
        fast.train(), ref.train()
        xs = [xg.clone().requires_grad_(True) for _ in range(2)]
        (yf, sf), (yr, sr) = fast(xs[0], sg, rg), ref(xs[1], sg, rg)
        w = torch.randn_like(yf)
        (yf * w).sum().backward()
        (yr * w).sum().backward()
        assert max_diff(xs[0].grad, xs[1].grad) < 10 * TOL
    fast.eval()
    with torch.no_grad():
        yf, _ = fast(xg, sg, rg)
        s, ys = sg, []
        for t in range(xg.shape[1]):
            yt, s = fast.step(xg[:, t], s, rg[:, t])
            ys.append(yt)
        assert max_diff(torch.stack(ys, 1), yf) < TOL
    assert yf.shape == (3, 37, D)


DATA = "rl_seq/pointgoal/medium-v0"
TINY = dict(backbone=dict(d_model=32, n_layers=2), batch_size=32, warmup_steps=10, eval_every=0, eval_episodes=4,
            log_every=10, context=10, device="cuda")


@pytest.mark.parametrize("algo", ["dt", "dc", "ds4", "lram", "qt", "odt"])
def test_offline_agents_train_act_save_load_on_cuda(algo, tmp_path, monkeypatch):
    """The GPU defaults (amp and compile ``auto``: bf16 autocast and torch.compile) train every
    offline family: the model is compiled once, its linear layers run in bfloat16, its weights
    move; the agent acts on the GPU and loads back with identical actions."""
    compiled, real_compile = [], torch.compile
    monkeypatch.setattr(torch, "compile", lambda m, **kw: compiled.append(m) or real_compile(m, **kw))
    agent = rl_seq.make_agent(algo, dataset=DATA, seed=0, lr=1e-3, **TINY)
    assert agent.device.type == "cuda"
    dtypes: set = set()
    for m in agent.model.modules():
        if isinstance(m, torch.nn.Linear):
            m.register_forward_hook(lambda _m, _i, o: dtypes.add(o.dtype))
    before = torch.cat([p.detach().flatten().clone() for p in agent.model.parameters()])
    out = agent.learn(DATA, steps=20, out=tmp_path / "run")
    after = torch.cat([p.detach().flatten() for p in agent.model.parameters()])
    assert compiled == [agent.model] and torch.bfloat16 in dtypes
    assert np.isfinite(out["train"]["loss"]) and out["train"]["grad_norm"] > 0 and not torch.equal(before, after)
    assert out["last"]["episodes"] == 4
    loaded = rl_seq.load_agent(tmp_path / "run" / "model")
    env = agent.make_env(n=2)
    obs, _ = env.reset(seed=3)
    kw = {} if algo == "qt" else dict(rewards=np.zeros(2))
    a1, _ = agent.predict(obs, None, np.ones(2, bool), **kw)
    a2, _ = loaded.predict(obs, None, np.ones(2, bool), **kw)
    np.testing.assert_allclose(a1, a2, atol=1e-5)
    env.close()


NO_DROPOUT = dict(d_model=32, n_layers=2, dropout=0.0, mixer_options=dict(dropout=0.0))  # CPU and GPU draw apart


def test_cuda_training_matches_cpu_in_float32():
    """Eager float32 on the GPU takes the same steps as on the CPU (to float tolerance)."""
    weights = {}
    for device in ("cpu", "cuda"):
        agent = rl_seq.make_agent("dt", dataset=DATA, seed=0, lr=1e-3, **{**TINY, "device": device, "amp": "off",
                                                                          "compile": "off", "eval_episodes": 0,
                                                                          "backbone": NO_DROPOUT})
        agent.learn(DATA, steps=10)
        weights[device] = torch.cat([p.detach().flatten().cpu() for p in agent.model.parameters()])
    assert torch.allclose(weights["cpu"], weights["cuda"], atol=1e-4)


@pytest.mark.parametrize("algo", ["gtrxl", "relit", "lstm"])
def test_ppo_agents_train_and_act_on_cuda(algo):
    agent = rl_seq.make_agent(algo, "rl_seq/TMaze-v0", env_kwargs=dict(corridor_length=3), n_envs=2, n_steps=64,
                              seq_len=32, n_minibatches=2, n_epochs=1, eval_every=0, eval_episodes=2, device="cuda")
    before = torch.cat([p.detach().flatten().clone() for p in agent.model.parameters()])
    out = agent.learn("rl_seq/TMaze-v0", steps=256)
    after = torch.cat([p.detach().flatten() for p in agent.model.parameters()])
    assert out["last"]["episodes"] == 2 and np.isfinite(out["train"]["pg_loss"])
    assert out["train"]["grad_norm"] > 0 and not torch.equal(before, after)  # PPO's updates reached the GPU model
