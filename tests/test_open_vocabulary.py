"A head shared by all labels (04_csa, 05_model): scores labels the model never trained on, checked against the class-wise head, a hand-computed cosine and a model built afresh."
import math, numpy as np, pytest, torch
import torch.nn.functional as F
from torch.testing import assert_close
from hsvlt_lite.csa import ClasswiseLinear, SharedLinear, PooledMatch
from hsvlt_lite.model import HSVLT, HSVLTConfig
from hsvlt_lite.recipes import set_prior
from conftest import built_for


def test_shared_head_is_a_classwise_head_with_every_row_equal():
    shared, x = SharedLinear(12), torch.randn(3, 5, 12)
    classwise = ClasswiseLinear(5, 12)
    with torch.no_grad():
        classwise.weight.copy_(shared.weight.expand(5, -1)); classwise.bias.copy_(shared.bias.expand(5))
    assert_close(shared(x), classwise(x))
    assert_close(shared(x[:, [4, 0]]), classwise(x)[:, [4, 0]])


def test_text_made_head_is_a_classwise_head_with_rows_from_the_label_vectors():
    "With `text_dim`, label k's row is w + U e_k: checked against a class-wise head given those rows, computed by hand."
    torch.manual_seed(0)
    shared, x, e = SharedLinear(12, text_dim=7), torch.randn(3, 5, 12), torch.randn(5, 7)
    assert_close(shared(x, e), x @ shared.weight[0] + shared.bias)                       # U starts at zero
    with torch.no_grad(): shared.text.weight.normal_()
    rows = shared.weight[0] + torch.stack([shared.text.weight @ ek for ek in e])
    classwise = ClasswiseLinear(5, 12)
    with torch.no_grad(): classwise.weight.copy_(rows); classwise.bias.copy_(shared.bias.expand(5))
    assert_close(shared(x, e), classwise(x))
    assert_close(shared(x[:, [4, 0]], e[[4, 0]]), classwise(x)[:, [4, 0]])
    with pytest.raises(ValueError, match='pass the label vectors e'): shared(x)


def test_pooled_match_is_a_scaled_cosine_of_the_pooled_patches_and_the_text():
    "exp(s) cos(P LN(mean of the patches), Q e_k), each cosine computed by hand from the two vectors' dot product and norms."
    torch.manual_seed(0)
    match, v, e = PooledMatch(12, 7, width=5), torch.randn(3, 12, 2, 3), torch.randn(4, 7)
    with torch.no_grad(): match.log_scale.fill_(0.5); match.norm.weight.normal_(); match.norm.bias.normal_()
    pooled = F.layer_norm(v.flatten(2).mean(-1), (12,), match.norm.weight, match.norm.bias)
    img, txt = pooled @ match.image.weight.T + match.image.bias, e @ match.text.weight.T + match.text.bias
    by_hand = torch.tensor([[math.exp(0.5) * float(img[b] @ txt[k]) / float(img[b].norm() * txt[k].norm()) for k in range(4)] for b in range(3)])
    assert_close(match(v, e), by_hand)
    assert_close(match(v, e[[3, 1]]), by_hand[:, [3, 1]])


def test_shared_model_adds_the_pooled_match_of_the_last_stage_to_csa():
    torch.manual_seed(0)
    e, x = torch.randn(5, 16), torch.randn(2, 3, 64, 64)
    model = HSVLT(HSVLTConfig.preset('nano', text_dim=16, head='shared'), e).eval()
    with torch.no_grad():
        model.match.log_scale.fill_(1.0)
        feats = model.forward_features(x, need_weights=False)
        img = model.match.image(F.layer_norm(feats[-1].V.mean((2, 3)), (128,), model.match.norm.weight, model.match.norm.bias))
        cos = F.cosine_similarity(img[:, None], model.match.text(e)[None], dim=-1)
        assert_close(model(x), model.aggregate([f.S for f in feats], e) + math.e * cos)
    assert HSVLT(HSVLTConfig.preset('nano', text_dim=16), e).match is None        # the class-wise model (the reference's) has none


SWITCHES = [dict(), dict(stage_heads='features'), dict(aggregation='topdown', qk_norm=True), dict(aggregation='last'), dict(interaction='late'),
            dict(num_heads=2, fold='plain'), dict(qk_norm=True, temperature_floor=5.0, match_evidence=True, stage_heads='evidence'), dict(label_norm=False),
            dict(visual_feedback=True), dict(competitive=True)]


