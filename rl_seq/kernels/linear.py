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
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rl_seq.kernels.base import (
    LOG_DECAY_FLOOR,
    Mixer,
    State,
    alive,
    decay_scan,
    positions_in_segment,
    same_segment,
)


class _GatedLinearBase(Mixer):
    def __init__(self, d_model: int, n_heads: int, eta: int, gate_bias: float, backend: str) -> None:
        super().__init__(d_model, n_heads, backend)
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

    def _out(self, o: Tensor) -> Tensor:
        B, T = o.shape[:2]
        return self.proj(o.reshape(B, T, self.d_model))


class GaLiTe(_GatedLinearBase):
    """GaLiTe. Args: d_model, n_heads, eta (feature expansion), chunk (chunk length of the
    parallel form), gate_bias (initial bias of the gate pre-activations; 0 as in the paper,
    negative for a longer initial memory), backend. State: ``(C [B,H,Dh,dk], s [B,H,dk])``."""

    name = "linear"

    def __init__(self, d_model: int, n_heads: int = 4, *, eta: int = 4, chunk: int = 16,
                 gate_bias: float = 0.0, backend: str = "torch") -> None:
        super().__init__(d_model, n_heads, eta, gate_bias, backend)
        self.chunk = chunk

    def init_state(self, batch_size: int, device=None) -> State:
        H = self.n_heads
        return (torch.zeros(batch_size, H, self.head_dim, self.dk, device=device),
                torch.zeros(batch_size, H, self.dk, device=device))

    def _recurrence(self, feats, t: int, C: Tensor, s: Tensor):
        phi_q, phi_k, gk, v, b = (f[:, t] for f in feats)
        C = (1 - b)[..., :, None] * C * (1 - gk)[..., None, :] + (b * v)[..., :, None] * (gk * phi_k)[..., None, :]
        s = (1 - gk) * s + gk * phi_k
        o = (C @ phi_q[..., None])[..., 0] / ((s * phi_q).sum(-1, keepdim=True) + self.eps)
        return o, C, s

    def forward_reference(self, x: Tensor, state: State, resets: Tensor) -> tuple[Tensor, State]:
        feats = self._features(x)
        C, s = state
        outs = []
        for t in range(x.shape[1]):
            keep = (~resets[:, t]).view(-1, 1, 1).to(x.dtype)
            o, C, s = self._recurrence(feats, t, C * keep[..., None], s * keep)
            outs.append(o)
        return self._out(torch.stack(outs, 1)), (C, s)

    def _step(self, x: Tensor, state: State, reset: Tensor) -> tuple[Tensor, State]:
        keep = (~reset).view(-1, 1, 1).to(x.dtype)
        C, s = state
        o, C, s = self._recurrence(self._features(x[:, None]), 0, C * keep[..., None], s * keep)
        return self._out(o[:, None])[:, 0], (C, s)

    def forward_fast(self, x: Tensor, state: State, resets: Tensor) -> tuple[Tensor, State]:
        """Chunked parallel form (as gated linear attention): inside a chunk the decays are
        factored into the queries, keys and values (``q·e^{L_t}``, ``k·e^{-L_s}``), so every
        product is a small matmul; chunks pass C along."""
        phi_q, phi_k, gk, v, b = self._features(x)
        C, s0 = state
        B, T, H, Dh = v.shape
        keep = (~resets).to(x.dtype)[:, :, None, None]
        la_k = torch.log1p(-gk)  # >= LOG_DECAY_FLOOR by the gate cap
        la_v = torch.log1p(-b)
        s_all = decay_scan(la_k, gk * phi_k, s0, resets, self.chunk)
        la_k, la_v = la_k * keep, la_v * keep
        bv, gphi = b * v, gk * phi_k
        outs = []
        for c0 in range(0, T, self.chunk):
            sl = slice(c0, min(c0 + self.chunk, T))
            r = resets[:, sl]
            Lk, Lv = la_k[:, sl].cumsum(1), la_v[:, sl].cumsum(1)  # [B,c,H,*]
            qt = phi_q[:, sl] * Lk.exp()
            kt = gphi[:, sl] * (-Lk).exp()
            vt = bv[:, sl] * (-Lv).exp()
            A = torch.einsum("bthj,bshj->bhts", qt, kt) * same_segment(r)[:, None].to(x.dtype)
            o = torch.einsum("bhts,bshi->bthi", A, vt)
            o = o + alive(r).to(x.dtype)[:, :, None, None] * torch.einsum("bhij,bthj->bthi", C, qt)
            outs.append(Lv.exp() * o)
            # chunk-end state: the pieces of the final token's episode, decayed to the end
            end = same_segment(r)[:, -1].to(x.dtype)[:, :, None, None]  # [B,c,1,1]
            ev, ek = Lv[:, -1].exp(), Lk[:, -1].exp()  # [B,H,*]
            C = (alive(r)[:, -1].to(x.dtype)[:, None, None, None] * ev[..., :, None] * ek[..., None, :] * C
                 + torch.einsum("bshi,bshj->bhij", vt * end * ev[:, None], kt * ek[:, None]))
        o = torch.cat(outs, 1) / ((s_all * phi_q).sum(-1, keepdim=True) + self.eps)
        return self._out(o), (C, s_all[:, -1])


