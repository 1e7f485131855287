"""Tokenizer round trips and layouts; whole backbones obey forward == steps."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from rl_seq.kernels import MIXERS
from rl_seq.nets import Backbone, BackboneConfig
from rl_seq.tokenizer import ActionDiscretiser, TrajectoryTokenizer

BOX = gym.spaces.Box(-1, 1, (3,), np.float32)
SPACES = {
    "box": BOX,
    "discrete": gym.spaces.Discrete(5, start=1),
    "multidiscrete": gym.spaces.MultiDiscrete([3, 4]),
    "multibinary": gym.spaces.MultiBinary(4),
    "image": gym.spaces.Box(0, 255, (12, 10, 3), np.uint8),
}


def sample(space, B, T):
    return torch.as_tensor(np.stack([[space.sample() for _ in range(T)] for _ in range(B)]))


@pytest.mark.parametrize("name", list(SPACES))
def test_every_space_embeds(name):
    space = SPACES[name]
    tok = TrajectoryTokenizer(space, BOX, 16, "rtg,obs,act", max_timestep=10)
    f = dict(obs=sample(space, 2, 4), act=sample(BOX, 2, 4), rtg=torch.randn(2, 4),
             timestep=torch.arange(4).expand(2, 4))
    x = tok(f)
    assert x.shape == (2, 12, 16)
    x.sum().backward()


def test_composite_spaces_the_flat_rule_cannot_take_are_refused_with_a_pointer():
    with pytest.raises(TypeError, match=r"observation\['m'\] is Text.*rl_seq/MiniGrid-v0"):
        TrajectoryTokenizer(gym.spaces.Dict(a=BOX, m=gym.spaces.Text(4)), BOX, 16)
    with pytest.raises(TypeError, match="no embedding for space Text"):
        TrajectoryTokenizer(gym.spaces.Text(4), BOX, 16)


def test_discretiser_round_trip_at_bin_centres():
    space = gym.spaces.Box(np.array([-1.0, 0.0], np.float32), np.array([1.0, 10.0], np.float32))
    d = ActionDiscretiser(space, n_bins=7)
    idx = torch.arange(7)[:, None].expand(7, 2)
    assert torch.equal(d.encode(d.decode(idx)), idx)
    assert torch.equal(d.encode(torch.tensor([[-1.0, 0.0], [1.0, 10.0]])), torch.tensor([[0, 0], [6, 6]]))
    with pytest.raises(ValueError, match="bounded Box"):
        ActionDiscretiser(gym.spaces.Box(-np.inf, np.inf, (2,)))


@pytest.mark.parametrize("layout,k", [("rtg,obs,act", 3), ("obs,act", 2),
                                      ("obs+prev_act+prev_rew", 1), ("obs,act_dims", 4)])
def test_layouts_and_reads(layout, k):
    tok = TrajectoryTokenizer(BOX, BOX, 8, layout, max_timestep=None, n_bins=5)
    assert tok.k == k
    B, T = 2, 5
    f = dict(obs=torch.randn(B, T, 3), act=torch.rand(B, T, 3) * 2 - 1, rtg=torch.randn(B, T),
             prev_act=torch.zeros(B, T, 3), prev_rew=torch.zeros(B, T))
    x = tok(f)
    assert x.shape == (B, T * k, 8)
    h = torch.arange(B * T * k * 8.0).view(B, T * k, 8)
    assert torch.equal(tok.read(h, "obs"), h[:, tok.slot_index("obs")::k])
    flags = torch.zeros(B, T, dtype=torch.bool)
    flags[:, 2] = True
    tf = tok.token_flags(flags)
    assert tf.sum() == B and tf[:, 2 * k].all()


def test_act_dims_tokens_follow_the_bins():
    tok = TrajectoryTokenizer(BOX, BOX, 8, "obs,act_dims", max_timestep=None, n_bins=4)
    a = torch.tensor([[[-0.9, 0.1, 0.9]]])
    b = torch.tensor([[[-0.8, 0.2, 0.8]]])  # same bins
    f = dict(obs=torch.zeros(1, 1, 3))
    assert torch.equal(tok({**f, "act": a}), tok({**f, "act": b}))
    c = torch.tensor([[[0.9, 0.1, 0.9]]])  # dim 0 in another bin
    assert not torch.equal(tok({**f, "act": a})[:, 1], tok({**f, "act": c})[:, 1])


@pytest.mark.parametrize("mixer", MIXERS)
@pytest.mark.parametrize("block", ["pre_ln", "gtrxl"])
def test_backbone_forward_equals_token_steps(mixer, block):
    torch.manual_seed(0)
    tok = TrajectoryTokenizer(BOX, BOX, 16, "rtg,obs,act", max_timestep=50)
    heads = 1 if mixer in ("s4d", "conv", "lstm") else 2
    bb = Backbone(tok, BackboneConfig(mixer=mixer, d_model=16, n_heads=heads, n_layers=2,
                                      block=block)).eval()
    B, T = 2, 7
    f = dict(obs=torch.randn(B, T, 3), act=torch.rand(B, T, 3) * 2 - 1, rtg=torch.randn(B, T),
             timestep=torch.arange(T).expand(B, T))
    start = torch.zeros(B, T, dtype=torch.bool)
    start[:, 0] = True
    start[1, 4] = True
    h, _ = bb(f, None, start)
    toks, resets = tok(f), tok.token_flags(start)
    hs, state = [], None
    for j in range(T * 3):
        o, state = bb.step_tokens(toks[:, j:j + 1], state, resets[:, j:j + 1])
        hs.append(o)
    assert (h - torch.cat(hs, 1)).abs().max() < 1e-5


def test_backbone_config_errors():
    with pytest.raises(ValueError, match="unknown mixer"):
        BackboneConfig(mixer="gru")
    with pytest.raises(ValueError, match="divisible"):
        BackboneConfig(d_model=10, n_heads=3)


def test_heads_shapes_and_ranges():
    from rl_seq.nets import BinHead, CategoricalHead, GaussianHead, TanhHead, ValueHead

    h = torch.randn(4, 7, 16) * 10
    space = gym.spaces.Box(np.array([-2.0, 0.0], np.float32), np.array([2.0, 5.0], np.float32))
    a = TanhHead(16, space)(h)
    assert a.shape == (4, 7, 2) and (a[..., 0].abs() <= 2).all() and (a[..., 1] >= 0).all() and (a[..., 1] <= 5).all()
    with pytest.raises(ValueError, match="bounded"):
        TanhHead(16, gym.spaces.Box(-np.inf, np.inf, (2,)))
    assert GaussianHead(16, 2)(h).sample().shape == (4, 7, 2)
    assert CategoricalHead(16, 5)(h).sample().shape == (4, 7)
    q = BinHead(16, 9)(h)
    assert q.shape == (4, 7, 9) and ((q >= 0) & (q <= 1)).all()
    per_dim = BinHead(16, 9, dims=7, squash=False)
    q = per_dim(h)  # h read as [batch 4, dims 7, D]: dimension i by its own map
    assert q.shape == (4, 7, 9) and torch.allclose(q[:, 3], per_dim(h[:, 3], dim=3), atol=1e-6)
    assert not torch.allclose(q[:, 3], per_dim(h[:, 3], dim=2))
    old = nn.Linear(16, 9)  # the shared map qt saved before BinHead
    shared = BinHead(16, 9)
    shared.load_state_dict({"net." + k: v for k, v in old.state_dict().items()})
    assert torch.allclose(shared(h), torch.sigmoid(old(h)))
    assert ValueHead(16)(h).shape == (4, 7)


@pytest.mark.parametrize("mixer", ["attention", "mlstm"])
@pytest.mark.parametrize("block", ["pre_ln", "gtrxl"])
def test_features_at_one_slot_equal_full_forward(mixer, block):
    tok = TrajectoryTokenizer(BOX, BOX, 16, "rtg,obs,act", max_timestep=50)
    bb = Backbone(tok, BackboneConfig(mixer=mixer, d_model=16, n_heads=2, n_layers=2, block=block)).eval()
    f = dict(obs=torch.randn(2, 6, 3), act=torch.rand(2, 6, 3), rtg=torch.randn(2, 6),
             timestep=torch.arange(6).expand(2, 6))
    start = torch.zeros(2, 6, dtype=torch.bool)
    start[:, 0] = True
    start[0, 3] = True
    h, _ = bb(f, None, start)
    assert (tok.read(h, "obs") - bb.features(f, start, "obs")).abs().max() < 1e-6


def test_gpt2_init_of_the_blocks():

    torch.manual_seed(0)
    b = Backbone(None, BackboneConfig(d_model=128, n_layers=2, init="gpt2"))
    for blk in b.blocks:
        for lin in (blk.mlp[0], blk.mlp[2], blk.mixer.qkv, blk.mixer.proj):
            assert abs(lin.weight.std().item() - 0.02) < 2e-3 and lin.bias.abs().max() == 0
    with pytest.raises(ValueError, match="init"):
        BackboneConfig(init="xavier")
