"A head shared by all labels (04_csa, 05_model): scores labels the model never trained on, checked against the class-wise head and a model built afresh."
import numpy as np, pytest, torch
from torch.testing import assert_close
from hsvlt_lite.csa import ClasswiseLinear, SharedLinear
from hsvlt_lite.model import HSVLT, HSVLTConfig
from hsvlt_lite.recipes import set_prior


def test_shared_head_is_a_classwise_head_with_every_row_equal():
    shared, x = SharedLinear(12), torch.randn(3, 5, 12)
    classwise = ClasswiseLinear(5, 12)
    with torch.no_grad():
        classwise.weight.copy_(shared.weight.expand(5, -1)); classwise.bias.copy_(shared.bias.expand(5))
    assert_close(shared(x), classwise(x))
    assert_close(shared(x[:, [4, 0]]), classwise(x)[:, [4, 0]])


@pytest.mark.parametrize('switches', [dict(), dict(stage_heads='features'), dict(aggregation='topdown', qk_norm=True)])
def test_with_labels_scores_any_label_set(switches):
    torch.manual_seed(0)
    e, new = torch.randn(6, 16), torch.randn(3, 16)
    model = HSVLT(HSVLTConfig.preset('nano', text_dim=16, head='shared', **switches), e).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert_close(model.with_labels(e[[4, 1, 1]])(x), model(x)[:, [4, 1, 1]])         # a label's score does not depend on the others
        fresh = HSVLT(model.cfg, new).eval()                                              # built for the new labels, given the trained weights
        fresh.load_state_dict({k: v for k, v in model.state_dict().items() if k != 'label_embeddings'}, strict=False)
        assert_close(model.with_labels(new)(x), fresh(x))
    assert torch.equal(model.label_embeddings, e)                                         # the original is untouched


def test_with_labels_refuses_a_classwise_model_and_bad_vectors():
    e = torch.randn(4, 16)
    with pytest.raises(ValueError, match="with_labels needs a model with head='shared'"):
        HSVLT(HSVLTConfig.preset('nano', text_dim=16), e).with_labels(e)
    with pytest.raises(ValueError, match='width 8 != config text_dim 16'):
        HSVLT(HSVLTConfig.preset('nano', text_dim=16, head='shared'), e).with_labels(torch.randn(2, 8))
    with pytest.raises(ValueError, match="head='open'"):
        HSVLTConfig.preset('nano', head='open')


def test_shared_prior_is_the_frequency_of_all_labels():
    t = torch.tensor([[1, 0, -1], [0, 0, 1], [1, -1, 0], [0, 1, 0]]).float()
    bias = SharedLinear(4).bias
    set_prior(bias, t)
    known = t.numpy() >= 0
    p = (t.numpy()[known] == 1).mean()
    assert abs(bias.item() - np.log(p / (1 - p))) < 1e-6
