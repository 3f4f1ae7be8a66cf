"The scene engine and the multi-scale digits against scikit-learn's digits, colorsys and torch's interpolate."
import colorsys, dataclasses, math, pytest, numpy as np, torch, torch.nn.functional as F
from sklearn.datasets import load_digits
from torch.testing import assert_close
from torch.utils.data import DataLoader
from hsvlt_lite.model import IMAGENET_MEAN, IMAGENET_STD, normalize
from hsvlt_lite.scenes import (MultiScaleDigits, DIGIT_NAMES, digit_pool, hsv_to_rgb, place_boxes, render_sprites, compose_canvases,
                               label_sizes, Layout, seeded, STREAMS)

MEAN, STD = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]


# --- the scene engine and the bundled multi-scale digits --------------------------------------------------------------

def test_glyph_pools_are_the_real_digits_split_by_sample():
    digits = load_digits()
    train, test = digit_pool('train'), digit_pool('test')
    assert (len(train.labels), len(test.labels)) == (1437, 360)
    assert set(train.index).isdisjoint(test.index) and set(train.index) | set(test.index) == set(range(1797))
    for pool in (train, test):
        assert_close(pool.images, torch.tensor(digits.images[pool.index] / 16, dtype=torch.float32))
        assert (pool.labels.numpy() == digits.target[pool.index]).all()
    assert (np.bincount(test.labels.numpy()) >= 35).all()          # ~36 of each digit: stratified
    with pytest.raises(ValueError, match="split='val'"): digit_pool('val')


def test_hsv_to_rgb_matches_colorsys():
    h, s, v = torch.rand(3, 500, dtype=torch.float64)
    ref = [colorsys.hsv_to_rgb(*x) for x in zip(h.tolist(), s.tolist(), v.tolist())]
    assert_close(hsv_to_rgb(h, s, v), torch.tensor(ref, dtype=torch.float64))


def test_boxes_fit_the_canvas_never_overlap_and_respect_count_and_scale():
    gen = torch.Generator().manual_seed(3)
    box, active = place_boxes(torch.randint(2, 4, (500,), generator=gen), 3, 96, (12, 48), gen)
    for bx, act in zip(box.tolist(), active.tolist()):
        placed = [q for q, a in zip(bx, act) if a]
        assert 1 <= len(placed) <= 3 and act[0]
        for i, (x, y, s) in enumerate(placed):
            assert x >= 0 and y >= 0 and x + s <= 96 and y + s <= 96 and 12 <= s <= 48
            assert all(x + s <= x2 or x2 + s2 <= x or y + s <= y2 or y2 + s2 <= y for x2, y2, s2 in placed[:i])
    assert active.sum(1).float().mean() > 2.3                        # asked 2-3, rarely one dropped


def test_overlapping_boxes_leave_each_square_at_least_the_uncovered_share():
    gen = torch.Generator().manual_seed(4)
    n = torch.randint(3, 8, (400,), generator=gen)
    box, active = place_boxes(n, 7, 64, (6, 58), gen, cover=0.5)
    overlaps = 0
    for bx, act, k in zip(box.tolist(), active.tolist(), n.tolist()):
        placed = [q for q, a in zip(bx, act) if a]
        assert act[0] and not any(act[k:]) and all(s1 >= s2 for (_, _, s1), (_, _, s2) in zip(bx, bx[1:]))   # largest first
        for i, (x, y, s) in enumerate(placed):
            assert 0 <= x and 0 <= y and x + s <= 64 and y + s <= 64
            later = [max(0, min(x + s, x2 + s2) - max(x, x2)) * max(0, min(y + s, y2 + s2) - max(y, y2)) for x2, y2, s2 in placed[i + 1:]]
            assert sum(later) <= 0.5 * s * s                           # covered by the later squares: at most half
            overlaps += sum(a > 0 for a in later)
    assert overlaps > 200 and active.sum() > 0.8 * n.sum()             # overlap happens; few objects dropped (14% at 3-7 per canvas)


