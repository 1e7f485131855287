"""Gated recurrent linear attention: GaLiTe and its approximation AGaLiTe
(Pramanik et al., "Recurrent Linear Transformers", 2023).

Per head, with the outer-product feature maps ``phi(k) = relu(k) ⊗ relu(p1)``,
``phi(q) = relu(q) ⊗ relu(p2)`` (size dk = Dh·eta), a value gate ``b = σ(W_b x)`` [Dh]
and a key gate ``g = σ(W_g x) ⊗ σ(p3)`` [dk]:

    C_t = (1-b_t)(1-g_t)^T ⊙ C_{t-1} + (b_t ⊙ v_t)(g_t ⊙ phi(k_t))^T     [Dh, dk]
    s_t = (1-g_t) ⊙ s_{t-1} + g_t ⊙ phi(k_t)                             [dk]
    o_t = C_t phi(q_t) / (s_t · phi(q_t) + eps)

AGaLiTe keeps r oscillating components instead of C (state O(r·eta·Dh), not O(eta·Dh²)):

    ṽ_j = (1-b) ⊙ ṽ_j + cos(ω_j τ) b ⊙ v,   k̃_j = (1-g) ⊙ k̃_j + cos(ω_j τ) g ⊙ phi(k)
    o_t = Σ_j ṽ_j (k̃_j · phi(q)) / ((r/2) s_t · phi(q) + eps)

with τ the step within the episode (restarting at 1 after a reset). Both gates are capped so
that each decay ``1 - gate`` is at least ``e^-5`` per step, which keeps the chunked parallel
forms finite in fp32 (``base.LOG_DECAY_FLOOR``).

Option ``conv`` (taps, 0 = off): a short causal convolution on the mixer input in front of
all the projections, and a per-channel skip ``o_t += d ⊙ v_t`` from the (convolved) value to
the output - Mamba's layout (Gu & Dao 2023; GLA and xLSTM also convolve before the
recurrence). The gated, normalised read-out is an average over the episode: it gives back
one recent token only with both gates saturated, the skip directly. Its state ``(buf, valid)``
follows the mixer's own.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rl_seq.kernels.base import (
    LOG_DECAY_FLOOR,
    Chunks,
    Mixer,
    State,
    alive,
    check_chunk,
    positions_in_segment,
)
from rl_seq.kernels.conv import CausalConv


class _GatedLinearBase(Mixer):
    def __init__(self, d_model: int, n_heads: int, eta: int, gate_bias: float, conv: int,
                 backend: str) -> None:
        super().__init__(d_model, n_heads, backend)
        if conv < 0:
            raise ValueError(f"conv must be >= 0 taps (0 = off), got {conv}")
        if eta < 1:
            raise ValueError(f"eta (the feature expansion) must be >= 1, got {eta}")
        self.conv = CausalConv(d_model, kernel_size=conv, backend=backend) if conv else None
        self.skip = nn.Parameter(torch.ones(d_model)) if conv else None
        self.eta = eta
        self.dk = self.head_dim * eta
        H = n_heads
        # q, k, v, value gate b, key gate g, and the three eta-projections p1, p2, p3
        self.inp = nn.Linear(d_model, 5 * d_model + 3 * H * eta, bias=False)
        # learnable biases of the b and g pre-activations; a negative start (like an LSTM's
        # forget-gate bias) starts the memory long: each step keeps about 1 - σ(gate_bias)
        self.gate_bias = nn.Parameter(torch.full((2, d_model), float(gate_bias)))
        self.proj = nn.Linear(d_model, d_model)
        self.eps = 1e-6

    def _features(self, x: Tensor):
        """x [B,T,D] -> phi_q, phi_k, g (each [B,T,H,dk]), v, b ([B,T,H,Dh])."""
        B, T, _ = x.shape
        H, Dh, e = self.n_heads, self.head_dim, self.eta
        q, k, v, b, g, p = self.inp(x).split([self.d_model] * 5 + [3 * H * e], -1)
        b, g = b + self.gate_bias[0], g + self.gate_bias[1]
        p1, p2, p3 = p.view(B, T, H, 3, e).unbind(3)

        def outer(a: Tensor, c: Tensor) -> Tensor:
            return (a.view(B, T, H, Dh, 1) * c.view(B, T, H, 1, e)).reshape(B, T, H, Dh * e)

        cap = 1 - math.exp(LOG_DECAY_FLOOR)
        phi_q = outer(F.relu(q), F.relu(p2))
        phi_k = outer(F.relu(k), F.relu(p1))
        gk = outer(torch.sigmoid(g), torch.sigmoid(p3)).clamp(max=cap)
        return phi_q, phi_k, gk, v.view(B, T, H, Dh), torch.sigmoid(b).clamp(max=cap).view(B, T, H, Dh)

    # -- the shared frame: optional convolution, features, the subclass's recurrence, skip --
    def init_state(self, batch_size: int, device=None) -> State:
        own = self._init_own(batch_size, device)
        return own + self.conv.init_state(batch_size, device) if self.conv is not None else own

    def forward_fast(self, x: Tensor, state: State, resets: Tensor) -> tuple[Tensor, State]:
        return self._run(x, state, resets, fast=True)

    def forward_reference(self, x: Tensor, state: State, resets: Tensor) -> tuple[Tensor, State]:
        return self._run(x, state, resets, fast=False)

    def _step(self, x: Tensor, state: State, reset: Tensor) -> tuple[Tensor, State]:
        y, state = self._run(x[:, None], state, reset[:, None], fast=False)
        return y[:, 0], state

    def _run(self, x: Tensor, state: State, resets: Tensor, fast: bool) -> tuple[Tensor, State]:
        own, conv_state = (state[:-2], state[-2:]) if self.conv is not None else (state, ())
        if self.conv is not None:  # a mixer on the same backend: its own path matches ours
            x, conv_state = self.conv(x, conv_state, resets)
        feats = self._features(x)
        o, own = (self._mix_fast if fast else self._mix_reference)(feats, own, resets)  # o [B,T,H,Dh]
        B, T = x.shape[:2]
        o = o.reshape(B, T, self.d_model)
        if self.conv is not None:
            o = o + self.skip * feats[3].reshape(B, T, self.d_model)
        return self.proj(o), own + conv_state


class GaLiTe(_GatedLinearBase):
    """GaLiTe. Args: d_model, n_heads, eta (feature expansion), chunk (chunk length of the
    parallel form), gate_bias (initial bias of the gate pre-activations; 0 as in the paper,
    negative for a longer initial memory), conv (taps of the input convolution and value
    skip, 0 = off; module docstring), backend. State: ``(C [B,H,Dh,dk], s [B,H,dk])``, then
    the convolution's ``(buf, valid)`` if ``conv``."""

    name = "linear"

    def __init__(self, d_model: int, n_heads: int = 4, *, eta: int = 4, chunk: int = 16,
                 gate_bias: float = 0.0, conv: int = 0, backend: str = "torch") -> None:
        super().__init__(d_model, n_heads, eta, gate_bias, conv, backend)
        self.chunk = check_chunk(chunk)

    def _init_own(self, batch_size: int, device=None) -> State:
        H = self.n_heads
        return (torch.zeros(batch_size, H, self.head_dim, self.dk, device=device),
                torch.zeros(batch_size, H, self.dk, device=device))

    def _recurrence(self, feats, t: int, C: Tensor, s: Tensor):
        phi_q, phi_k, gk, v, b = (f[:, t] for f in feats)
        C = (1 - b)[..., :, None] * C * (1 - gk)[..., None, :] + (b * v)[..., :, None] * (gk * phi_k)[..., None, :]
        s = (1 - gk) * s + gk * phi_k
        o = (C @ phi_q[..., None])[..., 0] / ((s * phi_q).sum(-1, keepdim=True) + self.eps)
        return o, C, s

    def _mix_reference(self, feats, state: State, resets: Tensor):
        C, s = state
        outs = []
        for t in range(resets.shape[1]):
            keep = (~resets[:, t]).view(-1, 1, 1).to(C.dtype)
            o, C, s = self._recurrence(feats, t, C * keep[..., None], s * keep)
            outs.append(o)
        return torch.stack(outs, 1), (C, s)

    def _mix_fast(self, feats, state: State, resets: Tensor):
        """Chunked parallel form (as gated linear attention): inside a chunk the decays are
        factored into the queries, keys and values (``qt = phi(q) e^{L_k}``,
        ``kt = g phi(k) e^{-L_k}``, ``vt = b v e^{-L_v}``), so every product is a small
        batched matmul over all chunks at once; chunk-end states (C and s) are carried from
        chunk to chunk."""
        phi_q, phi_k, gk, v, b = feats
        C0, s0 = state
        ch = Chunks(resets, self.chunk, v.dtype)
        Lk = (ch.split(torch.log1p(-gk)) * ch.keep[..., None, None]).cumsum(2)  # [B,n,c,H,dk]
        Lv = (ch.split(torch.log1p(-b)) * ch.keep[..., None, None]).cumsum(2)  # [B,n,c,H,Dh]
        qt, kt, vt = ch.split(phi_q) * Lk.exp(), ch.split(gk * phi_k) * (-Lk).exp(), ch.split(b * v) * (-Lv).exp()
        # chunk-end states built from zero: the final token's episode, decayed to the end
        end = ch.seg[:, :, -1, :, None, None]  # [B,n,c,1,1]
        ek, ev = Lk[:, :, -1].exp(), Lv[:, :, -1].exp()  # [B,n,H,*]
        s_in, s_last = ch.carry(ek, ek * (kt * end).sum(2), s0)  # [B,n,H,dk]
        decay_C = ev[..., :, None] * ek[..., None, :]  # [B,n,H,Dh,dk]
        C_in, C_last = ch.carry(decay_C, decay_C * torch.einsum("bnshi,bnshj->bnhij", vt * end, kt), C0)
        live = ch.alive[..., None, None]  # the incoming state still reaches the token
        A = torch.einsum("bnthj,bnshj->bnhts", qt, kt) * ch.seg[:, :, None]
        o = Lv.exp() * (torch.einsum("bnhts,bnshi->bnthi", A, vt)
                        + live * torch.einsum("bnhij,bnthj->bnthi", C_in, qt))
        sq = A.sum(-1).transpose(2, 3)[..., None] + live * (qt * s_in[:, :, None]).sum(-1, keepdim=True)
        return ch.merge(o / (sq + self.eps)), (C_last, s_last)


