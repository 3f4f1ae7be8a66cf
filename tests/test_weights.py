"Checkpoints: the golden fixture from the reference code, torchvision ConvNeXt, facebookresearch ConvNeXt."
import hashlib, re, pytest, torch, torchvision
from torch.testing import assert_close
from conftest import ROOT, FIXTURE, graph_nodes
from hsvlt_lite.model import HSVLT, HSVLTConfig
from hsvlt_lite.weights import from_reference, reference_to_hsvlt_lite, reference_config, load_convnext, discarded_gate

KEYS = ('stage_visual', 'stage_linguistic', 'stage_multimodal', 'stage_attention')


@pytest.mark.parametrize('fold', ['folded', 'plain', 'auto'])
def test_golden_fixture(golden, fold):
    model = from_reference(golden['state_dict'], golden['text_feats'], num_heads=1, fold=fold).eval()
    with torch.no_grad():
        logits, feats = model(golden['images']), model.forward_features(golden['images'])
    assert_close(logits, golden['logits'], rtol=1e-4, atol=1e-3)
    for i, f in enumerate(feats):
        ours = dict(zip(KEYS, f))
        ours['stage_linguistic'] = discarded_gate(golden['state_dict'], f.L) if i == 3 else f.L
        for key in KEYS: assert_close(ours[key], golden[key][i], rtol=1e-4, atol=1e-3, msg=lambda m: f'stage {i+1} {key}: {m}')


def test_golden_fixture_on_the_training_path(golden):
    "One image at a time, gradients on, two threads: the folded IVLA takes its hand-written path, and gives the reference's logits too."
    model = from_reference(golden['state_dict'], golden['text_feats'], num_heads=1, fold='folded').eval()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        for i in range(len(golden['images'])):
            logits = model(golden['images'][i:i + 1])
            assert 'SharedKeyValueBackward' in graph_nodes(logits)
            assert_close(logits[0], golden['logits'][i], rtol=1e-4, atol=1e-3)
    finally: torch.set_num_threads(threads)


def test_fixture_copy_is_current():
    shared = ROOT.parent / 'shared' / 'reference' / 'official_hsvlt_tiny.pt'
    if not shared.exists(): pytest.skip('no ../shared beside this clone')
    assert hashlib.sha256(shared.read_bytes()).digest() == hashlib.sha256(FIXTURE.read_bytes()).digest()


def test_reference_config_from_shapes(golden):
    cfg = reference_config(golden['state_dict'])
    c = golden['config']
    assert (cfg.dims, cfg.depths, cfg.text_dim) == (tuple(c['dims']), tuple(c['depths']), c['text_dim'])


def test_reference_unused_names_ignored_and_others_rejected(golden):
    sd = dict(golden['state_dict'])
    unused = {'head.weight': torch.zeros(3, 128), 'norm.bias': torch.zeros(128), 'attn.query.weight': torch.zeros(2, 2),
              'fuse.conv1_4.weight': torch.zeros(1), 'stages.2.1.mlp.fc1.weight': torch.zeros(1), 'stages.0.0.norm2.weight': torch.zeros(1)}
    mapped = reference_to_hsvlt_lite({**sd, **unused})
    assert mapped.keys() == reference_to_hsvlt_lite(sd).keys()
    assert not any('res_gate' in k or k.startswith('stages.3.blocks.0.gate') for k in mapped)
    for extra in ('stages.0.0.attn.extra.weight', 'langs.4.weight', 'text_head.weight', 'stages.1.0.res_gate.1.weight'):
        with pytest.raises(ValueError, match=re.escape(repr(extra))): from_reference({**sd, extra: torch.zeros(1)}, golden['text_feats'])
    missing = dict(sd); del missing['stages.2.1.attn.key.weight']
    with pytest.raises(ValueError, match='stages.2.blocks.1.ivla.k.weight'): from_reference(missing, golden['text_feats'])
    with pytest.raises(ValueError, match='5 labels'): from_reference(sd, golden['text_feats'][:4])


def perturbed_convnext(builder):
    tv = builder(weights=None).eval()
    with torch.no_grad():
        for name, p in tv.named_parameters():
            if name.endswith('layer_scale'): p.uniform_(0.2, 0.8)   # 1e-6 would make every block a no-op
    return tv


def tv_features(tv, x):
    out = []
    for i, layer in enumerate(tv.features):
        x = layer(x)
        if i % 2: out.append(x)
    return out


def test_tiny_preset_equals_torchvision_convnext_tiny():
    tv = perturbed_convnext(torchvision.models.convnext_tiny)
    model = load_convnext(HSVLT(HSVLTConfig.preset('tiny'), torch.randn(3, 768)), tv).eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        ours, theirs = [f.V for f in model.forward_features(x, need_weights=False)], tv_features(tv, x)
    for a, b in zip(ours, theirs): assert_close(a, b, rtol=1e-4, atol=1e-4)
    model2 = load_convnext(HSVLT(HSVLTConfig.preset('tiny', interaction='late'), torch.randn(3, 768)), tv.state_dict()).eval()
    with torch.no_grad(): assert_close(model2.forward_features(x)[3].V, theirs[3], rtol=1e-4, atol=1e-4)


def test_facebookresearch_format_reproduces_reference_visual_maps(golden):
    "The reference's visual stream uses facebookresearch ConvNeXt names: load just those and compare its V maps."
    sd = golden['state_dict']
    fb = {'model': {k: w for k, w in sd.items() if re.match(r'(downsample_layers|stages\.\d+\.\d+\.(dwconv|norm|pwconv|gamma))', k)}}
    fb['model'].update({'head.weight': torch.zeros(10, 128), 'head.bias': torch.zeros(10), 'norm.weight': torch.ones(128), 'norm.bias': torch.zeros(128)})
    model = load_convnext(HSVLT(reference_config(sd), torch.randn(5, 768)), fb).eval()
    with torch.no_grad(): feats = model.forward_features(golden['images'], need_weights=False)
    for f, v in zip(feats, golden['stage_visual']): assert_close(f.V, v, rtol=1e-4, atol=1e-4)


def test_convnext_mismatches_name_the_weight():
    tv = torchvision.models.convnext_tiny(weights=None)
    with pytest.raises(ValueError, match=r"'stages\.2\.blocks\.3\.conv"):            # tiny has 9 blocks in stage 3, this model 3
        load_convnext(HSVLT(HSVLTConfig.preset('tiny', depths=(3, 3, 3, 3)), torch.randn(2, 768)), tv)
    with pytest.raises(ValueError, match=r"stages\.0\.down\.proj\.weight.*\(96, 48\)"):
        load_convnext(HSVLT(HSVLTConfig.preset('nano', stem='patch'), torch.randn(2, 768)), tv)   # the 4x4 patch stem, 32 wide: a shape mismatch
    with pytest.raises(ValueError, match='does not fill'):
        load_convnext(HSVLT(HSVLTConfig.preset('small'), torch.randn(2, 768)), tv)
    with pytest.raises(ValueError, match='not a ConvNeXt state dict'):
        load_convnext(HSVLT(HSVLTConfig.preset('nano'), torch.randn(2, 768)), {'weight': torch.zeros(1)})
