"""LRP through ``nn.LSTM``: the rule of Arras et al. ("Explaining Recurrent Neural Network
Predictions in Sentiment Analysis", WASSA 2017).

Per step, ``c_t = f c_{t-1} + i g`` and ``h_t = o tanh(c_t)`` with
``g = tanh(W_ig x_t + W_hg h_{t-1} + b)``. The sigmoid gates ``i, f, o`` are held
constant and receive no relevance; the signal paths redistribute it:

- ``h_t -> c_t``: all of it (the gate ``o`` constant, ``tanh`` the identity rule);
- ``c_t -> (c_{t-1}, g)``: the epsilon rule of the sum, in proportion to ``f c_{t-1}`` and
  ``i g``;
- ``g -> (x_t, h_{t-1})``: the identity through ``tanh``, then the epsilon rule of the
  linear map (the biases keep their share).

Bidirectional LSTMs run each direction on its own (the reverse one on the time-flipped
sequence) and add the input relevance; stacked layers hand it down. The initial states
are constants: what reaches them stays there. With zero biases and zero initial states the
rule conserves (up to the stabiliser).

Example:
    >>> lstm = torch.nn.LSTM(3, 4, bias=False)
    >>> x = torch.rand(5, 1, 3)
    >>> r = torch.rand(5, 1, 4)
    >>> rx = lstm_relevance(lstm, x, None, r, None, 1e-9)
    >>> bool(torch.isclose(rx.sum(), r.sum(), rtol=1e-4))
    True
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from hudd_core.lrp import kernels as K
from hudd_core.lrp.oprules import OpRule


@dataclass
class Steps:
    """One direction of one layer, time-major ``(T, B, H)``: the step inputs, the states
    before each step and the quantities the rule reads."""

    x: torch.Tensor  # (T, B, C) the layer's input
    h_prev: torch.Tensor
    c_prev: torch.Tensor
    i: torch.Tensor
    f: torch.Tensor
    g: torch.Tensor
    zg: torch.Tensor  # pre-activation of g, biases included
    c: torch.Tensor
    h: torch.Tensor


def _params(m: nn.LSTM, layer: int, reverse: bool, like: torch.Tensor) -> tuple:
    sfx = f"l{layer}" + ("_reverse" if reverse else "")
    w_ih, w_hh = getattr(m, f"weight_ih_{sfx}"), getattr(m, f"weight_hh_{sfx}")
    b = None
    if m.bias:
        b = getattr(m, f"bias_ih_{sfx}") + getattr(m, f"bias_hh_{sfx}")
    return tuple(None if t is None else t.detach().to(like) for t in (w_ih, w_hh, b))


def run_direction(x, w_ih, w_hh, b, h0, c0) -> Steps:
    """The LSTM recurrence over ``x`` (``(T, B, C)``, forward in time), every step kept."""
    xw = x @ w_ih.T if b is None else x @ w_ih.T + b
    h, c = h0, c0
    keep: dict[str, list] = {k: [] for k in ("h_prev", "c_prev", "i", "f", "g", "zg", "c", "h")}
    for t in range(x.shape[0]):
        z = xw[t] + h @ w_hh.T
        zi, zf, zg, zo = z.chunk(4, dim=-1)
        i, f, g, o = torch.sigmoid(zi), torch.sigmoid(zf), torch.tanh(zg), torch.sigmoid(zo)
        for k, v in (("h_prev", h), ("c_prev", c), ("i", i), ("f", f), ("g", g), ("zg", zg)):
            keep[k].append(v)
        c = f * c + i * g
        h = o * torch.tanh(c)
        keep["c"].append(c)
        keep["h"].append(h)
    return Steps(x, **{k: torch.stack(v) for k, v in keep.items()})


def back_direction(s: Steps, w_ih, w_hh, r_h, r_hn, r_cn, eps: float) -> torch.Tensor:
    """Relevance at the direction's input ``(T, B, C)`` from that at its outputs ``r_h``
    ``(T, B, H)`` and at its final states (``None``: none)."""
    hid = s.h.shape[-1]
    w_ig, w_hg = w_ih[2 * hid : 3 * hid], w_hh[2 * hid : 3 * hid]
    sc, szg = K.stab(s.c, eps), K.stab(s.zg, eps)
    f_c, i_g = s.f * s.c_prev, s.i * s.g
    rh = torch.zeros_like(s.h[0]) if r_hn is None else r_hn
    rc = torch.zeros_like(s.h[0]) if r_cn is None else r_cn
    sg = torch.empty_like(s.zg)
    for t in range(s.h.shape[0] - 1, -1, -1):
        q = (r_h[t] + rh + rc) / sc[t]  # all of h_t's relevance reaches c_t
        rc = f_c[t] * q
        sg[t] = i_g[t] * q / szg[t]
        rh = s.h_prev[t] * (sg[t] @ w_hg)
    return s.x * (sg @ w_ig)


def _states(hx, m: nn.LSTM, batch: int, like: torch.Tensor) -> tuple:
    """The initial ``(h0, c0)``, ``(layers * directions, B, H)``."""
    n = m.num_layers * (2 if m.bidirectional else 1)
    if hx is None:
        zero = like.new_zeros(n, batch, m.hidden_size)
        return zero, zero
    h0, c0 = hx
    return (h0, c0) if h0.dim() == 3 else (h0[:, None], c0[:, None])


def lstm_relevance(m: nn.LSTM, x, hx, r_out, r_state, eps: float) -> torch.Tensor:
    """Input relevance of ``m(x, hx)`` from the relevance at its output ``r_out`` and at
    its final states ``r_state`` (``(r_hn, r_cn)``, either ``None``, or ``None``)."""
    if m.proj_size:
        raise ValueError("LRP of nn.LSTM supports proj_size=0 only")
    unbatched = x.dim() == 2
    tm = (lambda t: t[:, None]) if unbatched else (
        (lambda t: t.transpose(0, 1)) if m.batch_first else (lambda t: t)
    )  # fmt: skip
    x, r_out = tm(x), tm(r_out)
    h0, c0 = _states(hx, m, x.shape[1], x)
    r_hn, r_cn = (None, None) if r_state is None else tuple(r_state)
    if unbatched:
        r_hn, r_cn = (None if t is None else t[:, None] for t in (r_hn, r_cn))
    dirs = 2 if m.bidirectional else 1
    with torch.no_grad():
        runs, inp = [], x
        for layer in range(m.num_layers):
            steps = []
            for d in range(dirs):
                w_ih, w_hh, b = _params(m, layer, d == 1, x)
                seq = inp.flip(0) if d else inp
                k = layer * dirs + d
                steps.append(run_direction(seq, w_ih, w_hh, b, h0[k], c0[k]))
            runs.append(steps)
            inp = torch.cat([s.h.flip(0) if d else s.h for d, s in enumerate(steps)], dim=-1)
        r = r_out
        for layer in reversed(range(m.num_layers)):
            parts, total = r.chunk(dirs, dim=-1), 0
            for d, s in enumerate(runs[layer]):
                k = layer * dirs + d
                w_ih, w_hh, _ = _params(m, layer, d == 1, x)
                rd = parts[d].flip(0) if d else parts[d]
                state = [None if t is None else t[k] for t in (r_hn, r_cn)]
                rx = back_direction(s, w_ih, w_hh, rd, *state, eps)
                total = total + (rx.flip(0) if d else rx)
            r = total
    return r[:, 0] if unbatched else (r.transpose(0, 1) if m.batch_first else r)


@dataclass
class LSTM(OpRule):
    """``nn.LSTM`` (see the module docstring). The output ``(out, (h_n, c_n))`` is a
    tuple: relevance arrives as its items."""

    stabilizer: float = 1e-6
    record: bool = True

    def propagate(self, call, r, out=None):
        args, kw = call.op.evaluate_args(call.env), call.op.evaluate_kwargs(call.env)
        x = args[0]
        if not isinstance(x, torch.Tensor):
            raise ValueError("LRP of nn.LSTM needs a tensor input, not a packed sequence")
        hx = args[1] if len(args) > 1 else kw.get("hx")
        r_out, r_state = (r[0], r[1]) if isinstance(r, list) else (r, None)
        if r_out is None:
            r_out = torch.zeros_like(call.output[0])
        if isinstance(r_state, torch.Tensor):
            raise ValueError("relevance at the LSTM's (h_n, c_n) must arrive as its items")
        rx = lstm_relevance(call.op.module, x, hx, r_out, r_state, self.stabilizer)
        return [rx] + [None] * (len(call.op.args) - 1)