class AGaLiTe(_GatedLinearBase):
    """AGaLiTe. Args: d_model, n_heads, eta, r (oscillating components), chunk (chunk length
    of the parallel form), gate_bias and conv (as GaLiTe's), backend.
    State: ``(ṽ [B,r,H,Dh], k̃ [B,r,H,dk], s [B,H,dk], tick [B])``, then the convolution's
    ``(buf, valid)`` if ``conv``."""

    name = "agalite"

    def __init__(self, d_model: int, n_heads: int = 4, *, eta: int = 4, r: int = 4, chunk: int = 16,
                 gate_bias: float = 0.0, conv: int = 0, backend: str = "torch") -> None:
        super().__init__(d_model, n_heads, eta, gate_bias, conv, backend)
        if r < 1:
            raise ValueError(f"r (the oscillating components) must be >= 1, got {r}")
        self.r, self.chunk = r, check_chunk(chunk)
        # r distinct frequencies in (0, π]: cos is even, so ±ω would duplicate components
        self.register_buffer("omegas", math.pi * torch.arange(1, r + 1) / r, persistent=False)

    def _init_own(self, batch_size: int, device=None) -> State:
        H, r = self.n_heads, self.r
        return (torch.zeros(batch_size, r, H, self.head_dim, device=device),
                torch.zeros(batch_size, r, H, self.dk, device=device),
                torch.zeros(batch_size, H, self.dk, device=device),
                torch.zeros(batch_size, device=device))

    def _ticks(self, resets: Tensor, tick0: Tensor) -> Tensor:
        """[B,T] step number within the episode, counting from 1."""
        return positions_in_segment(resets).to(tick0.dtype) + 1 + alive(resets) * tick0[:, None]

    def _read(self, vt: Tensor, kt: Tensor, s: Tensor, phi_q: Tensor) -> Tensor:
        """vt [...,r,H,Dh], kt [...,r,H,dk], s [...,H,dk], phi_q [...,H,dk] -> [...,H,Dh]"""
        kq = (kt * phi_q.unsqueeze(-3)).sum(-1)  # [...,r,H]
        num = (vt * kq[..., None]).sum(-3)
        return num / ((self.r / 2) * (s * phi_q).sum(-1, keepdim=True) + self.eps)

    def _mix_reference(self, feats, state: State, resets: Tensor):
        phi_q, phi_k, gk, v, b = feats
        vt, kt, s, tick = state
        outs = []
        for t in range(resets.shape[1]):
            keep = (~resets[:, t]).to(v.dtype)
            vt, kt, s = (z * keep.view(-1, *[1] * (z.dim() - 1)) for z in (vt, kt, s))
            tick = tick * keep + 1
            cos = torch.cos(tick[:, None] * self.omegas)[:, :, None, None]  # [B,r,1,1]
            vt = (1 - b[:, t, None]) * vt + cos * (b * v)[:, t, None]
            kt = (1 - gk[:, t, None]) * kt + cos * (gk * phi_k)[:, t, None]
            s = (1 - gk[:, t]) * s + gk[:, t] * phi_k[:, t]
            outs.append(self._read(vt, kt, s, phi_q[:, t]))
        return torch.stack(outs, 1), (vt, kt, s, tick)

    def _mix_fast(self, feats, state: State, resets: Tensor):
        """Chunked parallel form (as gated linear attention); neither ṽ nor k̃ is
        materialised per token. With L the in-chunk cumulative log-decays of the key and
        value gates, ``qt = phi(q) e^{L_k}``, ``kt = g phi(k) e^{-L_k}``, ``vt = b v e^{-L_v}``:

            k̃_j(t)·phi(q_t) = Σ_s (qt_t·kt_s) cos(ω_j τ_s) + qt_t·k̃_j(in)        =: kq_j(t)
            Σ_j ṽ_j(t) kq_j(t) = e^{L_v,t} (Σ_s (Σ_j kq_j(t) cos(ω_j τ_s)) vt_s + Σ_j kq_j(t) ṽ_j(in))

        over the tokens s <= t of t's chunk and episode; s is the extra component with
        cos = 1. Chunk-end states are carried from chunk to chunk."""
        phi_q, phi_k, gk, v, b = feats
        vt0, kt0, s0, tick0 = state
        B, T = resets.shape
        ticks = self._ticks(resets, tick0)
        cos = torch.cos(ticks[..., None] * self.omegas)  # [B,T,r]
        ch = Chunks(resets, self.chunk, v.dtype)
        w = ch.split(torch.cat([cos, cos.new_ones(B, T, 1)], -1))  # [B,n,c,r+1]
        end = w * ch.seg[:, :, -1, :, None]  # weights of the final token's episode in each chunk
        # keys: kq [B,n,c,H,r+1]
        Lk = (ch.split(torch.log1p(-gk)) * ch.keep[..., None, None]).cumsum(2)  # [B,n,c,H,dk]
        qt, kt = ch.split(phi_q) * Lk.exp(), ch.split(gk * phi_k) * (-Lk).exp()
        dk_end = Lk[:, :, -1, None].exp()  # [B,n,1,H,dk]
        k_in, k_last = ch.carry(dk_end, dk_end * torch.einsum("bnsr,bnshj->bnrhj", end, kt),
                                torch.cat([kt0, s0[:, None]], 1))  # [B,n,r+1,H,dk]
        A = torch.einsum("bnthj,bnshj->bnhts", qt, kt) * ch.seg[:, :, None]
        kq = (torch.einsum("bnhts,bnsr->bnthr", A, w)
              + ch.alive[..., None, None] * torch.einsum("bnthj,bnrhj->bnthr", qt, k_in))
        # values: num [B,n,c,H,Dh]
        Lv = (ch.split(torch.log1p(-b)) * ch.keep[..., None, None]).cumsum(2)  # [B,n,c,H,Dh]
        vt = ch.split(b * v) * (-Lv).exp()
        dv_end = Lv[:, :, -1, None].exp()
        v_in, v_last = ch.carry(dv_end, dv_end * torch.einsum("bnsr,bnshi->bnrhi", end[..., :-1], vt), vt0)
        kq_r = kq[..., :-1]
        M = torch.einsum("bnthr,bnsr->bnhts", kq_r, w[..., :-1]) * ch.seg[:, :, None]
        num = Lv.exp() * (torch.einsum("bnhts,bnshi->bnthi", M, vt)
                          + ch.alive[..., None, None] * torch.einsum("bnthr,bnrhi->bnthi", kq_r, v_in))
        o = ch.merge(num / ((self.r / 2) * kq[..., -1:] + self.eps))
        return o, (v_last, k_last[:, :-1], k_last[:, -1], ticks[:, -1])
