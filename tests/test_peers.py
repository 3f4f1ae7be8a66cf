"The benchmark peers and the ablation harness (benchmarks/): the ML-Decoder head against attention written out by hand, equal-time step counts by hand."
import sys, math, pytest, torch, torch.nn.functional as F
from torch.testing import assert_close
from conftest import ROOT

sys.path.insert(0, str(ROOT / 'benchmarks'))
from peers import MLDecoder, OpenMLDecoder, PooledConvNeXt, Query2Label, TextDot, visual_stages, NANO
from ablations import equal_time_steps, recipe, build
from hsvlt_lite.recipes import head_bias


def decoder_by_hand(m, x, q, d, heads):
    "Queries `q` (b n d) through `m`'s cross-attention + MLP decoder layer over its last stage's tokens, with explicit matmuls."
    feats = m.features(x)                                                        # b c 2 2
    t = F.layer_norm(feats.flatten(2).transpose(1, 2) @ m.proj.weight.T + m.proj.bias, (d,), m.norm_kv.weight, m.norm_kv.bias)
    qn = F.layer_norm(q, (d,), m.norm_q.weight, m.norm_q.bias)
    wq, wk, wv = m.attn.in_proj_weight.chunk(3)
    bq, bk, bv = m.attn.in_proj_bias.chunk(3)
    b = len(x)
    split = lambda z: z.reshape(b, -1, heads, d // heads).transpose(1, 2)       # b h n dh
    Q, K, V = split(qn @ wq.T + bq), split(t @ wk.T + bk), split(t @ wv.T + bv)
    att = ((Q @ K.transpose(-1, -2)) / math.sqrt(d // heads)).softmax(-1)
    q = q + ((att @ V).transpose(1, 2).reshape(b, -1, d) @ m.attn.out_proj.weight.T + m.attn.out_proj.bias)
    h = F.layer_norm(q, (d,), m.norm_mlp.weight, m.norm_mlp.bias)
    return q + (F.gelu(h @ m.mlp[0].weight.T + m.mlp[0].bias) @ m.mlp[2].weight.T + m.mlp[2].bias)


def test_ml_decoder_is_cross_attention_mlp_and_group_linear_by_hand():
    torch.manual_seed(0)
    k, d, heads = 7, 16, 4
    m = MLDecoder(k, groups=3, d=d, heads=heads).eval()
    with torch.no_grad(): m.head.bias.normal_()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        q = decoder_by_hand(m, x, m.queries.expand(2, -1, -1), d, heads)
        logits = torch.cat([q[:, g] @ m.group_weight[g] for g in range(3)], 1)[:, :k] + m.head.bias   # groups of 3 labels, 9 -> 7
        assert_close(m(x), logits, rtol=1e-5, atol=1e-5)


def test_open_ml_decoder_queries_are_projected_label_vectors_by_hand():
    torch.manual_seed(0)
    d, heads, e = 16, 4, torch.randn(5, 12)
    m = OpenMLDecoder(e, d=d, heads=heads).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        q = decoder_by_hand(m, x, (e @ m.query.weight.T + m.query.bias).expand(2, -1, -1), d, heads)
        assert_close(m(x), q @ m.head.weight[0] + m.head.bias, rtol=1e-5, atol=1e-5)
        new = torch.randn(3, 12)
        assert_close(m.with_labels(torch.cat([new, e[[1]]]))(x)[:, 3], m(x)[:, 1])          # a label's score does not depend on the others
        assert_close(m.with_labels(new)(x), decoder_by_hand(m, x, (new @ m.query.weight.T + m.query.bias).expand(2, -1, -1), d, heads) @ m.head.weight[0] + m.head.bias,
                     rtol=1e-5, atol=1e-5)


def test_text_dot_is_a_scaled_cosine_of_pooled_image_and_text():
    torch.manual_seed(0)
    e, x = torch.randn(4, 12), torch.randn(2, 3, 64, 64)
    m = TextDot(e, d=8).eval()
    with torch.no_grad():
        m.head.bias.fill_(-1.5)
        img = m.image(F.layer_norm(m.features(x).mean((-2, -1)), (NANO.dims[-1],), m.norm.weight, m.norm.bias))
        want = 10 * F.cosine_similarity(img[:, None], m.text(e)[None], dim=-1) - 1.5
        assert_close(m(x), want, rtol=1e-5, atol=1e-5)
        assert_close(m.with_labels(e[[2, 0]])(x), want[:, [2, 0]], rtol=1e-5, atol=1e-5)
    assert torch.equal(m.label_embeddings, e)


def test_the_peers_share_hsvlt_nanos_visual_stages():
    from hsvlt_lite.model import HSVLT
    hsvlt = HSVLT(NANO, torch.randn(20, NANO.text_dim))
    visual = sum(p.numel() for n, p in hsvlt.named_parameters() if '.conv.' in n or '.down.' in n)
    assert sum(p.numel() for p in visual_stages(NANO).parameters()) == visual
    for peer in (PooledConvNeXt(20), MLDecoder(20)): assert peer(torch.randn(2, 3, 64, 64)).shape == (2, 20)
    assert Query2Label(20)(torch.randn(2, 3, 64, 64)).shape == (2, 20)


def test_equal_time_steps_are_the_hsvlt_budget_over_each_step_time():
    # emoji defaults: 10 epochs of 320 steps; a budget of 3,200 x 0.2 s = 640 s
    steps = equal_time_steps('emoji', {'hsvlt': 0.2, 'fast': 0.1, 'slow': 0.3})
    assert steps == {'hsvlt': 320, 'fast': 640, 'slow': 213}


def test_the_digits_contest_keeps_the_recipe_it_was_run_with():
    # hsvlt train's default became 2,835 steps of batch 48; the stored contest is 4,250 steps of batch 32 at 3e-3
    r = recipe('digits', 'late', seed=1).resolved()
    assert (r.batch_size, r.lr, r.epochs, r.steps_per_epoch, r.interaction, r.seed) == (32, 3e-3, 5, 850, 'late', 1)
    assert recipe('digits', steps_per_epoch=1500).resolved().steps_per_epoch == 1500
    # a budget of 4,250 x 0.1 s = 425 s: 0.2 s steps get 2,125, 425 an epoch
    assert equal_time_steps('digits', {'hsvlt': 0.1, 'slow': 0.2}) == {'hsvlt': 850, 'slow': 425}


@pytest.mark.parametrize('model,field,value', [('hsvlt', 'aggregation', 'csa'), ('no_csa', 'aggregation', 'last'), ('late', 'interaction', 'late'),
                                               ('topdown', 'aggregation', 'topdown'), ('feedback', 'visual_feedback', True)])
def test_each_ablation_is_hsvlt_train_with_one_switch(model, field, value):
    from hsvlt_lite.data import VOC_CLASSES
    r = recipe('emoji', model, seed=2)
    net = build(model, r.resolved(), VOC_CLASSES)
    full = build('hsvlt', recipe('emoji').resolved(), VOC_CLASSES)
    assert r.command().startswith('hsvlt train --data emoji') and r.command().endswith(' --seed 2') and getattr(net.cfg, field) == value
    assert {k: v for k, v in vars(net.cfg).items() if k != field} == {k: v for k, v in vars(full.cfg).items() if k != field}
    assert head_bias(net) is net.aggregate.head.bias


def test_the_one_hot_ablation_gives_each_label_its_own_axis():
    from hsvlt_lite.data import VOC_CLASSES
    net = build('onehot', recipe('emoji', 'onehot').resolved(), VOC_CLASSES)
    assert torch.equal(net.label_embeddings, torch.eye(20))


def test_the_peers_label_attention_for_the_localisation_report():
    "Query2Label's decoder weights are its own cross-attention's (its output re-derived from them); ML-Decoder gives each label its group's."
    torch.manual_seed(0)
    q2l = Query2Label(5).eval()
    x = torch.randn(2, 3, 64, 64)
    (f,) = q2l.forward_features(x)
    assert_close(q2l.head(f.S), q2l(x))
    dec, (_, t) = q2l.decoder, q2l.encode(x)
    wv, bv = dec.multihead_attn.in_proj_weight.chunk(3)[2], dec.multihead_attn.in_proj_bias.chunk(3)[2]
    values = (t @ wv.T + bv).reshape(2, 64, 4, 16).transpose(1, 2)                       # b h n dh
    attended = (f.A @ values).transpose(1, 2).reshape(2, 5, 64) @ dec.multihead_attn.out_proj.weight.T + dec.multihead_attn.out_proj.bias
    y = f.L + attended
    y = y + dec.linear2(dec.activation(dec.linear1(dec.norm3(y))))
    assert_close(y, f.S, rtol=1e-5, atol=1e-5)                                          # the weights are the ones the decoder used
    mld = MLDecoder(7, groups=3).eval()
    (g,) = mld.forward_features(x)
    _, q, a = mld.decode(x, need_weights=True)
    for c in range(7): assert_close(g.A[:, :, c], a[:, :, c // 3]); assert_close(g.S[:, c], q[:, c // 3])
    assert_close(g.A.sum(-1), torch.ones(2, 4, 7))


def test_the_attention_cures_are_hsvlt_train_with_their_switches():
    from hsvlt_lite.data import VOC_CLASSES
    net = build('evidence_floor', recipe('emoji', 'evidence_floor').resolved(), VOC_CLASSES)
    assert (net.cfg.qk_norm, net.cfg.match_evidence, net.cfg.temperature_floor, net.cfg.stage_heads) == (True, True, 10., 'features')
    assert recipe('emoji', 'evidence').command() == 'hsvlt train --data emoji --qk-norm --match-evidence --stage-loss 1.0'
    assert recipe('emoji', 'mil').command() == 'hsvlt train --data emoji --qk-norm --stage-loss 1.0 --stage-heads evidence'


def test_competition_and_more_heads_are_hsvlt_train_with_their_switches():
    from hsvlt_lite.data import VOC_CLASSES
    net = build('compete', recipe('emoji', 'compete').resolved(), VOC_CLASSES)
    assert net.cfg.competitive and net.cfg.stage_heads == 'features' and all(b.ivla.competitive for s in net.stages for b in s.blocks)
    net = build('heads2', recipe('emoji', 'heads2').resolved(), VOC_CLASSES)
    assert net.cfg.num_heads == 2 and all(b.ivla.heads == 2 for s in net.stages for b in s.blocks)
    assert recipe('emoji', 'heads2').command() == 'hsvlt train --data emoji --heads 2'
