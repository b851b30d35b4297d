"""Every method's loss terms against values computed by hand on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch

from kdkit.api import ModelOutput
from kdkit.errors import KdkitError
from kdkit.plugins.methods.contrastive import Contrastive, ContrastiveOptions
from kdkit.plugins.methods.dist import DIST, DISTOptions
from kdkit.plugins.methods.fitnets import FitNets, FitNetsOptions
from kdkit.plugins.methods.ft import FineTune, FTOptions
from kdkit.plugins.methods.kd import KD, KDOptions, KDStudyOptions
from kdkit.plugins.methods.pkd import PKD, PKDOptions
from kdkit.plugins.methods.rkd import RKD, RKDOptions

from .helpers import batch, context, info, output

LOG2 = math.log(2.0)


def _kl(p, q):
    return sum(a * math.log(a / b) for a, b in zip(p, q))


def _softmax(z, t=1.0):
    e = [math.exp(x / t) for x in z]
    return [x / sum(e) for x in e]


def test_ft_ce_ignores_unlabelled_rows_and_never_nans():
    m = FineTune(FTOptions(), context())
    assert m.requirements.teacher is None and not m.requires_teacher
    terms = m(output([[2.0, 0.0], [0.0, 1.0]]), None, batch([0, -100]))
    assert terms["ce"].item() == pytest.approx(math.log(1 + math.exp(-2)))
    none = m(output([[2.0, 0.0]]), None, batch([-100]))
    assert none["ce"].item() == 0.0


def test_kd_standard_form_by_hand():
    # T = 2, alpha = 0.5: 0.5 * 4 * KL(p_t || p_s) and 0.5 * CE(z_s, y)
    m = KD(KDOptions(temperature=2.0, alpha=0.5), context())
    zs, zt = [0.0, 0.0], [math.log(3.0), 0.0]
    terms = m(output([zs]), output([zt]), batch([0]))
    expected = 0.5 * 4 * _kl(_softmax(zt, 2.0), _softmax(zs, 2.0))
    assert terms["kd"].item() == pytest.approx(expected, rel=1e-6)
    assert terms["ce"].item() == pytest.approx(0.5 * LOG2, rel=1e-6)


def test_kd_study_preset_is_soft_ce_t10_without_labels_or_t2():
    opts = KDStudyOptions()
    assert (opts.soft, opts.temperature, opts.alpha, opts.t2_scaling) == ("ce", 10.0, 1.0, False)
    m = KD(opts, context())
    # a uniform student: CE(z_s/T, p_t) = log 2 whatever the teacher says
    terms = m(output([[0.0, 0.0]]), output([[5.0, -3.0]]), batch([1]))
    assert set(terms) == {"kd"} and terms["kd"].item() == pytest.approx(LOG2, rel=1e-6)
    # same as kd with the preset's values written out
    same = KD(KDOptions(soft="ce", temperature=10, alpha=1, t2_scaling=False), context())
    z = output([[0.3, -1.2], [2.0, 0.5]]), output([[1.0, 0.0], [-1.0, 2.0]]), batch([0, 1])
    assert same(*z)["kd"].item() == pytest.approx(m(*z)["kd"].item())


def _pearson(a, b):
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    num = sum((x - ma) * (y - mb) for x, y in zip(a, b))
    den = math.sqrt(sum((x - ma) ** 2 for x in a) * sum((y - mb) ** 2 for y in b))
    return num / den


def test_dist_by_hand():
    zs = [[1.0, 0.0, -1.0], [0.0, 2.0, 0.5]]
    zt = [[2.0, 1.0, 0.0], [0.0, 0.0, 3.0]]
    ps, pt = [_softmax(r) for r in zs], [_softmax(r) for r in zt]
    inter = 1 - sum(_pearson(a, b) for a, b in zip(ps, pt)) / 2
    cols = lambda p: [list(c) for c in zip(*p)]  # noqa: E731
    intra = 1 - sum(_pearson(a, b) for a, b in zip(cols(ps), cols(pt))) / 3
    m = DIST(DISTOptions(beta=2.0, gamma=0.5, ce_weight=1.0), context())
    terms = m(output(zs), output(zt), batch([0, 1]))
    assert terms["dist"].item() == pytest.approx(2.0 * inter + 0.5 * intra, rel=1e-6)
    expected_ce = (-math.log(ps[0][0]) - math.log(ps[1][1])) / 2
    assert terms["ce"].item() == pytest.approx(expected_ce, rel=1e-6)


def test_dist_warns_with_two_classes():
    class Binary:
        labels = ("no", "yes")

    with pytest.warns(UserWarning, match="no gradient"):
        DIST(DISTOptions(), context(task=Binary()))
    DIST(DISTOptions(beta=0.0), context(task=Binary()))  # no warning when the term is off


def test_pkd_normalised_mse_by_hand():
    # 2-layer models, last pair excluded -> one pair (1, 1); no projection with equal widths
    m = PKD(PKDOptions(project="none", alpha=0.0), context(info(2, 2), info(2, 2)))
    assert m.pairs == [(1, 1)]
    assert m.requirements.student.pooled_layers == (1,) == m.requirements.teacher.pooled_layers
    s = output([[0.0, 0.0], [0.0, 0.0]], pooled={1: torch.tensor([[3.0, 4.0], [1.0, 0.0]])})
    t = output([[0.0, 0.0], [0.0, 0.0]], pooled={1: torch.tensor([[0.0, 5.0], [-2.0, 0.0]])})
    terms = m(s, t, batch([0, 0]))
    assert terms["pkd"].item() == pytest.approx(10 * (0.4 + 4.0) / 2, rel=1e-6)
    assert terms["ce"].item() == pytest.approx(LOG2)


def test_pkd_owns_one_projection_per_pair_and_maps_depths():
    m = PKD(PKDOptions(), context(info(4, 8), info(22, 16)))
    assert m.pairs == [(1, 6), (2, 11), (3, 17)]
    # default: student (8 wide) -> teacher width (16); Linear weights are [out, in]
    assert [tuple(p.weight.shape) for p in m.projections] == [(16, 8)] * 3
    study = PKD(PKDOptions(project="teacher"), context(info(4, 8), info(22, 16)))
    assert [tuple(p.weight.shape) for p in study.projections] == [(8, 16)] * 3
    with pytest.raises(KdkitError, match="equal widths"):
        PKD(PKDOptions(project="none"), context(info(4, 8), info(12, 16)))
    with pytest.raises(KdkitError, match="distinct teacher layer"):
        PKD(PKDOptions(layers="skip"), context(info(6, 8), info(3, 16)))


def test_fitnets_hint_by_hand():
    m = FitNets(FitNetsOptions(hint_weight=2.0, layers=[[1, 2]]), context(info(2, 2), info(2, 2)))
    with torch.no_grad():  # identity regressor
        m.regressors[0].weight.copy_(torch.eye(2))
        m.regressors[0].bias.zero_()
    s = output([[0.0, 0.0]], pooled={1: torch.tensor([[1.0, 2.0]])})
    t = output([[0.0, 0.0]], pooled={2: torch.tensor([[0.0, 0.0]])})
    assert m(s, t, batch([1]))["hint"].item() == pytest.approx(2.0 * (1 + 4) / 2)


def test_rkd_terms_by_hand():
    line = torch.tensor([[0.0], [1.0], [3.0]], dtype=torch.float64)
    tri = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    m = RKD(RKDOptions(), context())
    z = [[0.0, 0.0]] * 3
    terms = m(output(z, embedding=line), output(z, embedding=tri), batch([0, 1, 0]))
    c = math.sqrt(0.5)
    huber = lambda x: 0.5 * x * x if abs(x) < 1 else abs(x) - 0.5  # noqa: E731
    assert terms["rkd_a"].item() == pytest.approx(50 * (0.5 + huber(1 + c) + huber(1 - c)) / 3)
    mu = (4 + 2 * math.sqrt(2)) / 3
    d = [0.5 - 2 / mu, 1.5 - 2 / mu, 1 - 2 * math.sqrt(2) / mu]
    assert terms["rkd_d"].item() == pytest.approx(25 * sum(huber(x) for x in d) / 3)
    assert terms["ce"].item() == pytest.approx(LOG2)


def _identity_contrastive(queue_size: int) -> Contrastive:
    m = Contrastive(
        ContrastiveOptions(nce_temperature=1.0, proj_dim=2, queue_size=queue_size),
        context(info(2, 2), info(2, 2)),
    )
    with torch.no_grad():
        for proj in (m.student_proj, m.teacher_proj):
            proj.weight.copy_(torch.eye(2))
            proj.bias.zero_()
    return m


def test_contrastive_in_batch_by_hand():
    e = torch.eye(2)
    m = _identity_contrastive(0)
    terms = m(
        ModelOutput(torch.zeros(2, 2), embedding=e),
        ModelOutput(torch.zeros(2, 2), embedding=e),
        batch([0, 1]),
    )
    # each row: logits [1, 0] against its own teacher -> log(1 + e^-1)
    assert terms["nce"].item() == pytest.approx(math.log(1 + math.exp(-1)), rel=1e-6)


def test_contrastive_queue_is_bounded_and_adds_negatives():
    m = _identity_contrastive(3).train()
    s = ModelOutput(torch.zeros(2, 2), embedding=torch.eye(2))
    first = m(s, ModelOutput(torch.zeros(2, 2), embedding=torch.eye(2)), batch([0, 1]))["nce"]
    assert int(m.queue_filled) == 2
    # second step: the two queued teacher rows are extra negatives: logits [1, 0, 1, 0]
    second = m(s, ModelOutput(torch.zeros(2, 2), embedding=torch.eye(2)), batch([0, 1]))["nce"]
    assert first.item() == pytest.approx(math.log(1 + math.exp(-1)), rel=1e-6)
    assert second.item() == pytest.approx(math.log(2 + 2 * math.exp(-1)), rel=1e-6)
    assert int(m.queue_filled) == 3 and m.queue.shape == (3, 2)  # never grows past 3
    third_t = torch.tensor([[5.0, 0.0], [0.0, 7.0]])
    m.eval()(s, ModelOutput(torch.zeros(2, 2), embedding=third_t), batch([0, 1]))
    assert int(m.queue_next) == 1  # evaluation does not enqueue
    assert "queue" in m.state_dict()  # saved with the run so a resume continues it
