"Metrics against scikit-learn directly and hand-computed cases (ties, an empty class, ignored entries)."
import warnings, pytest, numpy as np, torch
from sklearn.metrics import average_precision_score, precision_score, recall_score
from hsvlt_lite.metrics import average_precisions, mean_average_precision, multilabel_scores


@pytest.fixture
def rng(): return np.random.default_rng(1)


def test_ap_and_map_equal_sklearn_multilabel(rng):
    s, t = rng.random((150, 7)).round(1), (rng.random((150, 7)) < 0.25).astype(int)
    np.testing.assert_allclose(average_precisions(s, t), average_precision_score(t, s, average=None))
    assert np.isclose(mean_average_precision(torch.tensor(s, dtype=torch.float32), torch.tensor(t)), average_precision_score(t, s.astype(np.float32), average='macro'))


def test_ap_by_hand_with_ties_and_ignored_entries():
    s = np.array([[0.5, 0.9], [0.5, 0.8], [0.2, 0.7], [0.1, 0.6]])
    t = np.array([[1, 1], [0, -1], [1, 0], [-1, 1]])
    np.testing.assert_allclose(average_precisions(s, t), [0.5 * 0.5 + 0.5 * 2 / 3, 0.5 * 1 + 0.5 * 2 / 3])


def test_ignored_entries_equal_dropping_them(rng):
    s, t = rng.random((80, 4)), (rng.random((80, 4)) < 0.4).astype(float)
    t[rng.random((80, 4)) < 0.2] = -1
    for j, ap in enumerate(average_precisions(s, t)):
        keep = t[:, j] >= 0
        assert np.isclose(ap, average_precision_score(t[keep, j], s[keep, j]))


def test_class_without_positive_is_nan_and_left_out_with_a_warning():
    s = np.array([[0.9, 0.2, 0.4], [0.1, 0.8, 0.3], [0.6, 0.7, 0.9]])
    t = np.array([[1, 0, 0], [0, 1, -1], [0, 0, 0]])         # class 2: no positive (one negative is ignored)
    aps = average_precisions(s, t)
    assert np.isnan(aps[2]) and np.allclose(aps[:2], [1, 1])
    with pytest.warns(UserWarning, match=r"mAP leaves out 1 class\(es\) with no positive target: \['car'\]"):
        assert mean_average_precision(s, t, label_names=['cat', 'dog', 'car']) == 1.0
    with pytest.warns(UserWarning, match=r"\[2\]"): mean_average_precision(s, t)


def test_no_warning_when_every_class_has_a_positive(rng):
    s, t = rng.random((20, 3)), np.eye(3)[np.arange(20) % 3]
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        mean_average_precision(s, t); multilabel_scores(s, t)


def sklearn_scores(pred, t):
    keep, cls = t >= 0, np.flatnonzero((t == 1).any(0))
    cp = np.mean([precision_score(t[keep[:, j], j], pred[keep[:, j], j], zero_division=0) for j in cls])
    cr = np.mean([recall_score(t[keep[:, j], j], pred[keep[:, j], j]) for j in cls])
    op, orec = precision_score(t[keep], pred[keep]), recall_score(t[keep], pred[keep])
    return dict(CP=cp, CR=cr, CF1=2 * cp * cr / (cp + cr), OP=op, OR=orec, OF1=2 * op * orec / (op + orec))


@pytest.mark.parametrize('threshold,topk', [(0.5, 3), (0.3, 2)])
def test_precision_recall_f1_equal_sklearn(rng, threshold, topk):
    s = rng.random((250, 9)).round(1)
    t = (rng.random((250, 9)) < 0.2 + 0.6 * s).astype(int)
    t[rng.random((250, 9)) < 0.1] = -1
    top = np.array([[j in sorted(range(9), key=lambda c: (-row[c], c))[:topk] for j in range(9)] for row in s])
    ours = multilabel_scores(torch.tensor(s), torch.tensor(t), threshold=threshold, topk=topk)
    assert set(ours) == {f'{m}{x}' for m in ('CP', 'CR', 'CF1', 'OP', 'OR', 'OF1') for x in ('', f'_top{topk}')}
    for m, v in sklearn_scores(s >= threshold, t).items(): assert np.isclose(ours[m], v), m
    for m, v in sklearn_scores((s >= threshold) & top, t).items(): assert np.isclose(ours[f'{m}_top{topk}'], v), m


def test_precision_recall_by_hand():
    s = np.array([[0.9, 0.6, 0.1], [0.7, 0.4, 0.2], [0.3, 0.55, 0.8]])
    t = np.array([[1, 1, 0], [0, 1, 0], [0, -1, 0]])
    with pytest.warns(UserWarning, match=r"CP/CR leaves out 1 class\(es\) with no positive target: \[2\]"):
        got = multilabel_scores(s, t, topk=1)
    expect = dict(CP=(1 / 2 + 1) / 2, CR=(1 + 1 / 2) / 2, OP=2 / 4, OR=2 / 3, CP_top1=1 / 4, CR_top1=1 / 2, OP_top1=1 / 3, OR_top1=1 / 3)
    for m, v in expect.items(): assert np.isclose(got[m], v), m
    assert np.isclose(got['OF1'], 2 * (1 / 2) * (2 / 3) / (1 / 2 + 2 / 3)) and np.isclose(got['CF1_top1'], 2 * 0.25 * 0.5 / 0.75)


def test_a_class_that_predicts_nothing_has_precision_zero():
    s, t = np.array([[0.9, 0.1], [0.2, 0.3]]), np.array([[1, 0], [0, 1]])
    got = multilabel_scores(s, t, topk=2)
    assert np.isclose(got['CP'], (1 + 0) / 2) and np.isclose(got['CR'], (1 + 0) / 2) and np.isclose(got['OP'], 1.)


@pytest.mark.parametrize('s,t,match', [(np.zeros((2, 3)), np.zeros((3, 2)), r'\(2, 3\) and targets \(3, 2\)'),
                                       (np.zeros(3), np.zeros(3), 'one \\(n, k\\) shape'),
                                       (np.zeros((2, 2)), np.array([[0, 2], [1, 0]]), 'targets must be 1')])
def test_bad_inputs_raise(s, t, match):
    for f in (average_precisions, mean_average_precision, multilabel_scores):
        with pytest.raises(ValueError, match=match): f(s, t)
