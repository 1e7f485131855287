"""The LSTM baseline in the mixer contract.

``forward`` runs ``nn.LSTM`` (the fused MKL/cuDNN kernel) on the whole call when no episode
starts inside it; otherwise it cuts each row at its resets and runs the pieces as separate
packed sequences, each starting from zeros or, for a row's first piece, from the incoming
state. The reference is the textbook cell in a loop, on the same
weights. State: ``(h [B,D], c [B,D])``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rl_seq.kernels.base import Mixer, PackedSegments, State


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
