"""Backbone: tokenizer -> blocks (mixer + MLP) -> final norm.

A block joins its mixer and MLP either by pre-LN residuals or by GTrXL's gating
(Parisotto et al. 2020: identity-map reordering, GRU-style gate with bias 2). The backbone's
state is the tuple of its mixers' states, so every backbone acts one token at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from rl_seq.config import ConfigError, check_choice, check_range
from rl_seq.kernels import BACKENDS, MIXERS, make_mixer
from rl_seq.kernels.base import State
from rl_seq.tokenizer import TrajectoryTokenizer

ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU}


@dataclass
class BackboneConfig:
    """The sequence model every agent shares."""

    mixer: str = "attention"
    """Token mixer, one of ``rl_seq.kernels.MIXERS``."""
    d_model: int = 128
    """Token width D."""
    n_layers: int = 3
    """Number of blocks."""
    n_heads: int = 1
    """Heads of the mixer (where it has heads)."""
    mlp_ratio: int = 4
    """Hidden width of the MLP, as a multiple of D."""
    activation: str = "gelu"
    """MLP activation: ``gelu`` or ``relu`` (the reference Decision Transformer's)."""
    dropout: float = 0.1
    """Dropout on the embeddings and on each residual branch."""
    block: str = "pre_ln"
    """How mixer and MLP are joined: ``pre_ln`` residuals or ``gtrxl`` GRU gates."""
    backend: str = "torch"
    """Kernel backend: ``torch``, ``reference`` or ``accelerated``."""
    mixer_options: dict = field(default_factory=dict)
    """Mixer keyword arguments, e.g. ``{window: 60}``, ``{memory: 64}``, ``{eta: 4, r: 4}``."""
    init: str = "torch"
    """Initialisation of the blocks: ``torch`` (PyTorch's and each mixer's own) or ``gpt2``
    (N(0, 0.02) weights, zero biases, as the reference Decision Transformers; mixers keep
    their structured parameters, see ``Mixer.gpt2_init_``)."""

    def __post_init__(self) -> None:
        if self.mixer not in MIXERS:
            raise ConfigError(f"unknown mixer {self.mixer!r}; choose one of {', '.join(MIXERS)}")
        check_choice(self, "activation", tuple(ACTIVATIONS))
        check_choice(self, "init", ("torch", "gpt2"))
        check_choice(self, "block", ("pre_ln", "gtrxl"))
        check_choice(self, "backend", BACKENDS)
        for name in ("d_model", "n_layers", "n_heads", "mlp_ratio"):
            check_range(self, name, 1)
        check_range(self, "dropout", 0, 1, hi_open=True)
        if self.d_model % self.n_heads:
            fits = [h for h in range(1, self.d_model + 1) if self.d_model % h == 0][:8]
            raise ConfigError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}: pick n_heads "
                              f"among {fits} or change d_model")


class GRUGate(nn.Module):
    """GTrXL's gate: r = σ(W_r y + U_r x), z = σ(W_z y + U_z x - b), h = tanh(W_g y + U_g (r⊙x)),
    out = (1-z)⊙x + z⊙h. With b = 2 the block starts close to the identity."""

    def __init__(self, d: int, bias: float = 2.0) -> None:
        super().__init__()
        self.w = nn.Linear(d, 3 * d, bias=False)
        self.u = nn.Linear(d, 2 * d, bias=False)
        self.ug = nn.Linear(d, d, bias=False)
        self.bias = nn.Parameter(torch.full((d,), bias))

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        wr, wz, wg = self.w(y).chunk(3, -1)
        ur, uz = self.u(x).chunk(2, -1)
        r = torch.sigmoid(wr + ur)
        z = torch.sigmoid(wz + uz - self.bias)
        h = torch.tanh(wg + self.ug(r * x))
        return torch.lerp(x, h.to(x.dtype), z.to(x.dtype))  # (1-z)⊙x + z⊙h in one op (autocast: in x's dtype)


