"""The LSTM baseline in the mixer contract.

``forward`` runs ``nn.LSTM`` (the fused oneDNN/cuDNN kernel) on the whole call when no
episode starts inside it. Otherwise, on CUDA, it cuts each row at its resets and runs the
pieces as separate packed sequences, each starting from zeros or, for a row's first piece,
from the incoming state; on the CPU, where packed sequences fall back to a loop of small ops
that autograd records one by one, it projects every input in one matmul and runs the
recurrence as one autograd function (:class:`LSTMRecurrence`, resets as a mask on the
incoming state).
The reference is the textbook cell in a loop, on the same weights. State: ``(h [B,D], c [B,D])``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rl_seq.kernels.base import Mixer, PackedSegments, State


class LSTMRecurrence(torch.autograd.Function):
    """The LSTM recurrence after the input projection, with its own backward.

    gx [B, T, 4D] (x W_ih^T + b_ih + b_hh, gates in nn.LSTM's order i, f, g, o), keep [B, T]
    (0 where an episode starts: the state entering that step is zeroed), h0, c0 [B, D],
    w_hh [4D, D] -> h [B, T, D] (every step's output), c_T [B, D].

    Each step's elementwise work is a handful of ops: the forward keeps, time-major, what the
    backward multiplies by (each gate's input times its activation's derivative), so a
    backward step is one matmul and five ops, and the weight's gradient one matmul."""

    @staticmethod
    def forward(ctx, gx: Tensor, keep: Tensor, h0: Tensor, c0: Tensor, w_hh: Tensor) -> tuple[Tensor, Tensor]:
        B, T, G = gx.shape
        D = G // 4
        gx_t, keep_t = gx.transpose(0, 1), keep.t()[..., None]  # time-major views
        acts = gx.new_empty(T, B, G)  # i, f, o after the sigmoid, g after the tanh
        h_in, c_in, tanh_c, ys = (gx.new_empty(T, B, D) for _ in range(4))  # states entering / leaving
        w_t = w_hh.t()
        h, c = h0, c0
        for t in range(T):
            h = torch.mul(h, keep_t[t], out=h_in[t])
            c = torch.mul(c, keep_t[t], out=c_in[t])
            a = torch.addmm(gx_t[t], h, w_t, out=acts[t])
            i, f, g, o = a.chunk(4, 1)
            a[:, :2 * D].sigmoid_()
            g.tanh_()
            o.sigmoid_()
            c = torch.addcmul(f * c, i, g)
            h = torch.mul(o, torch.tanh(c, out=tanh_c[t]), out=ys[t])
        i, f, g, o = acts.chunk(4, 2)
        # d gate pre-activation = (dc, dc, dc, dh) * mult: dc·g·i(1-i), dc·c_in·f(1-f), dc·i(1-g²), dh·tanh(c)·o(1-o)
        mult = torch.cat([g * i * (1 - i), c_in * f * (1 - f), i * (1 - g * g), tanh_c * o * (1 - o)], 2)
        ctx.save_for_backward(mult, o * (1 - tanh_c * tanh_c), f * keep_t, keep_t, h_in, w_hh)
        return ys.transpose(0, 1), c

    @staticmethod
    def backward(ctx, d_ys: Tensor, d_c: Tensor):
        mult, o_dtanh, f_keep, keep_t, h_in, w_hh = ctx.saved_tensors
        T, B, D = h_in.shape
        d_ys = d_ys.transpose(0, 1)
        d_gates = torch.empty_like(mult)
        dd = mult.new_empty(B, 4, D)  # (dc, dc, dc, dh) of one step
        dh, dc = torch.zeros_like(d_c), d_c.clone()
        for t in reversed(range(T)):
            dh = dh + d_ys[t]
            dc = torch.addcmul(dc, dh, o_dtanh[t])
            dd[:, :3] = dc[:, None]
            dd[:, 3] = dh
            dg = torch.mul(dd.view(B, 4 * D), mult[t], out=d_gates[t])
            dh = (dg @ w_hh).mul_(keep_t[t])
            dc = dc * f_keep[t]
        d_w = d_gates.view(T * B, 4 * D).t() @ h_in.view(T * B, D)
        return d_gates.transpose(0, 1), None, dh, dc, d_w


class LSTM(Mixer):
    """Args: d_model (input and hidden size), n_heads (unused), backend."""

    name = "lstm"

    def __init__(self, d_model: int, n_heads: int = 1, *, backend: str = "torch") -> None:
        super().__init__(d_model, 1, backend)
        self.lstm = nn.LSTM(d_model, d_model, batch_first=True)

    def init_state(self, batch_size: int, device=None) -> State:
        z = torch.zeros(batch_size, self.d_model, device=device)
        return (z, z.clone())

    def _cell(self, x: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        gates = (x @ self.lstm.weight_ih_l0.T + self.lstm.bias_ih_l0
                 + h @ self.lstm.weight_hh_l0.T + self.lstm.bias_hh_l0)
        i, f, g, o = gates.chunk(4, -1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c

    def forward_reference(self, x: Tensor, state: State, resets: Tensor) -> tuple[Tensor, State]:
        h, c = state
        ys = []
        for t in range(x.shape[1]):
            keep = (~resets[:, t])[:, None].to(x.dtype)
            h, c = self._cell(x[:, t], h * keep, c * keep)
            ys.append(h)
        return torch.stack(ys, 1), (h, c)

    def _step(self, x: Tensor, state: State, reset: Tensor) -> tuple[Tensor, State]:
        keep = (~reset)[:, None].to(x.dtype)
        h, c = state
        h, c = self._cell(x, h * keep, c * keep)
        return h, (h, c)

    def forward_fast(self, x: Tensor, state: State, resets: Tensor) -> tuple[Tensor, State]:
        h0, c0 = state
        if not resets[:, 1:].any():  # no episode starts inside: one fused call, no packing
            carry = (~resets[:, 0])[:, None].to(x.dtype)
            y, (hn, cn) = self.lstm(x, ((h0 * carry)[None], (c0 * carry)[None]))
            return y, (hn[0], cn[0])
        if not x.is_cuda:
            lstm = self.lstm
            with torch.autocast(x.device.type, enabled=False):  # the recurrence runs in its weights' dtype
                x = x.to(lstm.weight_ih_l0.dtype)
                gx = F.linear(x, lstm.weight_ih_l0, lstm.bias_ih_l0 + lstm.bias_hh_l0)
                ys, c = LSTMRecurrence.apply(gx, (~resets).to(x.dtype), h0.to(x.dtype), c0.to(x.dtype),
                                             lstm.weight_hh_l0)
            return ys, (ys[:, -1], c)
        seg = PackedSegments(resets)
        init_h = x.new_zeros(seg.n, self.d_model)
        init_c = x.new_zeros(seg.n, self.d_model)
        carry = seg.carries[:, None].to(x.dtype)
        init_h = init_h.index_copy(0, seg.first, h0 * carry)
        init_c = init_c.index_copy(0, seg.first, c0 * carry)
        packed = pack_padded_sequence(seg.pack(x), seg.lengths.cpu(), batch_first=True,
                                      enforce_sorted=False)
        out, (hn, cn) = self.lstm(packed, (init_h[None], init_c[None]))
        y, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        return seg.unpack(y), (hn[0, seg.last], cn[0, seg.last])
