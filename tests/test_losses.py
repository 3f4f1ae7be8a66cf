"Losses against torch's binary_cross_entropy_with_logits and hand-computed ASL values."
import math, pytest, torch, torch.nn.functional as F
from torch.testing import assert_close
from hsvlt_lite.losses import MaskedBCE, AsymmetricLoss


def random_case(scale=5., shape=(16, 9)):
    return torch.randn(shape) * scale, torch.randint(-1, 2, shape).float()


@pytest.mark.parametrize('reduction', ['mean', 'sum'])
def test_masked_bce_is_torch_bce_on_the_kept_entries(reduction):
    x, t = random_case()
    keep = t != -1
    assert_close(MaskedBCE(reduction)(x, t), F.binary_cross_entropy_with_logits(x[keep], t[keep], reduction=reduction))


@pytest.mark.parametrize('reduction', ['mean', 'sum'])
def test_asl_without_focusing_or_margin_is_bce(reduction):
    x, t = random_case(scale=40.)
    keep = t != -1
    assert_close(AsymmetricLoss(0, 0, 0, reduction)(x, t), F.binary_cross_entropy_with_logits(x[keep], t[keep], reduction=reduction))


def test_asl_by_hand():
    # positive x=ln 2 (p=2/3), gamma_pos=2: -(1/3)^2 ln(2/3); negative x=ln 4 (p=0.8), clip 0.1, gamma_neg=3: -(0.7)^3 ln(0.3)
    # negative x=ln(1/19) (p=0.05 <= clip): 0; negative x=0 (p=0.5): -(0.4)^3 ln(0.6); one ignored entry
    x = torch.tensor([[math.log(2), math.log(4)], [math.log(1 / 19), 0.], [3., -2.]])
    t = torch.tensor([[1., 0.], [0., 0.], [-1., 1.]])
    p_last = 1 / (1 + math.e ** 2)
    terms = [-(1 / 3) ** 2 * math.log(2 / 3), -0.7 ** 3 * math.log(0.3), 0., -0.4 ** 3 * math.log(0.6), -(1 - p_last) ** 2 * math.log(p_last)]
    loss = AsymmetricLoss(gamma_pos=2, gamma_neg=3, clip=0.1, reduction='sum')
    assert_close(loss(x, t), torch.tensor(sum(terms)))
    assert_close(AsymmetricLoss(2, 3, 0.1)(x, t), torch.tensor(sum(terms) / 5))
    assert loss(x[1:2, :1], t[1:2, :1]) == 0


def test_asl_down_weights_easy_negatives_more_than_bce():
    x, t = torch.tensor([[-1., -1.]]), torch.tensor([[0., 1.]])
    asl, bce = AsymmetricLoss(reduction='sum'), MaskedBCE('sum')
    neg_ratio = asl(x[:, :1], t[:, :1]) / bce(x[:, :1], t[:, :1])
    pos_ratio = asl(x[:, 1:], t[:, 1:]) / bce(x[:, 1:], t[:, 1:])
    p = 1 / (1 + math.e)
    assert_close(neg_ratio, torch.tensor((p - 0.05) ** 4 * math.log(1 - p + 0.05) / math.log(1 - p)))
    assert_close(pos_ratio, torch.tensor(1.))


@pytest.mark.parametrize('loss', [MaskedBCE(), AsymmetricLoss(), AsymmetricLoss(1, 2, 0)], ids=['bce', 'asl', 'asl-noclip'])
def test_ignored_entries_get_no_gradient_and_extremes_stay_finite(loss):
    x, t = random_case(scale=80.)
    x.requires_grad_()
    value = loss(x, t); value.backward()
    assert torch.isfinite(value) and torch.isfinite(x.grad).all()
    assert (x.grad[t == -1] == 0).all() and (x.grad[t != -1] != 0).any()
    changed = torch.where(t == -1, torch.randn_like(x) * 100, x.detach())
    assert_close(loss(changed, t), value.detach())


def test_all_ignored_gives_zero():
    assert MaskedBCE()(torch.randn(2, 3), -torch.ones(2, 3)) == 0


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match=r'logits \(2, 3\) and targets \(3, 2\) differ'): MaskedBCE()(torch.zeros(2, 3), torch.zeros(3, 2))
    with pytest.raises(ValueError, match='targets must be 1'): AsymmetricLoss()(torch.zeros(1, 2), torch.tensor([[0.5, 1.]]))
    with pytest.raises(ValueError, match="reduction='none'"): MaskedBCE('none')
    with pytest.raises(ValueError, match='clip=1.5'): AsymmetricLoss(clip=1.5)
