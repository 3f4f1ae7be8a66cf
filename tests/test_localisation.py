"The localisation report (08_localisation) against plain-Python rules, scipy's entropy and torch's cosine similarity."
import math, pytest, torch
import torch.nn.functional as F
import matplotlib.pyplot as plt
from scipy.stats import entropy
from hsvlt_lite.localisation import (patch_hits, pointing_game, attention_entropy, shared_peak, label_similarity,
                                     localisation_report, scene_objects, emoji_localisation, plot_peaks)
from hsvlt_lite.emoji import compose_scenes
from hsvlt_lite.model import HSVLT, HSVLTConfig, normalize


@pytest.mark.parametrize('grid', [(16, 16), (4, 4), (2, 2), (3, 5)])
def test_patch_hits_follow_the_rule_patch_by_patch(grid):
    g = torch.Generator().manual_seed(sum(grid))
    boxes = torch.cat([torch.randint(0, 50, (2, 5, 2), generator=g), torch.randint(1, 30, (2, 5, 1), generator=g)], -1).float()
    classes = (torch.rand(2, 5, 4, generator=g) < 0.3).float()
    hits = patch_hits(boxes, classes, grid, 64)
    ph, pw = 64 / grid[0], 64 / grid[1]
    for b in range(2):
        for c in range(4):
            for r in range(grid[0]):
                for q in range(grid[1]):
                    x, y = (q + 0.5) * pw, (r + 0.5) * ph
                    want = any(classes[b, o, c] > 0 and x0 - pw / 2 <= x <= x0 + a + pw / 2 and y0 - ph / 2 <= y <= y0 + a + ph / 2
                               for o, (x0, y0, a) in enumerate(boxes[b].tolist()))
                    assert hits[b, c, r * grid[1] + q].item() == want


def test_pointing_game_hand_case():
    maps = torch.tensor([[[.1, .6, .2, .1], [.4, .3, .2, .1], [.1, .1, .1, .7]]])
    hits = torch.tensor([[[0, 1, 0, 0], [0, 0, 1, 1], [1, 1, 1, 1]]]).bool()
    assert pointing_game(maps, hits, torch.tensor([[True, True, False]])) == (0.5, 0.375)
    assert pointing_game(maps, hits, torch.tensor([[False, False, True]])) == (1.0, 1.0)


def test_entropy_shared_peak_and_similarity_against_references():
    a = torch.softmax(2 * torch.randn(3, 2, 5, 9), -1)
    assert abs(attention_entropy(a) - entropy(a.reshape(-1, 9).numpy(), axis=1).mean() / math.log(9)) < 1e-6
    peaks = torch.tensor([[2, 2, 2], [1, 1, 3], [0, 3, 3]])   # shared, shared (label 2 absent), not shared
    maps = F.one_hot(peaks, 4).float()
    present = torch.tensor([[True, True, True], [True, True, False], [True, True, False]])
    assert abs(shared_peak(maps, present) - 2 / 3) < 1e-6
    x = torch.randn(2, 5, 7)
    pairs = [F.cosine_similarity(x[b, i], x[b, j], dim=0) for b in range(2) for i in range(5) for j in range(5) if i != j]
    assert abs(label_similarity(x) - torch.stack(pairs).mean().item()) < 1e-6


def test_report_matches_the_model_by_hand():
    torch.manual_seed(0)
    model = HSVLT(HSVLTConfig.preset('nano', num_heads=2, text_dim=16), torch.randn(20, 16))
    images, layout = compose_scenes(12, 'test', 64, torch.Generator().manual_seed(5))
    objects = scene_objects(layout)
    present = objects.amax(1) > 0
    rows = localisation_report(model, normalize(images), lambda grid: patch_hits(layout.box, objects, grid, 64), present)
    assert model.training and len(rows) == 4
    model.eval()
    feats = model.forward_features(normalize(images))
    for f, row in zip(feats, rows):
        hits = patch_hits(layout.box, objects, f.V.shape[-2:], 64)
        peak = f.A.mean(1).argmax(-1)
        pairs = [(b, c) for b in range(12) for c in range(20) if present[b, c]]
        assert abs(row['pointing'] - sum(hits[b, c, peak[b, c]].item() for b, c in pairs) / len(pairs)) < 1e-6
        assert abs(row['chance'] - sum(hits[b, c].float().mean().item() for b, c in pairs) / len(pairs)) < 1e-6
        assert abs(row['cos_L'] - label_similarity(f.L)) < 1e-6 and abs(row['entropy'] - attention_entropy(f.A)) < 1e-6


def test_emoji_localisation_is_the_report_on_seeded_scenes():
    torch.manual_seed(0)
    model = HSVLT(HSVLTConfig.preset('nano', text_dim=16, interaction='late', aggregation='last'), torch.randn(20, 16))
    rows = emoji_localisation(model, n=8, seed=2)
    assert rows[:3] == [None, None, None] and rows[3]['cos_L'] is not None     # `late`+`last`: label attention at stage 4 only
    images, layout = compose_scenes(8, 'test', 64, torch.Generator().manual_seed(2))
    objects = scene_objects(layout)
    assert rows == localisation_report(model, normalize(images), lambda grid: patch_hits(layout.box, objects, grid, 64), objects.amax(1) > 0)


def test_plot_peaks_marks_every_hit_and_miss_and_states_the_report():
    torch.manual_seed(0)
    model = HSVLT(HSVLTConfig.preset('nano', text_dim=16), torch.randn(20, 16)).eval()
    rows = [dict(pointing=0.1 * i, chance=0.05 * i) for i in range(1, 5)]
    fig = plot_peaks(model, n=3, seed=4, report=rows, title='a model')
    images, layout = compose_scenes(3, 'test', 64, torch.Generator().manual_seed(4))
    objects = scene_objects(layout)
    with torch.no_grad(): feats = model.forward_features(normalize(images))
    for i, f in enumerate(feats):
        hits = patch_hits(layout.box, objects, tuple(f.V.shape[-2:]), 64)
        peaks = f.A.mean(1).argmax(-1)
        assert fig.axes[i].get_title() == f'stage {i + 1}\npointing {0.1 * (i + 1):.2f} (chance {0.05 * (i + 1):.2f})'
        for b in range(3):
            labels = objects[b].amax(0).nonzero().flatten().tolist()[:3]
            want = [hits[b, c, peaks[b, c]].item() for c in labels]
            drawn = [p.get_linestyle() for p in fig.axes[4 * b + i].patches if p.get_linestyle() in ('-', '--')]
            assert drawn == ['-' if h else '--' for h in want]
    assert fig._suptitle.get_text() == 'a model'
    plt.close(fig)
