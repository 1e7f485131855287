"""The laws every mixer obeys (DESIGN.md, kernel backend)."""

import pytest
import torch

from rl_seq.kernels import MIXERS, make_mixer, resolve_backend

D, H = 16, 2
TOL = 1e-5
# every mixer, and the gated linear ones with their input convolution and value skip
CASES = [*MIXERS, "linear:conv", "agalite:conv"]


def build(case, backend="torch", seed=0):
    torch.manual_seed(seed)
    name, _, variant = case.partition(":")
    opts = {"attention": dict(window=9), "xl_attention": dict(memory=7)}.get(name, {})
    if variant == "conv":
        opts["conv"] = 3
    return make_mixer(name, D, H, backend=backend, **opts).eval()


def warm_state(m, B=3):
    with torch.no_grad():
        return m(torch.randn(B, 5, D))[1]


def max_diff(a, b):
    if isinstance(a, tuple):
        return max((max_diff(x, y) for x, y in zip(a, b)), default=0.0)
    if a.dtype == torch.bool:
        return float((a != b).any())
    return (a - b).abs().max().item() if a.numel() else 0.0


def example(B=3, T=13, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, D, generator=g)
    resets = torch.zeros(B, T, dtype=torch.bool)
    if B >= 3:
        resets[0, min(4, T - 1)] = resets[0, min(9, T - 1)] = True  # resets inside a row
        resets[1, 0] = True  # reset on the first token
    return x, resets


@pytest.mark.parametrize("name", CASES)
def test_forward_equals_steps(name):
    m = build(name)
    x, resets = example()
    _, state = m(torch.randn(3, 5, D))  # a warm incoming state
    y, final = m(x, state, resets)
    s, ys = state, []
    for t in range(x.shape[1]):
        yt, s = m.step(x[:, t], s, resets[:, t])
        ys.append(yt)
    assert max_diff(y, torch.stack(ys, 1)) < TOL
    if name not in ("attention",):  # the KV cache keeps its history in another layout
        assert max_diff(final, s) < TOL


@pytest.mark.parametrize("name", CASES)
def test_no_state_equals_the_initial_state(name):
    """``forward(x)`` (a training window: ``fresh_state``) equals ``forward(x, init_state)``."""
    m = build(name)
    x, resets = example()
    y0, s0 = m(x, None, resets)
    y1, s1 = m(x, m.init_state(3), resets)
    assert max_diff(y0, y1) < TOL and max_diff(s0, s1) < TOL


@pytest.mark.parametrize("name", CASES)
def test_reset_equals_separate_sequences(name):
    m = build(name)
    x, _ = example(B=1, T=11)
    resets = torch.zeros(1, 11, dtype=torch.bool)
    resets[0, 6] = True
    _, state = m(torch.randn(1, 4, D))
    y, final = m(x, state, resets)
    y1, _ = m(x[:, :6], state)
    y2, final2 = m(x[:, 6:])  # a fresh sequence: no state
    assert max_diff(y[:, :6], y1) < TOL
    assert max_diff(y[:, 6:], y2) < TOL
    # the states behave the same: the next token sees the same past
    probe = torch.randn(1, 3, D)
    assert max_diff(m(probe, final)[0], m(probe, final2)[0]) < TOL


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("T", [1, 7, 37])
def test_fast_equals_reference_with_gradients(name, T):
    if name == "none":
        pytest.skip("the empty mixer has no parameters and a constant output")
    fast, ref = build(name), build(name, backend="reference")
    ref.load_state_dict(fast.state_dict())
    x, resets = example(T=T)
    resets = resets[:, :T]
    state = warm_state(fast)
    xs = [x.clone().requires_grad_(True) for _ in range(2)]
    (yf, sf), (yr, sr) = fast(xs[0], state, resets), ref(xs[1], state, resets)
    assert max_diff(yf, yr) < TOL
    assert max_diff(sf, sr) < TOL
    w = torch.randn_like(yf)
    (yf * w).sum().backward()
    (yr * w).sum().backward()
    assert max_diff(xs[0].grad, xs[1].grad) < 1e-4
    for (n, pf), pr in zip(fast.named_parameters(), ref.parameters()):
        assert pf.grad is not None, f"no gradient reaches {n}"
        assert (pf.grad - pr.grad).abs().max() < 1e-4 * max(1.0, pr.grad.abs().max()), n


@pytest.mark.parametrize("name", CASES)
def test_gradients_reach_every_parameter(name):
    if name == "none":
        pytest.skip("the empty mixer has no parameters and a constant output")
    m = build(name).train()
    x, resets = example(T=9)
    state = warm_state(m)
    y, _ = m(x, state, resets)
    y.square().mean().backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient for {missing}"


