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

    def forward(
        self, x: Tensor, state: State | None = None, resets: Tensor | None = None
    ) -> tuple[Tensor, State]:
        """x: [B, T, D]; resets: bool [B, T] (True = first token of an episode)."""
        resets = self._check(x, state, resets)
        if state is None:
            state = self.init_state(x.shape[0], x.device)
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


def decay_scan(log_a: Tensor | list[Tensor], x: Tensor | list[Tensor], h0: Tensor | list[Tensor],
               resets: Tensor, chunk: int = MAX_CHUNK):
    """All states of the elementwise recurrence ``h_t = exp(log_a_t) * h_{t-1} + x_t``.

    x: [B, T, ...]; log_a: the same or broadcastable to it (>= LOG_DECAY_FLOOR; a decay
    shared by several channels is exponentiated once); h0: [B, ...]; resets [B, T]: h is
    zeroed before a reset. Chunked: inside a chunk ``h_t = e^{L_t} (Σ_{s<=t, same episode}
    e^{-L_s} x_s + [alive_t] h_in)`` with L the in-chunk cumulative log-decay - one small
    matmul per chunk, no loop over time steps. Lists of (log_a, x, h0) run together (one
    reset mask and one matmul per chunk). Returns h: [B, T, ...] (a list for lists).
    """
    if chunk > MAX_CHUNK:
        raise ValueError(f"chunk must be <= {MAX_CHUNK} for the decay floor to stay finite")
    single = isinstance(x, Tensor)
    log_as, xs_all, hs = ([log_a], [x], [h0]) if single else (list(log_a), list(x), list(h0))
    B, T = xs_all[0].shape[:2]
    keep = (~resets).to(xs_all[0].dtype)
    log_as = [la * keep.view(B, T, *([1] * (la.dim() - 2))) for la in log_as]  # a reset's decay never matters
    outs: list[list[Tensor]] = [[] for _ in xs_all]
    for c0 in range(0, T, chunk):
        sl = slice(c0, min(c0 + chunk, T))
        M = same_segment(resets[:, sl]).to(keep.dtype)  # [B, c, c]
        a = alive(resets[:, sl]).to(keep.dtype)
        Ls = [la[:, sl].cumsum(1) for la in log_as]
        scaled = [torch.exp(-L) * xx[:, sl] for L, xx in zip(Ls, xs_all)]
        inner = torch.einsum("bts,bsn->btn", M, torch.cat([z.flatten(2) for z in scaled], -1))
        i = 0
        for g, (L, z) in enumerate(zip(Ls, scaled)):
            n = z[0, 0].numel()
            part = inner[..., i:i + n].view_as(z)
            i += n
            hh = torch.exp(L) * (part + a.view(*z.shape[:2], *([1] * (z.dim() - 2))) * hs[g].unsqueeze(1))
            outs[g].append(hh)
            hs[g] = hh[:, -1]
    res = [torch.cat(o, 1) for o in outs]
    return res[0] if single else res


def trim_invalid(valid: Tensor) -> int:
    """How many leading cache slots are invalid in every row (pre-allocated, never written):
    they can be skipped exactly, since masked keys contribute nothing."""
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
