"""The mixer contract and the small helpers every mixer shares.

Every sequence mixer in rl_seq is an ``nn.Module`` with three calls::

    init_state(batch_size, device)           -> state
    forward(x [B,T,D], state, resets [B,T])  -> (y [B,T,D], state)   # parallel, training
    step(x [B,D], state, reset [B])          -> (y [B,D], state)     # one token, acting

``resets[b, t]`` is True on the first token of a new episode: nothing before it may reach
it, inside one parallel call too. A state is a tuple of tensors whose first dimension is the
batch. ``forward`` dispatches on ``self.backend``: ``"reference"`` runs the short naive
specification (``forward_reference``), anything else the fast path (``forward_fast``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

State = tuple[Tensor, ...]


class Mixer(nn.Module):
    """Base class: shape checks and backend dispatch. Subclasses implement
    ``init_state``, ``forward_fast``, ``forward_reference`` and ``step``."""

    name: str = "mixer"

    def __init__(self, d_model: int, n_heads: int, backend: str = "torch") -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
        self.d_model = d_model
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.backend = backend

    # -- the contract -------------------------------------------------------------------
    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        raise NotImplementedError

    def fresh_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        """The state ``forward`` starts from when given none (training windows): by default
        ``init_state``; a mixer may return an equivalent one that is cheaper to run over
        (attention: an empty cache rather than a full, all-invalid one)."""
        return self.init_state(batch_size, device)

    def forward(
        self, x: Tensor, state: State | None = None, resets: Tensor | None = None
    ) -> tuple[Tensor, State]:
        """x: [B, T, D]; resets: bool [B, T] (True = first token of an episode)."""
        resets = self._check(x, state, resets)
        if state is None:
            state = self.fresh_state(x.shape[0], x.device)
        if self.backend == "reference":
            return self.forward_reference(x, state, resets)
        return self.forward_fast(x, state, resets)

    def step(
        self, x: Tensor, state: State | None = None, reset: Tensor | None = None
    ) -> tuple[Tensor, State]:
        """One token per batch row. x: [B, D]; reset: bool [B]."""
        if x.dim() != 2 or x.shape[-1] != self.d_model:
            raise ValueError(f"{self.name}.step expects x of shape [B, {self.d_model}], got {tuple(x.shape)}")
        if state is None:
            state = self.init_state(x.shape[0], x.device)
        if reset is None:
            reset = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        return self._step(x, state, reset.to(torch.bool))

    def forward_fast(self, x: Tensor, state: State, resets: Tensor) -> tuple[Tensor, State]:
        raise NotImplementedError

    def forward_reference(self, x: Tensor, state: State, resets: Tensor) -> tuple[Tensor, State]:
        raise NotImplementedError

    def _step(self, x: Tensor, state: State, reset: Tensor) -> tuple[Tensor, State]:
        y, state = self.forward_fast(x[:, None], state, reset[:, None])
        return y[:, 0], state

    def gpt2_init_(self) -> None:
        """GPT-2's initialisation (the Decision Transformers'): every Linear / Embedding
        weight ~ N(0, 0.02), Linear biases 0. A mixer whose parameters carry structure (gate
        biases, decay rates) overrides this to keep it."""
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)

    def state_bytes(self, batch_size: int = 1) -> int:
        """Bytes of acting state per ``batch_size`` environments (at its largest)."""
        return sum(t.numel() * t.element_size() for t in self.init_state(batch_size, "cpu"))

    # -- checks ------------------------------------------------------------------------
    def _check(self, x: Tensor, state: State | None, resets: Tensor | None) -> Tensor:
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(
                f"{self.name}.forward expects x of shape [B, T, {self.d_model}], got {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise TypeError(f"{self.name}.forward expects a floating tensor, got {x.dtype}")
        B, T, _ = x.shape
        if resets is None:
            return torch.zeros(B, T, dtype=torch.bool, device=x.device)
        if resets.shape != (B, T):
            raise ValueError(f"resets must have shape [B, T] = {(B, T)}, got {tuple(resets.shape)}")
        if state is not None and state[0].shape[0] != B:
            raise ValueError(f"state batch {state[0].shape[0]} does not match x batch {B}")
        return resets.to(torch.bool)


# -- helpers shared by the mixers -------------------------------------------------------
def segment_ids(resets: Tensor) -> Tensor:
    """[B, T] bool -> int [B, T]: how many resets up to and including t (0 = still in the
    episode the incoming state belongs to)."""
    return resets.long().cumsum(1)


def same_segment(resets: Tensor) -> Tensor:
    """[B, T] -> bool [B, T, T]: token t may see token s (s <= t, no reset in (s, t])."""
    seg = segment_ids(resets)
    T = resets.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool, device=resets.device).tril()
    return (seg[:, :, None] == seg[:, None, :]) & causal


def alive(resets: Tensor) -> Tensor:
    """[B, T] -> bool [B, T]: token t still sees the incoming state (no reset in [0, t])."""
    return segment_ids(resets) == 0


def positions_in_segment(resets: Tensor) -> Tensor:
    """[B, T] -> long [B, T]: steps since the latest reset (0 at the reset itself; for tokens
    before any reset, steps since the start of the call)."""
    T = resets.shape[1]
    t = torch.arange(T, device=resets.device).expand_as(resets)
    start = torch.where(resets, t, torch.zeros_like(t)).cummax(1).values
    return t - start


LOG_DECAY_FLOOR = -5.0  # per-step log-decay floor of the gated recurrences
MAX_CHUNK = 16  # chunk · |floor| <= 80 keeps exp(±L) inside fp32


def check_chunk(chunk: int) -> int:
    """``chunk`` if it is a chunk length the chunked kernels can take, else a ValueError."""
    if not 1 <= chunk <= MAX_CHUNK:
        raise ValueError(f"chunk must be in [1, {MAX_CHUNK}] for the decay floor to keep e^(±L) finite, got {chunk}")
    return chunk


class Chunks:
    """A [B, T] reset mask cut into n chunks of length c (T padded at the end to n·c), with
    the per-chunk masks the chunked parallel forms need:

    - ``seg`` [B, n, c, c]: token t may see token s of its chunk (``same_segment``);
    - ``alive`` [B, n, c]: token t still sees the state entering its chunk;
    - ``keep`` [B, n, c]: 0 on resets (a reset's own decay never matters), 1 elsewhere.

    ``split(x)`` pads a [B, T, ...] tensor with zeros and views it as [B, n, c, ...]; padding
    decays by 1 and adds 0, so the state after the last padded token is the state at T-1.
    ``merge(y)`` undoes it. Slicing chunks out one by one instead would make autograd fill
    a full-size zero gradient per slice."""

    def __init__(self, resets: Tensor, chunk: int, dtype: torch.dtype) -> None:
        check_chunk(chunk)
        B, T = resets.shape
        self.T, self.c = T, chunk
        self.n = -(-T // chunk)
        r = self.split(resets).reshape(B * self.n, chunk)
        self.seg = same_segment(r).to(dtype).view(B, self.n, chunk, chunk)
        self.alive = alive(r).to(dtype).view(B, self.n, chunk)
        self.keep = (~r).to(dtype).view(B, self.n, chunk)

    def split(self, x: Tensor) -> Tensor:
        pad = self.n * self.c - x.shape[1]
        if pad:
            x = torch.cat([x, x.new_zeros(x.shape[0], pad, *x.shape[2:])], 1)
        return x.view(x.shape[0], self.n, self.c, *x.shape[2:])

    def merge(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], self.n * self.c, *x.shape[3:])[:, :self.T]

    def carry(self, decay_end: Tensor, local_end: Tensor, h0: Tensor) -> tuple[Tensor, Tensor]:
        """The state entering each chunk, [B, n, ...], and the final state, [B, ...], from
        each chunk's end decay ``e^{L_end}`` and the state it builds from zero
        (``local_end``), both [B, n, ...], and the incoming state h0 [B, ...]. The only loop
        over chunks (n small steps on [B, ...] states)."""
        a = self.alive[:, :, -1].view(*self.alive.shape[:2], *([1] * (local_end.dim() - 2)))
        h, ins = h0, []
        for d, e, al in zip(decay_end.unbind(1), local_end.unbind(1), a.unbind(1)):
            ins.append(h)
            h = d * al * h + e
        return torch.stack(ins, 1), h


def trim_invalid(valid: Tensor) -> int:
    """How many leading cache slots are invalid in every row (pre-allocated, never written):
    they can be skipped exactly, since masked keys contribute nothing. An empty cache needs no
    look (and no host sync, which a compiled training step cannot trace)."""
    if valid.shape[1] == 0:
        return 0
    used = valid.any(0)
    return valid.shape[1] if not bool(used.any()) else int(used.to(torch.int8).argmax())


def left_pad(x: Tensor, n: int, dim: int) -> Tensor:
    """Zero-pad ``x`` at the front of ``dim`` up to length n (False for bool)."""
    missing = n - x.shape[dim]
    if missing <= 0:
        return x
    shape = list(x.shape)
    shape[dim] = missing
    return torch.cat([x.new_zeros(shape), x], dim)


class PackedSegments:
    """Cut each row of a [B, T, ...] batch at its resets and lay the pieces out as separate
    zero-padded sequences [S, T, ...], so kernels that know nothing of resets (FFT
    convolution, cuDNN/MKL LSTM) run on them exactly.

    ``first[b]``/``last[b]``: index of row b's first/last piece; ``carries[b]``: whether row
    b's first piece continues the incoming state (no reset at t=0); ``lengths[s]``.
    """

    def __init__(self, resets: Tensor) -> None:
        B, T = resets.shape
        r = resets.clone()
        r[:, 0] = True
        counts = r.sum(1)
        offset = counts.cumsum(0) - counts
        self.gid = offset[:, None] + r.long().cumsum(1) - 1  # [B, T]
        self.pos = positions_in_segment(r)  # [B, T]
        self.n = int(counts.sum())
        self.T = T
        self.first = offset
        self.last = offset + counts - 1
        self.carries = ~resets[:, 0]
        self.lengths = torch.zeros(self.n, dtype=torch.long, device=resets.device)
        self.lengths.scatter_add_(0, self.gid.reshape(-1), torch.ones_like(self.gid).reshape(-1))

    def pack(self, x: Tensor) -> Tensor:
        out = x.new_zeros(self.n, self.T, *x.shape[2:])
        out[self.gid, self.pos] = x
        return out

    def unpack(self, y: Tensor) -> Tensor:
        return y[self.gid, self.pos]
