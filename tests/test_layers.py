"Layers against torch's own ops and torchvision's ConvNeXt block."
import pytest, torch, torch.nn as nn, torch.nn.functional as F
from torch.testing import assert_close
from torchvision.models.convnext import CNBlock, LayerNorm2d as TVLayerNorm2d
from hsvlt_lite.layers import LayerNorm2d, PatchDown, ConvNeXtBlock, conv_to_linear


def test_layernorm2d_matches_torchvision():
    ours, ref = LayerNorm2d(12), TVLayerNorm2d(12, eps=1e-6)
    nn.init.normal_(ours.weight); nn.init.normal_(ours.bias)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(3, 12, 5, 7) * 3 + 1
    assert_close(ours(x), ref(x))


@pytest.mark.parametrize('patch,norm_first', [(4, False), (2, True)])
def test_patchdown_equals_conv_and_layernorm(patch, norm_first):
    c_in, c_out = 5, 9
    conv = nn.Conv2d(c_in, c_out, patch, stride=patch)
    down = PatchDown(c_in, c_out, patch, norm_first)
    nn.init.normal_(down.norm.weight); nn.init.normal_(down.norm.bias)
    with torch.no_grad():
        down.proj.weight.copy_(conv_to_linear(conv.weight)); down.proj.bias.copy_(conv.bias)
    ln = TVLayerNorm2d(c_in if norm_first else c_out, eps=1e-6); ln.load_state_dict(down.norm.state_dict())
    x = torch.randn(2, c_in, 4 * patch, 6 * patch)
    expected = conv(ln(x)) if norm_first else ln(conv(x))
    assert_close(down(x), expected, rtol=1e-5, atol=1e-5)


def test_convnext_block_matches_torchvision():
    ours = ConvNeXtBlock(16, layer_scale=0.7).eval()
    ref = CNBlock(16, layer_scale=0.7, stochastic_depth_prob=0.).eval()
    with torch.no_grad():
        for i, name in [(0, 'dwconv'), (2, 'norm'), (3, 'fc1'), (5, 'fc2')]:
            ref.block[i].weight.copy_(getattr(ours, name).weight); ref.block[i].bias.copy_(getattr(ours, name).bias)
        ref.layer_scale.copy_(ours.gamma[:, None, None])
    x = torch.randn(2, 16, 9, 11)
    assert_close(ours(x), ref(x))


def test_convnext_block_stochastic_depth_drops_whole_samples():
    blk = ConvNeXtBlock(8, layer_scale=0.5, drop_path=0.5)
    x = torch.randn(64, 8, 4, 4)
    residual = blk.eval()(x) - x
    y = blk.train()(x)
    kept = [torch.allclose(y[i], x[i] + 2 * residual[i], atol=1e-5) for i in range(64)]
    dropped = [torch.allclose(y[i], x[i]) for i in range(64)]
    assert all(k or d for k, d in zip(kept, dropped)) and 10 < sum(kept) < 54


def test_conv_stem_by_hand():
    from hsvlt_lite.layers import ConvStem
    stem = ConvStem(3, 16)
    ln = TVLayerNorm2d(16, eps=1e-6)
    nn.init.normal_(stem.norm.weight); nn.init.normal_(stem.norm.bias)
    ln.load_state_dict(stem.norm.state_dict())
    def pool(t): return t.unflatten(2, (t.shape[2] // 2, 2)).unflatten(4, (t.shape[3] // 2, 2)).amax((3, 5))   # 2x2 window max
    x = torch.randn(2, 3, 32, 64)
    h = F.gelu(pool(F.conv2d(x, stem.conv1.weight, stem.conv1.bias, padding=1)))
    assert_close(stem(x), ln(pool(F.conv2d(h, stem.conv2.weight, stem.conv2.bias, padding=1))))
    assert_close(stem(x.contiguous(memory_format=torch.channels_last)), stem(x))
