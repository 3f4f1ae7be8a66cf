"IVLA against the equations written with plain matmuls (the reference in 02_ivla); folded against plain in values and gradients."
import math, pytest, torch
import torch.nn.functional as F
from torch.testing import assert_close
from torch.utils.flop_counter import FlopCounterMode
from conftest import graph_nodes
from hsvlt_lite.ivla import IVLA, LabelGate, VisualFeedback, SharedKeyValue, fold_wins, ivla_by_hand, selective_by_hand, sharpen


def sharp_ivla(dim, heads, fold): return sharpen(IVLA(dim, heads, fold=fold).eval())


@pytest.mark.parametrize('heads', [1, 2, 4])
@pytest.mark.parametrize('fold', ['plain', 'folded', 'auto'])
def test_ivla_matches_equations(heads, fold):
    m = sharp_ivla(32, heads, fold)
    v, l = torch.randn(2, 32, 5, 6), torch.randn(2, 7, 32)
    s_ref, a_ref = ivla_by_hand(m, v, l)
    assert a_ref.max() > 5 / 30                              # attention is far from uniform
    s, a = m(v, l, need_weights=True)
    assert_close(s, s_ref, rtol=1e-4, atol=1e-5); assert_close(a, a_ref, rtol=1e-4, atol=1e-6)
    s_sdpa, none = m(v, l)
    assert none is None; assert_close(s_sdpa, s_ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('heads', [1, 3])
def test_folded_and_plain_agree_in_values_and_gradients(heads):
    m = sharp_ivla(48, heads, 'plain').train()
    v, l = torch.randn(3, 48, 4, 8, requires_grad=True), torch.randn(3, 5, 48, requires_grad=True)
    results = {}
    for fold in ('plain', 'folded'):
        m.fold = fold
        for t in (*m.parameters(), v, l): t.grad = None
        s, _ = m(v, l)
        (s * torch.linspace(-1, 1, s.numel()).view_as(s)).sum().backward()
        results[fold] = (s.detach(), {n: p.grad.clone() for n, p in m.named_parameters()}, v.grad.clone(), l.grad.clone())
    (s0, g0, v0, l0), (s1, g1, v1, l1) = results['plain'], results['folded']
    assert_close(s1, s0, rtol=1e-4, atol=1e-5)
    assert set(g0) == set(g1) == {n for n, _ in m.named_parameters()}
    for n in g0: assert_close(g1[n], g0[n], rtol=1e-4, atol=1e-5)
    assert_close(v1, v0, rtol=1e-4, atol=1e-5); assert_close(l1, l0, rtol=1e-4, atol=1e-5)


def test_shared_key_value_against_finite_differences_and_torch_attention():
    q, p = torch.randn(2, 5, 8, dtype=torch.float64, requires_grad=True), torch.randn(2, 13, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda q, p: SharedKeyValue.apply(q, p, 0.6), (q, p))
    q, p, w = torch.randn(1, 40, 24, requires_grad=True), torch.randn(1, 90, 24, requires_grad=True), torch.randn(1, 40, 24)
    ours = SharedKeyValue.apply(q, p, 24 ** -0.5)
    (ours * w).sum().backward(); grads = q.grad, p.grad
    q.grad = p.grad = None
    ref = F.scaled_dot_product_attention(q, p, p)                  # its default scale is 1/sqrt(24)
    (ref * w).sum().backward()
    assert_close(ours, ref); assert_close(grads[0], q.grad); assert_close(grads[1], p.grad)
    g, = torch.autograd.grad(SharedKeyValue.apply(q, p, 0.5).square().sum(), q, create_graph=True)
    with pytest.raises(RuntimeError, match='differentiate twice'): g.sum().backward()   # no silent wrong second derivative


@pytest.mark.parametrize('heads', [1, 3])
def test_folded_on_one_image_takes_the_hand_written_backward_and_matches_plain(heads):
    "Fewer (image, head) pairs than threads, gradients on: the hand-written path; checked in double precision against the plain form."
    m = sharp_ivla(48, heads, 'plain').double().train()
    v, l = torch.randn(1, 48, 4, 8, dtype=torch.float64, requires_grad=True), torch.randn(1, 5, 48, dtype=torch.float64, requires_grad=True)
    threads, results = torch.get_num_threads(), {}
    try:
        for fold in ('plain', 'folded'):
            torch.set_num_threads(heads + 1)
            m.fold = fold
            for t in (*m.parameters(), v, l): t.grad = None
            s, _ = m(v, l)
            assert ('SharedKeyValueBackward' in graph_nodes(s)) == (fold == 'folded')
            (s * torch.linspace(-1, 1, s.numel(), dtype=s.dtype).view_as(s)).sum().backward()
            results[fold] = [s.detach(), v.grad.clone(), l.grad.clone(), *(p.grad.clone() for p in m.parameters())]
    finally: torch.set_num_threads(threads)
    for folded, plain in zip(results['folded'], results['plain']): assert_close(folded, plain)


def test_flash_kernel_kept_where_it_uses_every_thread():
    "As many (image, head) pairs as threads, or no gradients: torch's attention, unchanged."
    m = sharp_ivla(16, 1, 'folded').train()
    v, l = torch.randn(2, 16, 3, 3), torch.randn(2, 4, 16)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert 'SharedKeyValueBackward' not in graph_nodes(m(v, l)[0])
        assert 'SharedKeyValueBackward' in graph_nodes(m(v[:1], l[:1])[0])
        with torch.no_grad(): assert m(v[:1], l[:1])[0].grad_fn is None
    finally: torch.set_num_threads(threads)


def test_hand_written_backward_under_cpu_autocast():
    "bf16 autocast on one image: the hand-written path trains, and its gradients are as close to float32's as torch's flash kernel's are."
    from hsvlt_lite.model import HSVLT, HSVLTConfig
    m = HSVLT(HSVLTConfig.preset('nano'), torch.randn(10, 768)).train()
    x = torch.randn(1, 3, 64, 64)
    def step(threads, amp):
        torch.set_num_threads(threads); m.zero_grad()
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=amp): out = m(x)
        out.float().square().mean().backward()
        return graph_nodes(out), out.float(), torch.cat([p.grad.flatten() for p in m.parameters()])
    threads = torch.get_num_threads()
    try: (_, ref, g_ref), (hand_nodes, hand, g_hand), (flash_nodes, _, g_flash) = step(1, False), step(2, True), step(1, True)
    finally: torch.set_num_threads(threads)
    assert 'SharedKeyValueBackward' in hand_nodes and 'SharedKeyValueBackward' not in flash_nodes
    assert_close(hand, ref, rtol=0, atol=1e-2)
    err = lambda g: ((g - g_ref).norm() / g_ref.norm()).item()
    assert err(g_hand) < 1.25 * err(g_flash)


