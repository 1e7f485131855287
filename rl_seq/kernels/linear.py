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

with τ the step within the episode (restarting at 1 after a reset).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rl_seq.kernels.base import Mixer, State, alive, linear_scan, positions_in_segment, same_segment


class _GatedLinearBase(Mixer):
    def __init__(self, d_model: int, n_heads: int, eta: int, backend: str) -> None:
        super().__init__(d_model, n_heads, backend)
        self.eta = eta
        self.dk = self.head_dim * eta
        H = n_heads
        # q, k, v, value gate b, key gate g, and the three eta-projections p1, p2, p3
        self.inp = nn.Linear(d_model, 5 * d_model + 3 * H * eta, bias=False)
        self.proj = nn.Linear(d_model, d_model)
        self.eps = 1e-6

    def _features(self, x: Tensor):
        """x [B,T,D] -> phi_q, phi_k, g (each [B,T,H,dk]), v, b ([B,T,H,Dh])."""
        B, T, _ = x.shape
        H, Dh, e = self.n_heads, self.head_dim, self.eta
        q, k, v, b, g, p = self.inp(x).split([self.d_model] * 5 + [3 * H * e], -1)
        p1, p2, p3 = p.view(B, T, H, 3, e).unbind(3)

        def outer(a: Tensor, c: Tensor) -> Tensor:
            return (a.view(B, T, H, Dh, 1) * c.view(B, T, H, 1, e)).reshape(B, T, H, Dh * e)

        phi_q = outer(F.relu(q), F.relu(p2))
        phi_k = outer(F.relu(k), F.relu(p1))
        gk = outer(torch.sigmoid(g), torch.sigmoid(p3))
        return phi_q, phi_k, gk, v.view(B, T, H, Dh), torch.sigmoid(b).view(B, T, H, Dh)

    def _out(self, o: Tensor) -> Tensor:
        B, T = o.shape[:2]
        return self.proj(o.reshape(B, T, self.d_model))


class GaLiTe(_GatedLinearBase):
    """GaLiTe. Args: d_model, n_heads, eta (feature expansion), chunk (chunk length of the
    parallel form), backend. State: ``(C [B,H,Dh,dk], s [B,H,dk])``."""

    name = "linear"

    def __init__(self, d_model: int, n_heads: int = 4, *, eta: int = 4, chunk: int = 16,
                 backend: str = "torch") -> None:
        super().__init__(d_model, n_heads, eta, backend)
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
        """Chunked parallel form: within a chunk the decays are explicit [C, C, d] factors
        (exp of log-gate differences, never above 1); chunks pass C along."""
        phi_q, phi_k, gk, v, b = self._features(x)
        B, T, H, Dh = v.shape
        C0, s0 = state
        # s: an elementwise recurrence, scanned in parallel; resets zero the decay
        keep = (~resets).to(x.dtype)[:, :, None, None]
        s_all = linear_scan((1 - gk) * keep, gk * phi_k, s0)
        # log decays; at resets they are irrelevant (cross-episode pairs are masked)
        la_k = torch.log1p(-gk.clamp(max=1 - 1e-6)) * keep
        la_v = torch.log1p(-b.clamp(max=1 - 1e-6)) * keep
        bv, gphi = b * v, gk * phi_k
        outs, C = [], C0
        for c0 in range(0, T, self.chunk):
            sl = slice(c0, min(c0 + self.chunk, T))
            r = resets[:, sl]
            Lk, Lv = la_k[:, sl].cumsum(1), la_v[:, sl].cumsum(1)  # [B,c,H,*]
            pair = same_segment(r)[:, :, :, None, None]  # [B,t,s,1,1]
            Ek = torch.exp((Lk[:, :, None] - Lk[:, None, :]).masked_fill(~pair, float("-inf")))
            Ev = torch.exp((Lv[:, :, None] - Lv[:, None, :]).masked_fill(~pair, float("-inf")))
            S = (phi_q[:, sl, None] * gphi[:, None, sl] * Ek).sum(-1)  # [B,t,s,H]
            o = (S[..., None] * Ev * bv[:, None, sl]).sum(2)  # [B,t,H,Dh]
            a = alive(r).to(x.dtype)[:, :, None, None]
            o = o + a * Lv.exp() * (C[:, None] @ (Lk.exp() * phi_q[:, sl])[..., None])[..., 0]
            # chunk-end state
            Ekl, Evl = Ek[:, -1], Ev[:, -1]  # [B,s,H,*]
            C = (a[:, -1, :, :, None] * Lv[:, -1, :, :, None].exp() * Lk[:, -1, :, None, :].exp() * C
                 + torch.einsum("bshi,bshj->bhij", Evl * bv[:, sl], Ekl * gphi[:, sl]))
            outs.append(o)
        o = torch.cat(outs, 1)
        o = o / ((s_all * phi_q).sum(-1, keepdim=True) + self.eps)
        return self._out(o), (C, s_all[:, -1])


class AGaLiTe(_GatedLinearBase):
    """AGaLiTe. Args: d_model, n_heads, eta, r (oscillating components), backend.
    State: ``(ṽ [B,r,H,Dh], k̃ [B,r,H,dk], s [B,H,dk], tick [B])``."""

    name = "agalite"

    def __init__(self, d_model: int, n_heads: int = 4, *, eta: int = 4, r: int = 4,
                 backend: str = "torch") -> None:
        super().__init__(d_model, n_heads, eta, backend)
        self.r = r
        self.register_buffer("omegas", torch.linspace(-math.pi, math.pi, r), persistent=False)

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
        """All components are elementwise recurrences: one parallel scan over
        [ṽ, k̃, s] with the reset positions' decay set to 0."""
        phi_q, phi_k, gk, v, b = self._features(x)
        vt0, kt0, s0, tick0 = state
        B, T, H, Dh = v.shape
        r, dk = self.r, self.dk
        ticks = self._ticks(resets, tick0)
        cos = torch.cos(ticks[..., None] * self.omegas)[..., None, None]  # [B,T,r,1,1]
        keep = (~resets).to(x.dtype)[:, :, None, None]
        a = torch.cat([((1 - b) * keep)[:, :, None].expand(B, T, r, H, Dh).reshape(B, T, -1),
                       ((1 - gk) * keep)[:, :, None].expand(B, T, r, H, dk).reshape(B, T, -1),
                       ((1 - gk) * keep).reshape(B, T, -1)], -1)
        xin = torch.cat([(cos * (b * v)[:, :, None]).reshape(B, T, -1),
                         (cos * (gk * phi_k)[:, :, None]).reshape(B, T, -1),
                         (gk * phi_k).reshape(B, T, -1)], -1)
        h0 = torch.cat([vt0.reshape(B, -1), kt0.reshape(B, -1), s0.reshape(B, -1)], -1)
        h = linear_scan(a, xin, h0)
        n_v, n_k = r * H * Dh, r * H * dk
        vt = h[..., :n_v].reshape(B, T, r, H, Dh)
        kt = h[..., n_v:n_v + n_k].reshape(B, T, r, H, dk)
        s = h[..., n_v + n_k:].reshape(B, T, H, dk)
        o = self._read(vt, kt, s, phi_q)
        return self._out(o), (vt[:, -1], kt[:, -1], s[:, -1], ticks[:, -1])
