"The model: config, switches, no dead parameters, initial scale, errors."
import itertools, pytest, torch
from hypothesis import given, settings, strategies
from torch.testing import assert_close
from hsvlt_lite.model import HSVLT, HSVLTConfig, PRESETS
from hsvlt_lite.ivla import VisualFeedback, IVLA, LabelGate


def unit_vectors(k, d=768):
    e = torch.randn(k, d)
    return e / e.norm(dim=1, keepdim=True)


def test_presets_table():
    table = {'nano': ((32, 64, 96, 128), (2, 2, 1, 1)), 'tiny': ((96, 192, 384, 768), (3, 3, 9, 3)),
             'small': ((96, 192, 384, 768), (3, 3, 27, 3)), 'base': ((128, 256, 512, 1024), (3, 3, 27, 3))}
    for name, (dims, depths) in table.items():
        cfg = HSVLTConfig.preset(name)
        assert (cfg.dims, cfg.depths, cfg.text_dim, cfg.num_heads) == (dims, depths, 768, 1)
    assert HSVLTConfig.preset('nano', num_heads=2, dims=[8, 16, 32, 64]).dims == (8, 16, 32, 64)


def test_small_has_exactly_the_reference_live_parameter_count():
    model = HSVLT(HSVLTConfig.preset('small'), torch.randn(80, 768))
    assert sum(p.numel() for p in model.parameters()) == 96_003_824


def assert_every_parameter_learns(model, size=32, batch=2):
    "Every parameter gets a finite, non-zero gradient (γf of visual feedback starts at 0, which blocks Wf: move it first)."
    for m in model.modules():
        if isinstance(m, VisualFeedback): torch.nn.init.constant_(m.gamma, 0.5)
    model.train()
    logits = model(torch.randn(batch, 3, size, size))
    (logits * torch.randn_like(logits)).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f'{name} takes no part in the forward pass'
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, f'{name} gets a zero gradient'


@pytest.mark.parametrize('preset', list(PRESETS))
def test_no_dead_parameters_in_any_preset(preset):
    assert_every_parameter_learns(HSVLT(HSVLTConfig.preset(preset), unit_vectors(3)), size=64)   # >1 patch at stage 4, else q, k get no gradient


SWITCHES = list(itertools.product(('csa', 'last', 'topdown'), ('ivla', 'late'), (False, True)))

@pytest.mark.parametrize('aggregation,interaction,feedback', SWITCHES)
@pytest.mark.parametrize('label_norm,stem', [(False, 'patch'), (True, 'conv')])
def test_no_dead_parameters_for_every_switch(aggregation, interaction, feedback, label_norm, stem):
    cfg = HSVLTConfig.preset('nano', num_heads=2, aggregation=aggregation, interaction=interaction, visual_feedback=feedback,
                             label_norm=label_norm, stem=stem, drop_path_rate=0.1, dropout=0.1)
    # stochastic depth drops a block's branch for each sample with p <= 0.1, and a branch dropped for the whole
    # batch rightly gets no gradient: 1% per block with 2 samples, 1e-8 with 8
    assert_every_parameter_learns(HSVLT(cfg, unit_vectors(4)), size=64, batch=8)


def test_label_norm_normalises_the_labels_entering_every_ivla():
    e = unit_vectors(5)
    plain = HSVLT(HSVLTConfig.preset('nano', label_norm=False), e).eval()
    normed = HSVLT(HSVLTConfig.preset('nano'), e).eval()
    missing, unexpected = normed.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and len(missing) == 2 * sum(HSVLTConfig.preset('nano').depths)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        f = normed.forward_features(x)
        v, l = normed.stages[0].down(x), normed.stages[0].lang(e).expand(2, -1, -1)
        for blk in plain.stages[0].blocks:                 # the same weights, with a functional LayerNorm before each IVLA
            v = blk.conv(v)
            s, _ = blk.ivla(v, torch.nn.functional.layer_norm(l, (32,), eps=1e-5))
            l = blk.gate(l + s)
        assert_close(f[0].S, s)
        assert not torch.allclose(f[0].S, plain.forward_features(x)[0].S)


def test_forward_is_classwise_linear_over_concatenated_S():
    model = HSVLT(HSVLTConfig.preset('nano'), unit_vectors(6)).eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad(): feats, logits = model.forward_features(x), model(x)
    F = torch.cat([f.S for f in feats], -1)
    w, b = model.aggregate.head.weight, model.aggregate.head.bias
    assert_close(logits, torch.stack([F[:, c] @ w[c] for c in range(6)], 1) + b, rtol=1e-4, atol=1e-5)
    assert [f.A.shape for f in feats] == [(2, 1, 6, n) for n in (384, 96, 24, 6)]
    assert all(torch.allclose(f.A.sum(-1), torch.ones(2, 1, 6)) for f in feats)


