"""A bidirectional GRU layer for padded batches, fast on CPU: both directions in one recurrence.

Why not ``nn.GRU`` on packed sequences (what the ``gru`` student used to run): on a CPU, PyTorch
runs each direction's recurrence step by step, and every step is a dozen small operations that
autograd records and replays one by one; per-operation overhead, not arithmetic, sets the step
time, so a packed 0.06M BiGRU step cost ~2.2x a Transformer step of the same size. Here:

* the two directions run as ONE batched recurrence (``[D=2, B, H]`` states, ``bmm`` with both
  directions' weights), so a layer takes ``L`` sequential steps instead of ``2L``;
* the backward direction reads each row reversed *within its length* (a gather), so a right-padded
  row starts at its last real token, exactly like a packed one: a position before a row's end
  never sees padding, and a row's outputs do not depend on how much its batch is padded;
* input projections of all steps are one matrix product before the loop;
* :class:`GRURecurrence` is an autograd Function with a hand-written backward: the per-step
  derivative coefficients are computed for all steps at once after the forward loop, so the
  backward loop is four operations per step (and no autograd bookkeeping), and the weight
  gradients are two matrix products after it;
* both loops are TorchScript functions (no Python per step; plain Python where TorchScript is
  unavailable).

The weights are ``nn.GRU``'s own (``weight_ih_l0``, ``weight_ih_l0_reverse``, ...), so models
saved by the packed implementation load unchanged and predict the same (to float rounding).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TypeVar

import torch
from torch import nn

F = TypeVar("F", bound=Callable[..., object])


def _script(fn: F) -> F:
    """``torch.jit.script(fn)`` (deprecated in recent torch, silenced here); the plain Python
    function where scripting is unavailable (same results, more Python per step)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.script(fn)  # type: ignore[return-value]
    except Exception:  # a torch without TorchScript: run the Python loop
        return fn


@_script
def _forward_loop(
    gi: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor, keep: bool
) -> list[torch.Tensor]:
    """The recurrence. ``gi`` [D, B, L, 3H] input projections (b_ih included), ``w_hh``
    [D, H, 3H], ``b_hh`` [D, 1, 3H] -> [h [D, B, L, H]] and, when ``keep`` (backward needed),
    the gates the backward reads: rz [D, B, L, 2H], n and gh_n [D, B, L, H]. Gate order r, z, n
    as in ``nn.GRU``."""
    hidden = w_hh.shape[1]
    h = gi.new_zeros(gi.shape[0], gi.shape[1], hidden)
    hs: list[torch.Tensor] = []
    rzs: list[torch.Tensor] = []
    ns: list[torch.Tensor] = []
    ghns: list[torch.Tensor] = []
    # per-step views made once: a step is then six operations (what bounds batch-1 latency)
    gi_rz = gi[:, :, :, : 2 * hidden].unbind(2)  # L x [D, B, 2H]
    gi_n = gi[:, :, :, 2 * hidden :].unbind(2)  # L x [D, B, H]
    for t in range(len(gi_rz)):
        gh = torch.baddbmm(b_hh, h, w_hh)  # [D, B, 3H]
        ghn = gh[:, :, 2 * hidden :]
        rz = torch.add(gi_rz[t], gh[:, :, : 2 * hidden]).sigmoid_()
        n = torch.addcmul(gi_n[t], rz[:, :, :hidden], ghn).tanh_()
        h = torch.lerp(n, h, rz[:, :, hidden:])  # (1 - z) * n + z * h
        hs.append(h)
        if keep:
            rzs.append(rz)
            ns.append(n)
            ghns.append(ghn)
    if not keep:
        return [torch.stack(hs, 2)]
    return [torch.stack(hs, 2), torch.stack(rzs, 2), torch.stack(ns, 2), torch.stack(ghns, 2)]