def test_render_equals_interpolate_of_the_zero_bordered_glyph():
    glyph = digit_pool('test').images[5:6]
    ink = render_sprites(glyph[:, None], torch.tensor([[20. + 12, 4. + 8]]), torch.tensor([[12., 8.]]), torch.zeros(1), torch.zeros(1), 64)[0, 0]
    ref = torch.zeros(64, 64)          # ×3 wide, ×2 high, box at x 20..44, y 4..20; the zero border adds one glyph pixel around
    ref[4 - 2:20 + 2, 20 - 3:44 + 3] = F.interpolate(F.pad(glyph, (1, 1, 1, 1))[None], scale_factor=(2, 3), mode='bilinear', align_corners=False)[0, 0]
    assert_close(ink, ref)


def test_rotation_and_shear_move_pixels_as_the_affine_map_says():
    glyph = digit_pool('test').images[9:10]
    def render(rot, shear, cy=32.):
        return render_sprites(glyph[:, None], torch.tensor([[32., cy]]), torch.tensor([[20., 20.]]), torch.tensor([rot]), torch.tensor([shear]), 64)[0, 0]
    assert_close(render(-math.pi / 2, 0.), torch.rot90(render(0., 0.), 1), atol=1e-5, rtol=0)
    upright, sheared = render(0., 0., cy=32.5), render(0., 0.25, cy=32.5)
    assert_close(sheared[36, 1:], upright[36, :-1], atol=1e-5, rtol=0)   # 4 px below the centre, x-shear 0.25: 1 px right
    assert_close(sheared[28, :-1], upright[28, 1:], atol=1e-5, rtol=0)   # 4 px above: 1 px left


def test_canvases_show_each_listed_glyph_in_its_colour_and_the_targets_follow():
    pool = digit_pool('train')
    inked = pool._replace(images=(pool.images > 0.5).float())
    images, layout = compose_canvases(inked, 40, size=64, count=(1, 3), scale=(1/2, 1/2), generator=torch.Generator().manual_seed(4))
    checked = 0
    for im, gl, bx, col, act in zip(images, layout.glyph, layout.box.long(), layout.colour, layout.active):
        for g, (x, y, s), c in zip(gl[act], bx[act], col[act]):
            up = F.interpolate(F.pad(inked.images[g], (1, 1, 1, 1))[None, None], scale_factor=4, mode='bilinear', align_corners=False)[0, 0, 4:-4, 4:-4]
            full = up > 0.9999
            assert ((im[:, y:y + s, x:x + s][:, full].float() / 255 - c[:, None]).abs() <= 1 / 255 + 1e-6).all()
            checked += int(full.sum())
    assert checked > 1500
    assert (layout.label == pool.labels[layout.glyph]).all()
    sizes = label_sizes(layout)
    for sz, lab, act in zip(sizes, layout.label, layout.active):
        assert sorted(torch.nonzero(sz).flatten().tolist()) == sorted(set(lab[act].tolist())) and (sz[lab[act]] == 32).all()


def test_augmentation_keeps_the_layout():
    pool = digit_pool('train')
    plain, lay0 = compose_canvases(pool, 16, generator=torch.Generator().manual_seed(5))
    augmented, lay1 = compose_canvases(pool, 16, augment=True, generator=torch.Generator().manual_seed(5))
    assert all(torch.equal(a, b) for a, b in zip(lay0, lay1))
    assert (plain.float() - augmented.float()).abs().mean() > 1


def test_label_sizes_keep_the_largest_glyph_of_a_repeated_digit():
    box = torch.tensor([[[0., 0., 20.], [30., 0., 9.], [0., 30., 14.]]])
    layout = Layout(torch.zeros(1, 3, dtype=torch.long), torch.tensor([[7, 7, 2]]), box, torch.zeros(1, 3, 3), torch.tensor([[True, True, False]]))
    expected = torch.zeros(1, 10); expected[0, 7] = 20
    assert torch.equal(label_sizes(layout), expected)


def test_fixed_sets_are_deterministic_from_the_seed():
    a, b = MultiScaleDigits('test', n=256, seed=5), MultiScaleDigits('test', n=256, seed=5)
    assert torch.equal(a.images, b.images) and torch.equal(a.targets, b.targets) and torch.equal(a.sizes, b.sizes)
    assert not torch.equal(a.images, MultiScaleDigits('test', n=256, seed=6).images)
    assert not torch.equal(a.images, MultiScaleDigits('train', n=256, seed=5, augment=False).images)
    assert a.label_names == DIGIT_NAMES and len(a) == 256
    assert torch.equal(a.targets, (a.sizes > 0).float()) and ((a.sizes == 0) | ((a.sizes >= 8) & (a.sizes <= 32))).all()
    assert ((a.targets.sum(1) >= 1) & (a.targets.sum(1) <= 4)).all()


