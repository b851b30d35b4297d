"""The CPU BiGRU recurrence (plugins/students/bigru_recurrence.py) against ``nn.GRU`` itself."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from kdkit.api import Needs
from kdkit.plugins.students import gru
from kdkit.plugins.students.bigru_recurrence import GRURecurrence, bigru_layer, reversal_index


def test_recurrence_backward_is_exact_in_float64():
    """The hand-written backward equals finite differences (gradcheck)."""
    torch.manual_seed(0)
    d, b, steps, h = 2, 3, 5, 4
    gi = torch.randn(d, b, steps, 3 * h, dtype=torch.double, requires_grad=True)
    w = torch.randn(d, h, 3 * h, dtype=torch.double, requires_grad=True)
    bias = torch.randn(d, 1, 3 * h, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(GRURecurrence.apply, (gi, w, bias))


def _packed(layer: nn.GRU, x: torch.Tensor, lengths: torch.Tensor):
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    seq, h_n = layer(packed)
    out, _ = pad_packed_sequence(seq, batch_first=True, total_length=x.shape[1])
    return out, torch.cat([h_n[0], h_n[1]], dim=-1)


def test_layer_matches_packed_nn_gru_values_and_gradients():
    """Outputs at real positions, final states and every gradient equal packed ``nn.GRU``'s."""
    torch.manual_seed(1)
    layer = nn.GRU(6, 5, batch_first=True, bidirectional=True).double()
    lengths = torch.tensor([7, 3, 1, 5])
    x = torch.randn(4, 7, 6, dtype=torch.double, requires_grad=True)
    rev, valid = reversal_index(lengths, 7)
    mask = valid.unsqueeze(-1).double()
    weights = torch.randn(4, 7, 10, dtype=torch.double)  # a loss reading every real position

    ref_out, ref_final = _packed(layer, x, lengths)
    ((ref_out * mask * weights).sum() + ref_final.pow(2).sum()).backward()
    ref_grads = [p.grad.clone() for p in layer.parameters()] + [x.grad.clone()]
    layer.zero_grad()
    x.grad = None

    out, final = bigru_layer(layer, x, rev, lengths)
    torch.testing.assert_close(out * mask, ref_out, rtol=0, atol=1e-12)
    torch.testing.assert_close(final, ref_final, rtol=0, atol=1e-12)
    ((out * mask * weights).sum() + final.pow(2).sum()).backward()
    grads = [p.grad for p in layer.parameters()] + [x.grad]
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-10)


def test_student_cpu_path_equals_packed_path(tiny_context):
    """The whole student, every output it exposes, on the fast path and on packed ``nn.GRU``
    (what it ran before, and still runs on GPU): saved models predict the same."""
    torch.manual_seed(0)
    student = gru.build_gru_student(gru.GRUOptions(size="0.6M", hidden_size=16), tiny_context)
    student.eval()
    enc = student.encode(["x = 1", "def f(a, b):\n    return [a + b for _ in b]\n" * 3], 64)
    needs = Needs(True, (0, 1, 2), (0, 1, 2), True)
    fast = student(enc, needs)
    net = student.network
    with torch.no_grad():
        x = net.embed(enc.input_ids)
        lengths = enc.attention_mask.sum(1)
        for layer in net.layers:
            x, final = _packed(layer, x, lengths)
        want = net.out(torch.tanh(net.dense(final)))
    torch.testing.assert_close(fast.logits, want, rtol=0, atol=1e-6)
    torch.testing.assert_close(fast.pooled[2], final, rtol=0, atol=1e-6)
    torch.testing.assert_close(fast.hidden_states[2], x, rtol=0, atol=1e-6)


def test_layer_runs_under_fp16_and_bf16_autocast_with_an_fp32_recurrence():
    """Under autocast the input projections come out in half precision while the weights stay
    fp32; the recurrence runs in fp32 and agrees with the fp32 layer to the projections' rounding."""
    torch.manual_seed(2)
    layer = nn.GRU(8, 6, batch_first=True, bidirectional=True)
    lengths = torch.tensor([5, 2, 4])
    x = torch.randn(3, 5, 8, requires_grad=True)
    rev, valid = reversal_index(lengths, 5)
    ref, ref_final = bigru_layer(layer, x, rev, lengths)
    for dtype, tol in ((torch.float16, 2e-3), (torch.bfloat16, 2e-2)):
        with torch.autocast("cpu", dtype=dtype):
            out, final = bigru_layer(layer, x, rev, lengths)
        assert out.dtype == torch.float32 and final.dtype == torch.float32
        mask = valid.unsqueeze(-1)
        assert float(((out - ref) * mask).detach().abs().max()) < tol
        assert float((final - ref_final).detach().abs().max()) < tol
        out.sum().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all()
        x.grad = None
