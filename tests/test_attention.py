"Attention maps are IVLA's weights laid on the grid; the picture is written."
import torch
from torch.testing import assert_close
from hsvlt_lite.model import HSVLT, HSVLTConfig
from hsvlt_lite.attention import attention_maps, plot_attention


def test_attention_maps_are_the_head_mean_on_the_grid():
    model = HSVLT(HSVLTConfig.preset('nano', num_heads=4), torch.randn(3, 768)).eval()
    x = torch.randn(2, 3, 64, 96)
    maps, feats = attention_maps(model, x), model.forward_features(x)
    for m, f in zip(maps, feats):
        h, w = f.V.shape[-2:]
        for (b, k, i, j) in [(0, 0, 0, 0), (1, 2, h - 1, w - 1), (1, 1, h // 2, w - 1)]:
            assert_close(m[b, k, i, j], f.A[b, :, k, i * w + j].mean())
        assert_close(m.sum((-1, -2)), torch.ones(2, 3))


def test_late_model_has_maps_only_where_it_fuses(tmp_path):
    model = HSVLT(HSVLTConfig.preset('nano', interaction='late', aggregation='last'), torch.randn(3, 768)).eval()
    maps = attention_maps(model, torch.randn(1, 3, 64, 64))
    assert [m is None for m in maps] == [True, True, True, False]
    path = tmp_path / 'att.png'
    plot_attention(model, torch.randn(1, 3, 64, 64), ['a', 'b', 'c'], labels=[[1]], path=path)
    assert path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_plot_attention_hands_the_model_back_in_its_mode():
    "plot_attention runs the model in evaluation mode and gives it back in the mode it came in (it used to leave it in eval mode)."
    model = HSVLT(HSVLTConfig.preset('nano', dropout=0.5), torch.randn(3, 768))
    x = torch.randn(1, 3, 64, 64)
    for training in (True, False):
        model.train(training)
        plot_attention(model, x, ['a', 'b', 'c'], labels=[[0]])
        assert model.training is training and all(m.training is training for m in model.modules())