def test_item_is_the_stored_canvas_normalised():
    ds = MultiScaleDigits('test', n=3, size=32, count=(1, 2), scale=(1/4, 1/2))
    x, y = ds[2]
    assert_close(x, (ds.images[2].float() / 255 - MEAN) / STD)
    assert torch.equal(y, ds.targets[2]) and x.shape == (3, 32, 32)


def test_fresh_batches_are_new_each_epoch_and_replay_for_a_resumed_run():
    f = MultiScaleDigits('train', n=0).fresh(8, steps=2, seed=2)
    e0 = list(f); f.set_epoch(1); e1 = list(f); f.set_epoch(0); again = list(f)
    assert not any(torch.equal(a[0], b[0]) for a, b in zip(e0, e1))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(e0, again))


def test_the_first_low_res_steps_are_the_recipe_drawn_at_half_the_side_and_the_rest_unchanged():
    ds = MultiScaleDigits('train', n=0)
    plain, coarse = ds.fresh(4, steps=3, seed=2), ds.fresh(4, steps=3, seed=2, low_res_steps=4)   # steps 0-3 of 0-5 at 32 px
    half = dataclasses.replace(ds.canvases, size=32)
    for epoch in (0, 1):
        plain.set_epoch(epoch); coarse.set_epoch(epoch)
        for i, ((x, y), (xp, yp)) in enumerate(zip(coarse, plain)):
            if epoch * 3 + i < 4:                                  # drawn by the recipe at 32 px from the step's own generator
                images, sizes = half(4, seeded(2, STREAMS['fresh'], epoch, i, 0))
                assert x.shape == (4, 3, 32, 32) and torch.equal(x, normalize(images)) and torch.equal(y, (sizes > 0).float())
            else: assert torch.equal(x, xp) and torch.equal(y, yp) and x.shape == (4, 3, 64, 64)
    assert half.sides == (4, 16) and ds.canvases.sides == (8, 32)  # every glyph the same fraction of the canvas


def test_fresh_batches_are_fixed_by_seed_and_index_whatever_the_workers():
    ds = MultiScaleDigits('train', n=0)
    here = list(ds.fresh(8, steps=4, seed=2))
    workers = list(DataLoader(ds.fresh(8, steps=4, seed=2), batch_size=None, num_workers=2))
    assert len(here) == len(workers) == 4
    for (x0, y0), (x1, y1) in zip(here, workers):
        assert torch.equal(x0, x1) and torch.equal(y0, y1)
    assert not torch.equal(here[0][0], here[1][0])
    assert not torch.equal(here[0][0], next(iter(ds.fresh(8, seed=3)))[0])
    x, y = here[0]
    assert x.shape == (8, 3, 64, 64) and x.dtype == torch.float32 and set(y.unique().tolist()) <= {0., 1.}


def test_targets_by_scale_partition_the_positives():
    ds = MultiScaleDigits('test', n=256)
    bands = ds.targets_by_scale()
    kept = sum((b == 1).float() for b in bands.values())
    assert torch.equal(kept, ds.targets)                              # every positive in exactly one band
    lo, hi = 8 * 4 ** (1 / 3), 8 * 4 ** (2 / 3)
    assert torch.equal(bands['small'] == 1, (ds.targets == 1) & (ds.sizes < lo))
    assert torch.equal(bands['large'] == 1, (ds.targets == 1) & (ds.sizes >= hi))
    assert all(torch.equal(b == 0, ds.targets == 0) for b in bands.values())


@pytest.mark.parametrize('kwargs,match', [(dict(size=100), 'size=100'), (dict(count=(0, 2)), r'count=\(0, 2\)'), (dict(count=(1, 2, 3)), r'count=\(1, 2, 3\)'),
                                          (dict(scale=(0.6, 0.5)), r'scale=\(0.6, 0.5\)'), (dict(split='val'), "split='val'"),
                                          (dict(n=-1), 'n=-1')])
def test_bad_digit_arguments_raise_naming_the_value(kwargs, match):
    with pytest.raises(ValueError, match=match): MultiScaleDigits(**{'n': 1, **kwargs})