@pytest.mark.parametrize('switches', SWITCHES, ids=lambda d: ','.join(f'{k}={v}' for k, v in d.items()) or 'default')
def test_with_labels_scores_any_label_set(switches):
    "With every switch: the model for new labels is the one built afresh for them; without the switches that couple labels (visual feedback, competition), a label's score does not depend on the others asked for."
    torch.manual_seed(0)
    e, new = torch.randn(6, 16), torch.randn(3, 16)
    model = HSVLT(HSVLTConfig.preset('nano', text_dim=16, head='shared', **switches), e).eval()
    for head in (m for m in model.modules() if isinstance(m, SharedLinear)): torch.nn.init.normal_(head.text.weight, std=0.1)   # as after training
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        if not (switches.get('visual_feedback') or switches.get('competitive')):
            assert_close(model.with_labels(e[[4, 1, 1]])(x), model(x)[:, [4, 1, 1]])     # a label's score does not depend on the others
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


def test_hide_labels_ignores_exactly_the_unseen_columns():
    from torch.utils.data import DataLoader, TensorDataset
    from hsvlt_lite.recipes import Recipe, train_set, hide_labels
    r = Recipe(data='emoji', batch_size=4, steps_per_epoch=3, epochs=1).resolved()
    plain, hidden = list(train_set(r)), list(hide_labels(train_set(r), [2, 5]))
    for (x0, t0), (x1, t1) in zip(plain, hidden):
        assert torch.equal(x0, x1) and (t1[:, [2, 5]] == -1).all()
        keep = [c for c in range(t0.shape[1]) if c not in (2, 5)]
        assert torch.equal(t1[:, keep], t0[:, keep])
    items = hide_labels(TensorDataset(torch.randn(5, 3), torch.ones(5, 4)), [0])
    assert len(items) == 5 and items[3][1].tolist() == [-1, 1, 1, 1]


def test_unseen_labels_are_never_trained_and_scored_apart():
    from sklearn.metrics import average_precision_score
    from hsvlt_lite.recipes import Recipe, run_recipe, build_model, label_vectors, test_set
    from hsvlt_lite.train import evaluate
    with pytest.raises(ValueError, match="needs head='shared'"): Recipe(data='emoji', unseen=('cat',))
    with pytest.raises(ValueError, match="unseen label 'zebra' is not one of the 20 labels of --data emoji"):
        run_recipe(Recipe(data='emoji', head='shared', unseen=('cat', 'zebra'), epochs=1, steps_per_epoch=1, test_size=8), progress=False)
    r = Recipe(data='emoji', head='shared', unseen=('sheep', 'cat'), epochs=1, steps_per_epoch=2, batch_size=8, test_size=96)
    built = []
    m = run_recipe(r, build=lambda names: built.append(build_model(r.resolved(), label_vectors(r.embeddings, names))) or built[0], progress=False)
    zs, names = m['zero_shot'], m['label_names']
    assert zs['unseen'] == ['sheep', 'cat'] and m['thresholds']['sheep'] == m['thresholds']['cat'] == 0.5   # no threshold learned from their targets
    scores, targets = (t.numpy() for t in evaluate(built[0], test_set(r.resolved())))
    ap = {n: average_precision_score(targets[:, c], scores[:, c]) for c, n in enumerate(names) if targets[:, c].any()}
    assert abs(zs['unseen_mAP'] - np.mean([ap[n] for n in ('sheep', 'cat') if n in ap])) < 1e-6
    assert abs(zs['seen_mAP'] - np.mean([a for n, a in ap.items() if n not in ('sheep', 'cat')])) < 1e-6
    assert zs['all_mAP'] == m['mAP']


def test_an_unseen_labels_targets_never_reach_the_weights(tmp_path):
    "Two list data sets that differ only in the 'cat' labels train to the same weights when 'cat' is unseen (and to different ones when it is not)."
    from hsvlt_lite.emoji import EmojiScenes
    from hsvlt_lite.recipes import Recipe, run_recipe, build_model, label_vectors
    scenes = EmojiScenes('test', n=24, seed=3)
    lst = scenes.save_list(tmp_path, 'train')
    lines = lst.read_text().splitlines()
    flipped = [l.split('\t')[0] + '\t' + ','.join(sorted(set(l.split('\t')[1].split(',')) ^ {'cat'} - {''})) for l in lines]
    (tmp_path / 'flipped.txt').write_text('\n'.join(flipped) + '\n')
    assert (tmp_path / 'flipped.txt').read_text() != lst.read_text()

    def weights(train_list, unseen):
        r = Recipe(data='list', root=tmp_path, train_list=train_list, test_list=lst, labels=tmp_path / 'labels.txt', img_size=64,
                   epochs=1, batch_size=8, head='shared', unseen=unseen, embeddings='onehot')
        built = []
        run_recipe(r, build=lambda names: built.append(build_model(r.resolved(), label_vectors('onehot', names))) or built[0], progress=False)
        return built[0].state_dict()

    same, other = weights(lst, ('cat',)), weights(tmp_path / 'flipped.txt', ('cat',))
    assert all(torch.equal(same[k], other[k]) for k in same)
    seen, flipped_seen = weights(lst, ()), weights(tmp_path / 'flipped.txt', ())
    assert not all(torch.equal(seen[k], flipped_seen[k]) for k in seen)