class Block(nn.Module):
    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        D = cfg.d_model
        self.mixer = make_mixer(cfg.mixer, D, cfg.n_heads, backend=cfg.backend, **cfg.mixer_options)
        self.ln1, self.ln2 = nn.LayerNorm(D), nn.LayerNorm(D)
        self.mlp = nn.Sequential(nn.Linear(D, cfg.mlp_ratio * D), ACTIVATIONS[cfg.activation](),
                                 nn.Linear(cfg.mlp_ratio * D, D))
        self.drop = nn.Dropout(cfg.dropout)
        self.gated = cfg.block == "gtrxl"
        if self.gated:
            self.gate1, self.gate2 = GRUGate(D), GRUGate(D)
        if cfg.init == "gpt2":
            self.mixer.gpt2_init_()
            for m in self.mlp:
                if isinstance(m, nn.Linear):
                    nn.init.normal_(m.weight, std=0.02)
                    nn.init.zeros_(m.bias)

    def _join(self, x: Tensor, y: Tensor, which: int) -> Tensor:
        if self.gated:
            return (self.gate1 if which == 1 else self.gate2)(x, self.drop(torch.relu(y)))
        return x + self.drop(y)

    def forward(self, x: Tensor, state: State | None, resets: Tensor | None):
        y, state = self.mixer(self.ln1(x), state, resets)
        x = self._join(x, y, 1)
        return self._join(x, self.mlp(self.ln2(x)), 2), state

    def step(self, x: Tensor, state: State | None, reset: Tensor | None):
        y, state = self.mixer.step(self.ln1(x), state, reset)
        x = self._join(x, y, 1)
        return self._join(x, self.mlp(self.ln2(x)), 2), state


class Backbone(nn.Module):
    """Tokenizer + blocks. ``forward`` is parallel over a whole sequence (training);
    ``step_tokens`` feeds tokens one at a time through every block (acting). Without a
    tokenizer it takes embedded tokens (``forward_tokens`` / ``step_tokens``)."""

    def __init__(self, tokenizer: TrajectoryTokenizer | None, cfg: BackboneConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)

    def init_state(self, batch_size: int, device=None) -> tuple[State, ...]:
        return tuple(b.mixer.init_state(batch_size, device) for b in self.blocks)

    def forward(self, fields: dict[str, Tensor], state: tuple[State, ...] | None = None,
                episode_start: Tensor | None = None) -> tuple[Tensor, tuple[State, ...]]:
        """fields [B, T, ...]; episode_start bool [B, T] -> features [B, T*k, D], state."""
        x, resets = self.embed(fields, episode_start)
        return self.forward_tokens(x, state, resets)

    def embed(self, fields: dict[str, Tensor], episode_start: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """fields [B, T, ...] -> the tokens [B, T*k, D] the blocks read, and their reset flags."""
        resets = None if episode_start is None else self.tokenizer.token_flags(episode_start)
        return self.drop(self.tokenizer(fields)), resets

    def features(self, fields: dict[str, Tensor], episode_start: Tensor | None, slot: str) -> Tensor:
        """Training shortcut: the features at one slot, [B, T, D] - equal to
        ``tokenizer.read(forward(...)[0], slot)``, but the last block's MLP runs on that
        slot's tokens only (every mixer still sees every token)."""
        x, resets = self.embed(fields, episode_start)
        for block in self.blocks[:-1]:
            x, _ = block(x, None, resets)
        last = self.blocks[-1]
        y, _ = last.mixer(last.ln1(x), None, resets)
        x = self.tokenizer.read(last._join(x, y, 1), slot)
        x = last._join(x, last.mlp(last.ln2(x)), 2)
        return self.ln_f(x)

    def forward_tokens(self, x: Tensor, state=None, resets: Tensor | None = None):
        """Already-embedded tokens [B, L, D] through the blocks."""
        states = []
        for i, block in enumerate(self.blocks):
            x, s = block(x, None if state is None else state[i], resets)
            states.append(s)
        return self.ln_f(x), tuple(states)

    def step_tokens(self, tokens: Tensor, state=None, resets: Tensor | None = None):
        """Acting: tokens [B, n, D] that extend the sequence held in ``state``; ``resets``
        bool [B, n] (or [B], for the first token) flags episode starts. One token goes
        through the mixers' ``step``; several go through one stateful ``forward`` call
        (equal by the mixer laws, and one call per block instead of n). Returns the
        features [B, n, D] and the new state."""
        B, n, _ = tokens.shape
        if state is None:
            state = self.init_state(B, tokens.device)
        if resets is not None and resets.dim() == 1:
            resets = torch.cat([resets[:, None], resets.new_zeros(B, n - 1)], 1)
        if n > 1:
            return self.forward_tokens(tokens, state, resets)
        x, new = tokens[:, 0], []
        r = None if resets is None else resets[:, 0]
        for block, s in zip(self.blocks, state):
            x, s = block.step(x, s, r)
            new.append(s)
        return self.ln_f(x)[:, None], tuple(new)