def flops(m, v, l):
    "FLOPs of `m(v, l)` as torch counts them; with the weights asked for, so that the attention runs as matrix products it counts."
    with FlopCounterMode(display=False) as fc: m(v, l, need_weights=True)
    return fc.get_total_flops()


@pytest.mark.parametrize('dim,heads,k,hw', [(64, 2, 7, (4, 4)), (64, 2, 7, (2, 2)), (32, 4, 10, (1, 41)), (32, 4, 10, (8, 16)),
                                            (32, 1, 10, (1, 9)), (32, 1, 10, (1, 11))])
def test_auto_picks_the_form_torch_counts_cheaper(dim, heads, k, hw):
    m, v, l = IVLA(dim, heads=heads), torch.randn(1, dim, *hw), torch.randn(1, k, dim)
    counts = {}
    for fold in ('auto', 'folded', 'plain'):
        m.fold = fold; counts[fold] = flops(m, v, l)
    assert counts['folded'] != counts['plain']
    assert counts['auto'] == min(counts['folded'], counts['plain'])
    assert fold_wins(heads, k, hw[0] * hw[1], dim) == (counts['folded'] < counts['plain'])


def test_label_gate_and_visual_feedback_by_hand():
    g = LabelGate(8); l = torch.randn(2, 3, 8)
    assert_close(g(l), l + torch.tanh(torch.relu(l @ g.fc1.weight.T) @ g.fc2.weight.T) * l)
    fb = VisualFeedback(8, heads=2); torch.nn.init.normal_(fb.gamma)
    a, s = torch.softmax(torch.randn(2, 2, 3, 12), -1), torch.randn(2, 3, 8)
    x = s @ fb.proj.weight.T
    per_patch = torch.cat([a[:, h].transpose(1, 2) @ x[..., 4 * h:4 * h + 4] for h in range(2)], -1)
    assert_close(fb(a, s, (3, 4)), per_patch.transpose(1, 2).reshape(2, 8, 3, 4) * fb.gamma[:, None, None])
    assert (VisualFeedback(8)(a[:, :1], s, (3, 4)) == 0).all()      # γf starts at 0


