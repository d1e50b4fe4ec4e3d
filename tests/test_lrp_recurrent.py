"""LRP through ``nn.LSTM`` against a hand-written oracle: one sequence at a time, one step at
a time, with the explicit contribution matrices of Arras et al. (2017) (gates held
constant, the cell sum and the cell input's linear map under the epsilon rule), the states
computed by ``nn.LSTMCell``."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hudd_core.lrp import LRP

D = torch.float64
EPS = 1e-9


def _stab(z: torch.Tensor) -> torch.Tensor:
    return z + EPS * torch.where(z >= 0, 1.0, -1.0).to(z.dtype)


def _cell(m: nn.LSTM, layer: int, reverse: bool) -> nn.LSTMCell:
    sfx = f"l{layer}" + ("_reverse" if reverse else "")
    w_ih = getattr(m, f"weight_ih_{sfx}")
    cell = nn.LSTMCell(w_ih.shape[1], m.hidden_size, bias=m.bias).to(D)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            if hasattr(m, f"{name}_{sfx}"):
                getattr(cell, name).copy_(getattr(m, f"{name}_{sfx}"))
    return cell


def _oracle_direction(cell: nn.LSTMCell, xs: torch.Tensor, r_h: torch.Tensor, order: list,
                      r_cn: torch.Tensor | None = None):  # fmt: skip
    """Outputs ``(T, H)`` and input relevance ``(T, C)`` of one direction over one
    sequence ``xs`` ``(T, C)``, visiting the steps in ``order`` (``r_cn``: relevance at the
    final cell state)."""
    hid = cell.hidden_size
    h, c = torch.zeros(hid, dtype=D), torch.zeros(hid, dtype=D)
    w_g, u_g = cell.weight_ih[2 * hid : 3 * hid], cell.weight_hh[2 * hid : 3 * hid]
    b = 0 if cell.bias_ih is None else cell.bias_ih + cell.bias_hh
    kept, outs = {}, torch.zeros(len(order), hid, dtype=D)
    for t in order:
        z = cell.weight_ih @ xs[t] + cell.weight_hh @ h + b
        i, f, zg = torch.sigmoid(z[:hid]), torch.sigmoid(z[hid : 2 * hid]), z[2 * hid : 3 * hid]
        h_new, c_new = cell(xs[t][None], (h[None], c[None]))
        kept[t] = (h, c, i, f, torch.tanh(zg), zg, c_new[0])
        h, c = h_new[0], c_new[0]
        outs[t] = h
    rx = torch.zeros_like(xs)
    rh_next = torch.zeros(hid, dtype=D)
    rc_next = torch.zeros(hid, dtype=D) if r_cn is None else r_cn
    for t in reversed(order):
        h_prev, c_prev, i, f, g, zg, c_t = kept[t]
        rc = r_h[t] + rh_next + rc_next
        parts = torch.stack([f * c_prev, i * g]) / _stab(c_t) * rc  # the cell's sum
        rc_next, rg = parts[0], parts[1]
        share = rg / _stab(zg)  # g's linear map, contribution by contribution
        rx[t] = (w_g * xs[t][None, :] * share[:, None]).sum(0)
        rh_next = (u_g * h_prev[None, :] * share[:, None]).sum(0)
    return outs, rx


def _oracle(m: nn.LSTM, xs: torch.Tensor, r: torch.Tensor):
    """Output and input relevance of ``m`` on one sequence ``(T, C)`` from ``r`` ``(T, D*H)``."""
    dirs, n = (2 if m.bidirectional else 1), len(xs)
    orders = [list(range(n)), list(reversed(range(n)))]
    inputs, runs = [xs], []
    for layer in range(m.num_layers):
        cells = [_cell(m, layer, d == 1) for d in range(dirs)]
        outs = [_oracle_direction(cells[d], inputs[-1], torch.zeros(n, m.hidden_size, dtype=D),
                                  orders[d])[0] for d in range(dirs)]  # fmt: skip
        inputs.append(torch.cat(outs, dim=1))
        runs.append(cells)
    for layer in reversed(range(m.num_layers)):
        parts = r.chunk(dirs, dim=1)
        r = sum(_oracle_direction(runs[layer][d], inputs[layer], parts[d], orders[d])[1]
                for d in range(dirs))  # fmt: skip
    return inputs[-1], r


class _Seq(nn.Module):
    def __init__(self, lstm: nn.LSTM):
        super().__init__()
        self.lstm = lstm

    def forward(self, x):
        y, _ = self.lstm(x)
        return (y if self.lstm.batch_first else y.transpose(0, 1)).flatten(1)


@pytest.mark.parametrize(
    "batch_first,bidirectional,layers,bias",
    [
        (True, True, 1, True),
        (False, True, 2, True),
        (True, False, 2, False),
        (True, True, 1, False),
    ],
)
def test_lstm_matches_the_oracle(batch_first, bidirectional, layers, bias):
    torch.manual_seed(0)
    lstm = nn.LSTM(3, 4, layers, bias=bias, batch_first=batch_first,
                   bidirectional=bidirectional).to(D)  # fmt: skip
    model = _Seq(lstm).eval()
    b, t, dirs = 3, 5, 2 if bidirectional else 1
    x = torch.randn(b, t, 3, dtype=D)
    xin = x if batch_first else x.transpose(0, 1)
    start = torch.randn(b, t * 4 * dirs, dtype=D)
    lrp = LRP(model)
    rel = lrp(xin, start=start)
    torch.testing.assert_close(lrp.forward(xin), model(xin))
    got = rel["input"] if batch_first else rel["input"].transpose(0, 1)
    for k in range(b):
        out, want = _oracle(lstm, x[k], start[k].reshape(t, -1))
        torch.testing.assert_close(out.flatten(), model(xin)[k].detach())
        torch.testing.assert_close(got[k], want, rtol=1e-9, atol=1e-12)
    if not bias:  # zero biases and initial states: conservative
        torch.testing.assert_close(got.sum((1, 2)), start.sum(1), rtol=1e-4, atol=0)
    recorded = rel["lstm"] if batch_first else rel["lstm"].transpose(0, 1)
    torch.testing.assert_close(recorded.flatten(1), start)


class _Final(nn.Module):
    def __init__(self, lstm: nn.LSTM):
        super().__init__()
        self.lstm = lstm

    def forward(self, x):
        _, (h, c) = self.lstm(x)
        return torch.cat([h[-1], c[-1]], dim=1)  # the final states as the code unpacks them


def test_lstm_relevance_through_its_final_states():
    # h_n of a one-directional LSTM is its output at the last step; c_n its last cell state
    torch.manual_seed(0)
    lstm = nn.LSTM(3, 4, batch_first=True).to(D)
    x, start = torch.randn(2, 5, 3, dtype=D), torch.randn(2, 8, dtype=D)
    got = LRP(_Final(lstm))(x, start=start)["input"]
    for k in range(2):
        r = torch.zeros(5, 4, dtype=D)
        r[-1] = start[k, :4]
        want = _oracle_direction(_cell(lstm, 0, False), x[k], r, list(range(5)), start[k, 4:])
        torch.testing.assert_close(got[k], want[1], rtol=1e-9, atol=1e-12)


@pytest.mark.filterwarnings("ignore:LSTM with projections")
def test_lstm_with_projections_is_refused():
    model = _Seq(nn.LSTM(3, 4, proj_size=2, batch_first=True))
    with pytest.raises(ValueError, match="proj_size"):
        LRP(model)(torch.randn(2, 5, 3), start=torch.ones(2, 10))