@pytest.mark.parametrize("name", CASES)
def test_shape_errors_are_clear(name):
    m = build(name)
    with pytest.raises(ValueError, match=r"\[B, T, 16\]"):
        m(torch.randn(2, 5, D + 1))
    with pytest.raises(ValueError, match="resets must have shape"):
        m(torch.randn(2, 5, D), resets=torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\[B, 16\]"):
        m.step(torch.randn(2, 3, D))
    with pytest.raises(TypeError, match="floating"):
        m(torch.zeros(2, 5, D, dtype=torch.long))


def test_unknown_mixer_and_backend():
    with pytest.raises(ValueError, match="choose one of"):
        make_mixer("transformer", D, H)
    with pytest.raises(ValueError, match="unknown backend"):
        resolve_backend("cuda", "attention")
    with pytest.raises(TypeError, match="bad option for mixer 'conv'"):
        make_mixer("conv", D, 1, window=3)


def test_accelerated_falls_back_with_a_log_line(caplog):
    with caplog.at_level("WARNING"):
        assert resolve_backend("accelerated", "mlstm") == "torch"
    assert "falls back to 'torch'" in caplog.text


def test_attention_window_limits_what_a_token_sees():
    m = build("attention")  # window 9
    x, _ = example(B=1, T=20)
    y, _ = m(x)
    x2 = x.clone()
    x2[:, :5] += 1.0  # tokens more than 8 before position 14 cannot matter
    y2, _ = m(x2)
    assert max_diff(y[:, 14:], y2[:, 14:]) < TOL
    assert max_diff(y[:, 5:13], y2[:, 5:13]) > 1e-3


@pytest.mark.parametrize("name", CASES)
def test_fast_equals_reference_without_resets(name):
    """Some fast paths take a shortcut when a call holds no episode start; it must agree too."""
    fast, ref = build(name), build(name, backend="reference")
    ref.load_state_dict(fast.state_dict())
    x, _ = example(T=11)
    state = warm_state(fast)
    (yf, sf), (yr, sr) = fast(x, state), ref(x, state)
    assert max_diff(yf, yr) < TOL and max_diff(sf, sr) < TOL


@pytest.mark.parametrize("name", CASES)
def test_fast_equals_reference_with_resets_at_chunk_edges(name):
    """Chunked fast paths (chunks of 16) carry state from chunk to chunk; resets on the last
    and first token of a chunk, and a chunk that starts a new episode, must not leak."""
    fast, ref = build(name), build(name, backend="reference")
    ref.load_state_dict(fast.state_dict())
    x, _ = example(T=40)
    resets = torch.zeros(3, 40, dtype=torch.bool)
    resets[0, [15, 16, 32]] = True
    resets[1, 31] = True
    resets[2] = torch.rand(40, generator=torch.Generator().manual_seed(2)) < 0.2
    state = warm_state(fast)
    (yf, sf), (yr, sr) = fast(x, state, resets), ref(x, state, resets)
    assert max_diff(yf, yr) < TOL and max_diff(sf, sr) < TOL


@pytest.mark.parametrize("name", ["linear", "agalite"])
@pytest.mark.parametrize("chunk", [0, 17])
def test_chunk_longer_than_the_decay_floor_allows_is_refused(name, chunk):
    """Refused when the mixer is built, before any training (and so before a run folder)."""
    with pytest.raises(ValueError, match="chunk must be in"):
        make_mixer(name, D, H, chunk=chunk)


def test_attention_dropout_only_while_training_on_both_paths():
    x, resets = example()
    torch.manual_seed(0)
    fast = make_mixer("attention", D, H, window=9, dropout=0.5)
    ref = make_mixer("attention", D, H, window=9, dropout=0.5, backend="reference")
    ref.load_state_dict(fast.state_dict())
    fast.eval(), ref.eval()
    assert max_diff(fast(x, None, resets)[0], ref(x, None, resets)[0]) < TOL  # eval: no dropout
    plain = fast(x, None, resets)[0]
    for m in (fast.train(), ref.train()):
        torch.manual_seed(1)
        y1 = m(x, None, resets)[0]
        assert max_diff(y1, plain) > 1e-3  # the probabilities are dropped...
        torch.manual_seed(1)
        assert max_diff(m(x, None, resets)[0], y1) == 0.0  # ...by the seeded generator
    with pytest.raises(ValueError, match="dropout"):
        make_mixer("attention", D, H, dropout=1.0)


def test_gpt2_init_keeps_structured_parameters():
    m = make_mixer("mlstm", 64, 4)
    gates = m.gates.bias.detach().clone()
    m.gpt2_init_()
    assert torch.equal(m.gates.bias, gates)  # closed input / open forget gates survive
    assert abs(m.qkvo.weight.std().item() - 0.02) < 2e-3 and m.qkvo.bias.abs().max() == 0


def test_lstm_recurrence_gradients_equal_the_reference_cell():
    """The CPU path with resets inside the rows (LSTMRecurrence, its own backward) against the
    textbook cell in a loop: outputs and the gradients of input, incoming state and weights;
    and torch's numerical gradient check of the recurrence in double precision."""
    from rl_seq.kernels.lstm import LSTMRecurrence

    fast, ref = build("lstm").double(), build("lstm", backend="reference").double()
    ref.load_state_dict(fast.state_dict())
    x, resets = example(T=19)
    grads = []
    for m in (fast, ref):
        xi = x.double().clone().requires_grad_(True)
        h0, c0 = (torch.randn(3, D, dtype=torch.double, generator=torch.Generator().manual_seed(s)).requires_grad_(True)
                  for s in (2, 3))
        y, (h, c) = m(xi, (h0, c0), resets)
        (y.sin().sum() + h.square().sum() + c.cos().sum()).backward()
        grads.append([y, h, c, xi.grad, h0.grad, c0.grad, *(p.grad for p in m.parameters())])
    for a, b in zip(*grads):
        assert (a - b).abs().max() < 1e-10
    g = torch.Generator().manual_seed(4)
    args = [torch.randn(*s, dtype=torch.double, generator=g).requires_grad_(True)
            for s in ((2, 6, 4 * 3), (2, 3), (2, 3), (4 * 3, 3))]
    keep = torch.tensor([[1, 1, 0, 1, 1, 1], [0, 1, 1, 1, 0, 1]], dtype=torch.double)
    assert torch.autograd.gradcheck(lambda gx, h0, c0, w: LSTMRecurrence.apply(gx, keep, h0, c0, w), args)