def test_bad_heads_and_fold():
    with pytest.raises(ValueError, match='num_heads=3'): IVLA(32, heads=3)
    with pytest.raises(ValueError, match="fold='fast'"): IVLA(32, fold='fast')


@pytest.mark.parametrize('heads,floor,evidence', [(1, 0., False), (2, 0., True), (4, 20., True)])
def test_selective_ivla_matches_equations(heads, floor, evidence):
    m = IVLA(32, heads, qk_norm=True, temperature_floor=floor, match_evidence=evidence).eval()
    v, l = torch.randn(2, 32, 5, 6), torch.randn(2, 7, 32)
    s_ref, a_ref = selective_by_hand(m, v, l)
    s, a = m(v, l, need_weights=True)
    assert_close(s, s_ref, rtol=1e-4, atol=1e-5); assert_close(a, a_ref, rtol=1e-4, atol=1e-6)
    assert m(v, l)[1] is None and a.max() > 2 / 30              # weights only when asked; not uniform at τ = 10


def test_temperature_floor_holds_and_theta_is_never_stuck():
    m = IVLA(16, 2, qk_norm=True, temperature_floor=12.)
    assert_close(m.temperature(), torch.full((2,), 12.))      # starts at max(10, floor)
    v, l = torch.randn(2, 16, 4, 4), torch.randn(2, 3, 16)
    with torch.no_grad(): m.temperature.log.copy_(torch.tensor([0., math.log(30.)]))
    assert_close(m.temperature(), torch.tensor([12., 30.]))   # e^0 = 1 is held at the floor; 30 is above it
    m(v, l)[0].square().sum().backward()
    assert (m.temperature.log.grad != 0).all()                # below the floor too: θ can climb back


@pytest.mark.parametrize('kw', [dict(temperature_floor=5.), dict(match_evidence=True)])
def test_selective_options_need_qk_norm(kw):
    with pytest.raises(ValueError, match='need qk_norm=True'): IVLA(16, **kw)


@pytest.mark.parametrize('heads', [1, 2])
def test_competitive_attention_by_hand(heads):
    "A softmax over the labels at each patch, then renormalised over the patches, with plain Python sums."
    torch.manual_seed(heads)
    m = IVLA(8, heads=heads, competitive=True).eval()
    v, l = torch.randn(2, 8, 2, 3), torch.randn(2, 4, 8)
    s, a = m(v, l, need_weights=True)
    d = 8 // heads
    for b in range(2):
        p = v[b].flatten(1).T
        q, key, val = l[b] @ m.q.weight.T, p @ m.k.weight.T, p @ m.v.weight.T
        outs = []
        for h in range(heads):
            sl = slice(d * h, d * h + d)
            z = [[(q[c, sl] @ key[n, sl]).item() / math.sqrt(d) for n in range(6)] for c in range(4)]
            share = [[math.exp(z[c][n]) / sum(math.exp(z[j][n]) for j in range(4)) + 1e-8 for n in range(6)] for c in range(4)]
            want = torch.tensor([[share[c][n] / sum(share[c]) for n in range(6)] for c in range(4)])
            assert_close(a[b, h], want, rtol=1e-5, atol=1e-7)
            outs.append(want @ val[:, sl])
        answer = torch.cat(outs, -1) @ m.o.weight.T + m.o.bias
        assert_close(s[b], F.gelu((F.gelu(l[b] @ m.s.weight.T + m.s.bias) * answer) @ m.mm.weight.T + m.mm.bias), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match='not with qk_norm'): IVLA(8, competitive=True, qk_norm=True)
