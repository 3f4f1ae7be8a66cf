"Layers against torch's own ops and torchvision's ConvNeXt block."
import pytest, torch, torch.nn as nn
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


def test_conv_stem_against_torch_modules():
    "The stem against torch's Conv2d/MaxPool2d/BatchNorm2d/GELU and torchvision's LayerNorm2d, in training and evaluation."
    from hsvlt_lite.stem import ConvStem
    stem = ConvStem(3, 16)
    for m in (stem.norm1, stem.norm2, stem.norm): nn.init.normal_(m.weight); nn.init.normal_(m.bias)
    ref = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.MaxPool2d(2), nn.BatchNorm2d(16), nn.GELU(),
                        nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.MaxPool2d(2), nn.BatchNorm2d(16), nn.GELU(),
                        TVLayerNorm2d(16, eps=1e-6))
    for i, m in zip((0, 2, 4, 6, 8), (stem.conv1, stem.norm1, stem.conv2, stem.norm2, stem.norm)):
        ref[i].load_state_dict(m.state_dict())
    x = torch.randn(4, 3, 32, 64)
    for _ in range(3): assert_close(stem.train()(x * 2 + 1), ref.train()(x * 2 + 1))   # batch statistics, running ones updated
    assert_close(stem.norm2.running_var, ref[6].running_var)
    assert_close(stem.eval()(x), ref.eval()(x))                                           # running statistics
    assert not torch.allclose(stem.eval()(x), stem.train()(x))
    assert_close(stem.eval()(x.contiguous(memory_format=torch.channels_last)), stem.eval()(x))