@_script
def _backward_loop(
    dout: torch.Tensor, coef: torch.Tensor, z: torch.Tensor, w_hh: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Back through time. ``dout`` [D, B, L, H] gradient reaching each step's state from outside,
    ``coef`` [D, B, L, 3, H] d h_t / d(r, z, n parts of ``h_{t-1} @ w_hh``), ``z`` [D, B, L, H]
    -> (dh [D, B, L, H] total gradient of each state, dgh [D, B, L, 3H] of ``h_{t-1} @ w_hh``
    at each step, the same shifted one step earlier with zeros at the end: what multiplies
    ``h_t`` in the weight gradient)."""
    d, b, steps, hidden = dout.shape
    w_t = w_hh.transpose(1, 2)  # [D, 3H, H]
    dh = dout.new_zeros(d, b, hidden)
    dhs: list[torch.Tensor] = []
    dghs: list[torch.Tensor] = []
    for t in range(steps - 1, -1, -1):
        dh = dh + dout[:, :, t]
        dgh = (dh.unsqueeze(2) * coef[:, :, t]).reshape(d, b, 3 * hidden)
        dhs.append(dh)
        dghs.append(dgh)
        dh = torch.baddbmm(dh * z[:, :, t], dgh, w_t)  # to h_{t-1}: through z and through gh
    dhs.reverse()
    dghs.reverse()
    shifted = dghs[1:]
    shifted.append(torch.zeros_like(dghs[0]))
    return torch.stack(dhs, 2), torch.stack(dghs, 2), torch.stack(shifted, 2)


class GRURecurrence(torch.autograd.Function):
    """``D`` independent GRU recurrences run together, from zero initial states.

    ``gi`` [D, B, L, 3H] (input projections with ``b_ih``), ``w_hh`` [D, H, 3H] (``weight_hh``
    transposed), ``b_hh`` [D, 1, 3H] -> states [D, B, L, H]. Forward and backward are exact (the
    backward is checked with ``gradcheck`` in float64, tests/engine/test_gru_fast.py).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        gi: torch.Tensor,
        w_hh: torch.Tensor,
        b_hh: torch.Tensor,
    ) -> torch.Tensor:
        keep = any(ctx.needs_input_grad)  # type: ignore[attr-defined]
        saved = _forward_loop(gi, w_hh, b_hh, keep)
        if keep:
            ctx.save_for_backward(*saved, w_hh)
        return saved[0]

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, dout: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out, rz, n, ghn, w_hh = ctx.saved_tensors  # type: ignore[attr-defined]
        hidden = out.shape[-1]
        r, z = rz[..., :hidden], rz[..., hidden:]
        # h = (1 - z) n + z h_prev, n = tanh(gi_n + r gh_n), r/z = sigmoid(gi + gh): all steps'
        # local derivatives at once, so the sequential loop only multiplies and back-projects.
        # (h_prev - n) z = h - n, so h_prev is never materialised.
        one_m_z = 1 - z
        dn_pre = one_m_z * (1 - n * n)  # d h / d (n's pre-activation)
        coef = torch.stack(
            [dn_pre * ghn * r * (1 - r), (out - n) * one_m_z, dn_pre * r], dim=3
        )  # [D, B, L, 3, H]: d h / d gh_r, d gh_z, d gh_n
        dh, dgh, dgh_next = _backward_loop(dout.contiguous(), coef, z, w_hh)
        # input side: identical to the hidden side for r and z; n's input term has no r factor
        dgi = torch.cat([dgh[..., : 2 * hidden], dh * dn_pre], dim=-1)  # [D, B, L, 3H]
        d, b, steps, g = dgh.shape
        # dW_hh = sum_t h_{t-1}^T dgh_t = sum_t h_t^T dgh_{t+1}
        dw = torch.bmm(
            out.reshape(d, b * steps, hidden).transpose(1, 2), dgh_next.reshape(d, b * steps, g)
        )  # [D, H, 3H]
        db = dgh.sum(dim=(1, 2)).unsqueeze(1)  # [D, 1, 3H]
        return dgi, dw, db


def bigru_layer(
    gru: nn.GRU, x: torch.Tensor, rev: torch.Tensor, lengths: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One bidirectional layer with ``gru``'s weights over a right-padded batch.

    ``x`` [B, L, In], ``rev`` [B, L] the within-length reversal index (position t <-> len-1-t,
    padding positions map to themselves), ``lengths`` [B] (>= 1) -> (outputs [B, L, 2H], padding
    positions left as computed (callers zero them), final [B, 2H] = [forward state at the last
    real token || backward state at the first]), as ``nn.GRU`` on packed input gives.
    """
    hidden = gru.hidden_size
    b, steps, width = x.shape
    w_ih = torch.stack([gru.weight_ih_l0, gru.weight_ih_l0_reverse])  # [2, 3H, In]
    w_hh = torch.stack([gru.weight_hh_l0, gru.weight_hh_l0_reverse]).transpose(1, 2)  # [2, H, 3H]
    b_ih = torch.stack([gru.bias_ih_l0, gru.bias_ih_l0_reverse]).unsqueeze(1)  # [2, 1, 3H]
    b_hh = torch.stack([gru.bias_hh_l0, gru.bias_hh_l0_reverse]).unsqueeze(1)  # [2, 1, 3H]
    x_rev = x.gather(1, rev.unsqueeze(-1).expand(-1, -1, width))  # [B, L, In]
    both = torch.stack([x, x_rev]).view(2, b * steps, width)  # [2, B*L, In]
    gi = torch.baddbmm(b_ih, both, w_ih.transpose(1, 2)).view(2, b, steps, 3 * hidden)
    # The recurrence runs in fp32 whatever autocast chose for the projections (under fp16/bf16
    # autocast ``gi`` is half while the weights are fp32; 512 sequential steps in fp16 would also
    # round the state at every step). Float64 stays float64; outside autocast the casts are no-ops.
    dtype = torch.promote_types(torch.promote_types(gi.dtype, w_hh.dtype), torch.float32)
    with torch.autocast(device_type=x.device.type, enabled=False):
        states = GRURecurrence.apply(gi.to(dtype), w_hh.to(dtype), b_hh.to(dtype))  # [2, B, L, H]
    fwd = states[0]
    bwd = states[1].gather(1, rev.unsqueeze(-1).expand(-1, -1, hidden))  # back in text order
    last = (lengths - 1).view(-1, 1, 1).expand(-1, 1, hidden)  # [B, 1, H]
    final = torch.cat([fwd.gather(1, last).squeeze(1), bwd[:, 0]], dim=-1)  # [B, 2H]
    return torch.cat([fwd, bwd], dim=-1), final


def reversal_index(lengths: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(rev [B, L], valid [B, L]): position t <-> ``len - 1 - t`` inside each row (padding
    positions map to themselves), and which positions are real tokens."""
    pos = torch.arange(width, device=lengths.device).unsqueeze(0)  # [1, L]
    valid = pos < lengths.unsqueeze(1)  # [B, L]
    return torch.where(valid, lengths.unsqueeze(1) - 1 - pos, pos), valid