class AGaLiTe(_GatedLinearBase):
    """AGaLiTe. Args: d_model, n_heads, eta, r (oscillating components), gate_bias (as
    GaLiTe's), backend.
    State: ``(ṽ [B,r,H,Dh], k̃ [B,r,H,dk], s [B,H,dk], tick [B])``."""

    name = "agalite"

    def __init__(self, d_model: int, n_heads: int = 4, *, eta: int = 4, r: int = 4,
                 gate_bias: float = 0.0, backend: str = "torch") -> None:
        super().__init__(d_model, n_heads, eta, gate_bias, backend)
        self.r = r
        # r distinct frequencies in (0, π]: cos is even, so ±ω would duplicate components
        self.register_buffer("omegas", math.pi * torch.arange(1, r + 1) / r, persistent=False)

    def init_state(self, batch_size: int, device=None) -> State:
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

    def forward_reference(self, x: Tensor, state: State, resets: Tensor) -> tuple[Tensor, State]:
        phi_q, phi_k, gk, v, b = self._features(x)
        vt, kt, s, tick = state
        outs = []
        for t in range(x.shape[1]):
            keep = (~resets[:, t]).to(x.dtype)
            vt, kt, s = (z * keep.view(-1, *[1] * (z.dim() - 1)) for z in (vt, kt, s))
            tick = tick * keep + 1
            cos = torch.cos(tick[:, None] * self.omegas)[:, :, None, None]  # [B,r,1,1]
            vt = (1 - b[:, t, None]) * vt + cos * (b * v)[:, t, None]
            kt = (1 - gk[:, t, None]) * kt + cos * (gk * phi_k)[:, t, None]
            s = (1 - gk[:, t]) * s + gk[:, t] * phi_k[:, t]
            outs.append(self._read(vt, kt, s, phi_q[:, t]))
        return self._out(torch.stack(outs, 1)), (vt, kt, s, tick)

    def _step(self, x: Tensor, state: State, reset: Tensor) -> tuple[Tensor, State]:
        y, state = self.forward_reference(x[:, None], state, reset[:, None])
        return y[:, 0], state

    def forward_fast(self, x: Tensor, state: State, resets: Tensor) -> tuple[Tensor, State]:
        """All components are elementwise recurrences: one chunked decay scan of ṽ, k̃
        and s together, the decay of ṽ and k̃ shared by their r components."""
        phi_q, phi_k, gk, v, b = self._features(x)
        vt0, kt0, s0, tick0 = state
        ticks = self._ticks(resets, tick0)
        cos = torch.cos(ticks[..., None] * self.omegas)[..., None, None]  # [B,T,r,1,1]
        la_v, la_k = torch.log1p(-b), torch.log1p(-gk)  # shared by the r components
        gphi = gk * phi_k
        vt, kt, s = decay_scan([la_v[:, :, None], la_k[:, :, None], la_k],
                               [cos * (b * v)[:, :, None], cos * gphi[:, :, None], gphi], [vt0, kt0, s0], resets)
        o = self._read(vt, kt, s, phi_q)
        return self._out(o), (vt[:, -1], kt[:, -1], s[:, -1], ticks[:, -1])