def test_hsvlt_train_unseen_needs_the_shared_head_in_one_line(capsys):
    from hsvlt_lite.cli import main
    assert main(['train', '--data', 'emoji', '--unseen', 'cat']) == 2
    assert capsys.readouterr().err.strip() == "hsvlt: error: unseen=('cat',) needs head='shared': a class-wise head cannot score a label it never trained on"


@pytest.fixture(scope='module')
def open_run(tmp_path_factory):
    "A short digits run with the shared head, 'seven' never given in training."
    from hsvlt_lite.cli import main
    out = tmp_path_factory.mktemp('open') / 'run'
    assert main(['train', '--epochs', '1', '--steps-per-epoch', '6', '--test-size', '64', '--head', 'shared', '--unseen', 'seven', '--out', str(out)]) == 0
    return out


def test_hsvlt_predict_labels_scores_new_names(open_run, tmp_path, capsys):
    import csv
    from PIL import Image
    from hsvlt_lite.cli import main
    from hsvlt_lite.checkpoints import load_model
    from hsvlt_lite.data import eval_transform
    from hsvlt_lite.scenes import MultiScaleDigits
    images = MultiScaleDigits('test', n=3, size=64, seed=3).images
    for i, img in enumerate(images): Image.fromarray(img.permute(1, 2, 0).numpy()).save(tmp_path / f'{i}.png')
    (tmp_path / 'names.txt').write_text('seven\ncat\n')
    assert main(['predict', '--ckpt', str(open_run), str(tmp_path / '*.png'), '--labels', str(tmp_path / 'names.txt'), '--out', str(tmp_path / 'p.csv')]) == 0
    rows = list(csv.DictReader(open(tmp_path / 'p.csv')))
    assert list(rows[0]) == ['path', 'predicted', 'seven', 'cat']
    model, names = load_model(open_run)
    x = torch.stack([eval_transform(64)(img) for img in images])
    with torch.no_grad(): seven, cat = torch.sigmoid(model(x))[:, names.index('seven')], torch.sigmoid(built_for(['cat'], model)(x))[:, 0]
    assert_close(torch.tensor([[float(r['seven']), float(r['cat'])] for r in rows]), torch.stack([seven, cat], 1), atol=1e-5, rtol=1e-4)
    assert "thresholds: 0.5 for every label (the model trained on none of them)" in capsys.readouterr().out


def test_hsvlt_export_labels_fixes_the_named_label_set(open_run, tmp_path, capsys):
    from hsvlt_lite.cli import main
    from hsvlt_lite.checkpoints import load_model
    from hsvlt_lite.export import load_exported
    assert main(['export', '--ckpt', str(open_run), '--format', 'pt2', str(tmp_path / 'm.pt2'), '--labels', 'three, cat']) == 0
    assert capsys.readouterr().out.splitlines()[-1] == 'one logit per label, in this order: three, cat'
    model, names = load_model(open_run)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad(): got, own, cat = load_exported(tmp_path / 'm.pt2')(x), model(x), built_for(['cat'], model)(x)
    assert_close(got, torch.stack([own[:, names.index('three')], cat[:, 0]], 1), atol=1e-5, rtol=0)


def test_hsvlt_predict_labels_on_a_classwise_model_is_one_line(tmp_path, capsys):
    from hsvlt_lite.cli import main
    from hsvlt_lite.scenes import MultiScaleDigits
    from PIL import Image
    Image.fromarray(MultiScaleDigits('test', n=1, size=64, seed=3).images[0].permute(1, 2, 0).numpy()).save(tmp_path / 'x.png')
    assert main(['predict', '--ckpt', 'digits-nano', str(tmp_path / 'x.png'), '--labels', 'cat,dog']) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hsvlt: error: checkpoint 'digits-nano' has a class-wise head, a weight vector for each of its 10 labels, so it scores those only (") and '\n' not in err


def test_hsvlt_eval_reports_the_zero_shot_map_of_a_run_with_unseen_labels(open_run, capsys):
    from sklearn.metrics import average_precision_score
    from hsvlt_lite.cli import main
    from hsvlt_lite.checkpoints import load_model
    from hsvlt_lite.scenes import MultiScaleDigits
    from hsvlt_lite.train import evaluate
    assert main(['eval', '--ckpt', str(open_run)]) == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith('zero-shot:'))
    model, names = load_model(open_run)
    scores, targets = evaluate(model, MultiScaleDigits('test', n=64, size=64, seed=0))
    ap = average_precision_score(targets.numpy(), scores.numpy(), average=None)
    seven = names.index('seven')
    others = [c for c in range(len(names)) if c != seven]
    assert line == f"zero-shot: mAP {ap[seven]:.4f} on the labels never trained on (seven), {ap[others].mean():.4f} on the others"