def test_late_interaction_is_convnext_then_one_cross_attention():
    model = HSVLT(HSVLTConfig.preset('nano', interaction='late', aggregation='last', label_norm=False), unit_vectors(5)).eval()   # (nano's label LayerNorm has its own test)
    assert sum(isinstance(m, IVLA) for m in model.modules()) == 1 and not any(isinstance(m, LabelGate) for m in model.modules())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        v = x
        for st in model.stages:
            v = st.down(v)
            for blk in st.blocks:
                if blk.conv is not None: v = blk.conv(v)
        fuse = model.stages[3].blocks[-1]
        s, _ = fuse.ivla(v, model.stages[3].lang(model.label_embeddings).expand(2, -1, -1))
        head = model.aggregate.head
        assert_close(model(x), (s * head.weight).sum(-1) + head.bias, rtol=1e-4, atol=1e-5)


def test_visual_feedback_starts_as_the_identity():
    e = unit_vectors(5)
    plain = HSVLT(HSVLTConfig.preset('nano'), e).eval()
    fb = HSVLT(HSVLTConfig.preset('nano', visual_feedback=True), e).eval()
    missing, unexpected = fb.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all('feedback' in k for k in missing) and missing
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert_close(fb(x), plain(x))
        for m in fb.modules():
            if isinstance(m, VisualFeedback): torch.nn.init.constant_(m.gamma, 1.)
        assert not torch.allclose(fb(x), plain(x), atol=1e-3)


@pytest.mark.parametrize('preset', list(PRESETS))
@pytest.mark.parametrize('scale', [1., 20.])        # unit vectors (MiniLM) and BERT-sized ones
def test_fresh_init_gives_sensible_logits(preset, scale):
    model = HSVLT(HSVLTConfig.preset(preset), unit_vectors(8) * scale).eval()
    with torch.no_grad(): z = model(torch.randn(6, 3, 32, 32))
    assert 0.02 < z.std() < 3, f'logits std {z.std():.3g}'
    assert z.std(0).mean() > 0.01, 'logits barely depend on the image'


def one_line_error(fn, match):
    with pytest.raises(ValueError, match=match) as e: fn()
    assert '\n' not in str(e.value)


def test_bad_input_errors_name_the_value():
    model = HSVLT(HSVLTConfig.preset('nano'), unit_vectors(3))
    one_line_error(lambda: model(torch.randn(1, 3, 100, 96)), '100×96')
    one_line_error(lambda: model(torch.randn(1, 3, 64, 48)), '64×48')
    one_line_error(lambda: model(torch.randn(1, 4, 64, 64)), 'got 4')
    one_line_error(lambda: model(torch.randn(3, 64, 64)), r'\(b, 3, H, W\)')
    one_line_error(lambda: HSVLT(HSVLTConfig.preset('nano'), torch.randn(768)), r'shape \(768,\)')
    one_line_error(lambda: HSVLT(HSVLTConfig.preset('nano'), torch.randn(3, 384)), 'width 384')
    one_line_error(lambda: HSVLT(HSVLTConfig.preset('nano'), torch.ones(3, 768, dtype=torch.long)), 'floating point')
    one_line_error(lambda: HSVLTConfig.preset('huge'), "'huge'")
    one_line_error(lambda: HSVLTConfig.preset('nano', depth=(1, 1, 1, 1)), "'depth'")
    one_line_error(lambda: HSVLTConfig.preset('nano', aggregation='sum'), "'sum'")
    one_line_error(lambda: HSVLTConfig.preset('nano', interaction='early'), "'early'")
    one_line_error(lambda: HSVLTConfig.preset('nano', dims=(32, 64, 128)), r'dims=\(32, 64, 128\)')
    one_line_error(lambda: HSVLTConfig.preset('nano', num_heads=5), 'num_heads=5')


@pytest.fixture(scope='module')
def small_nano():
    torch.manual_seed(0)
    return HSVLT(HSVLTConfig.preset('nano', dims=(8, 16, 24, 32)), unit_vectors(3)).eval()


@settings(max_examples=120, deadline=None, database=None)
@given(shape=strategies.lists(strategies.integers(0, 70), min_size=0, max_size=5), dtype=strategies.sampled_from([torch.float32, torch.float64, torch.uint8, torch.int64, torch.bool]))
def test_any_tensor_is_logits_or_one_line(small_nano, shape, dtype):
    "The model's input check, against the rule written out here: a float (b, 3, H, W) tensor with H, W multiples of 32 and b >= 1 gives finite logits; anything else one line."
    x = torch.zeros(shape, dtype=dtype)
    ok = len(shape) == 4 and shape[0] > 0 and shape[1] == 3 and shape[2] > 0 and shape[3] > 0 and shape[2] % 32 == 0 and shape[3] % 32 == 0 and dtype.is_floating_point
    if ok:
        with torch.no_grad(): logits = small_nano(x)
        assert logits.shape == (shape[0], 3) and torch.isfinite(logits).all()
        return
    try:
        with torch.no_grad(): small_nano(x)
    except ValueError as e: assert '\n' not in str(e) and str(e).startswith('image')
    else: raise AssertionError(f'{tuple(shape)} {dtype} accepted')


@pytest.mark.parametrize('heads', [1, 2])
def test_selective_attention_and_stage_heads_have_no_dead_parameters(heads):
    "Every parameter of the extensions learns: IVLA's temperature and W_e through the logits, the stage heads through the per-stage logits."
    cfg = HSVLTConfig.preset('nano', num_heads=heads, qk_norm=True, temperature_floor=2., match_evidence=True, stage_heads='features')
    assert_stage_heads_learn(cfg)
    assert sum('temperature' in n for n, _ in HSVLT(cfg, unit_vectors(4)).named_parameters()) == sum(cfg.depths)
    assert_stage_heads_learn(HSVLTConfig.preset('nano', num_heads=heads, qk_norm=True, stage_heads='evidence'))


def assert_stage_heads_learn(cfg):
    model = HSVLT(cfg, unit_vectors(4)).train()
    z, zs = model(torch.randn(4, 3, 64, 64), stages=True)
    (z * torch.randn_like(z)).sum().add((zs * torch.randn_like(zs)).sum()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_stage_logits_are_each_stages_classwise_head():
    model = HSVLT(HSVLTConfig.preset('nano', stage_heads='features'), unit_vectors(5)).eval()
    x = torch.randn(2, 3, 64, 64)
    z, zs = model(x, stages=True)
    feats = model.forward_features(x)
    assert_close(z, model(x))
    for i, (f, head) in enumerate(zip(feats, model.stage_heads)):
        assert_close(zs[:, i], torch.einsum('bkc,kc->bk', f.S, head.weight) + head.bias, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="stage_heads='features' or 'evidence'"): HSVLT(HSVLTConfig.preset('nano'), unit_vectors(5))(x, stages=True)


@pytest.mark.parametrize('bad,match', [(dict(temperature_floor=3.), 'need qk_norm=True'), (dict(match_evidence=True), 'need qk_norm=True'),
                                       (dict(qk_norm=True, temperature_floor=-1.), 'temperature_floor=-1.0'),
                                       (dict(stage_heads='features', interaction='late', aggregation='last'), 'needs an S at every stage'),
                                       (dict(stage_heads='evidence'), "stage_heads='evidence' needs qk_norm=True"), (dict(stage_heads=True), 'stage_heads=True')])
def test_extension_switches_fail_in_one_line(bad, match):
    with pytest.raises(ValueError, match=match): HSVLTConfig.preset('nano', **bad)


def test_evidence_heads_read_each_stages_best_cosine_match():
    "E of a stage is its last IVLA's largest query-key cosine (by hand, heads averaged); the evidence heads are affine in it."
    torch.manual_seed(0)
    model = HSVLT(HSVLTConfig.preset('nano', num_heads=2, qk_norm=True, stage_heads='evidence'), unit_vectors(5)).eval()
    x = torch.randn(2, 3, 64, 64)
    captured = {}
    last = model.stages[1].blocks[-1]
    inner = last.ivla.forward_with_match
    last.ivla.forward_with_match = lambda v, l, *a: captured.update(v=v, l=l) or inner(v, l, *a)
    feats = model.forward_features(x)
    p = captured['v'].flatten(2).transpose(1, 2)
    q, k = (captured['l'] @ last.ivla.q.weight.T).reshape(2, 5, 2, 32), (p @ last.ivla.k.weight.T).reshape(2, -1, 2, 32)
    cos = torch.einsum('bkhd,bnhd->bhkn', torch.nn.functional.normalize(q, dim=-1), torch.nn.functional.normalize(k, dim=-1))
    assert_close(feats[1].E, cos.amax(-1).mean(1), rtol=1e-4, atol=1e-5)
    z, zs = model(x, stages=True)
    for i, (f, head) in enumerate(zip(feats, model.stage_heads)): assert_close(zs[:, i], f.E * head.weight[:, 0] + head.bias)
