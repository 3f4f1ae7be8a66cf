"Export: ONNX and torch.export files give eager PyTorch's logits at any batch size; a checkpoint round trip; one-line errors."
import importlib.util, os, pytest, torch
from pathlib import Path
from torch.testing import assert_close
from hsvlt_lite import export
from hsvlt_lite.checkpoints import save_checkpoint, load_model
from hsvlt_lite.export import FORMATS, export_checkpoint, export_model, load_exported
from hsvlt_lite.model import HSVLT, HSVLTConfig
from conftest import built_for


def fresh(preset, k=20):
    "A randomly initialised preset with k unit label vectors of the preset's width, in evaluation mode."
    cfg = HSVLTConfig.preset(preset, layer_scale_init=1.0)   # tiny's γ = 1e-6 would hide a block exported wrong
    e = torch.randn(k, cfg.text_dim)
    return HSVLT(cfg, e / e.norm(dim=1, keepdim=True)).eval()


def assert_same_logits(model, path, size):
    "The exported file gives the model's logits at batch sizes 1 and 3 (it was traced at 2)."
    run = load_exported(path)
    for b in (1, 3):
        x = torch.randn(b, 3, size, size)
        with torch.no_grad(): want = model(x)
        assert want.abs().max() > 0.1                    # logits well above the tolerance: the comparison means something
        assert_close(run(x), want, atol=1e-4, rtol=0)


@pytest.mark.parametrize('fmt', FORMATS)
def test_tiny_export_gives_eager_logits(fmt, tmp_path):
    model = fresh('tiny')
    assert_same_logits(model, export_model(model, tmp_path / f'tiny.{fmt}', fmt, 224), 224)
    assert os.listdir(tmp_path) == [f'tiny.{fmt}']


def save_nano(path, meta):
    save_checkpoint(path, fresh('nano', k=5), label_names=list('abcde'), meta=meta)
    return path


@pytest.mark.parametrize('fmt', FORMATS)
def test_nano_checkpoint_round_trip(fmt, tmp_path):
    ckpt = save_nano(tmp_path / 'model.pt', {'img_size': 64})
    err = export_checkpoint(ckpt, tmp_path / f'nano.{fmt}', fmt)
    assert 0 <= err <= 1e-4
    assert_same_logits(load_model(ckpt)[0], tmp_path / f'nano.{fmt}', 64)
    assert sorted(os.listdir(tmp_path)) == ['model.pt', f'nano.{fmt}']


@pytest.mark.parametrize('fmt', FORMATS)
def test_a_shared_head_exports_another_label_set(fmt, tmp_path):
    "`labels=`: the file scores the named labels, in their order: a trained one as the model does, a new one as the same weights built for it."
    from hsvlt_lite.labels import embed_labels
    cfg = HSVLTConfig.preset('nano', text_dim=384, head='shared', layer_scale_init=1.0)
    model = HSVLT(cfg, embed_labels(['dog', 'car', 'chair'])).eval()
    save_checkpoint(tmp_path / 'model.pt', model, label_names=['dog', 'car', 'chair'], meta={'img_size': 64, 'embeddings': 'minilm'})
    export_checkpoint(tmp_path / 'model.pt', tmp_path / f'm.{fmt}', fmt, labels=['chair', 'cat'])
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad(): want = torch.stack([model(x)[:, 2], built_for(['cat'], model)(x)[:, 0]], 1)
    assert_close(load_exported(tmp_path / f'm.{fmt}')(x), want, atol=1e-4, rtol=0)


def fake_export(monkeypatch, shift=0.):
    "Replace the slow export by a file of a few bytes and the runner by the eager model plus `shift`: the control flow of `export_checkpoint` alone."
    calls = []
    def write(model, path, fmt, img_size):
        calls.append((model, img_size)); Path(path).write_bytes(b'new'); return Path(path)
    monkeypatch.setattr(export, 'export_model', write)
    monkeypatch.setattr(export, 'load_exported', lambda path: lambda x: calls[-1][0](x) + shift)
    return calls


def test_image_size_is_the_argument_else_the_runs_else_448(tmp_path, monkeypatch):
    calls = fake_export(monkeypatch)
    for meta, img_size, want in [({'img_size': 64}, None, 64), ({'img_size': 64}, 96, 96), ({}, None, 448)]:
        ckpt = save_nano(tmp_path / 'model.pt', meta)
        assert export_checkpoint(ckpt, tmp_path / 'm.pt2', 'pt2', img_size) == 0
        assert calls[-1][1] == want and (tmp_path / 'm.pt2').read_bytes() == b'new'


def test_a_file_that_differs_is_not_written(tmp_path, monkeypatch):
    fake_export(monkeypatch, shift=1e-3)
    ckpt = save_nano(tmp_path / 'model.pt', {'img_size': 64})
    (tmp_path / 'm.onnx').write_bytes(b'old')
    with pytest.raises(ValueError, match=r"^the onnx export of .*model\.pt' differs from PyTorch by 1\.00e-03 in a logit \(more than 0\.0001\); .*m\.onnx' not written$"):
        export_checkpoint(ckpt, tmp_path / 'm.onnx', 'onnx')
    assert (tmp_path / 'm.onnx').read_bytes() == b'old' and sorted(os.listdir(tmp_path)) == ['m.onnx', 'model.pt']


@pytest.mark.parametrize('out,fmt,message', [
    ('m.onnx', 'tflite', "unknown export format 'tflite': expected one of onnx, pt2"),
    ('m.pt', 'pt2', "'{tmp}/m.pt' does not end in .pt2, the suffix of format 'pt2'"),
    ('m.pt2', 'onnx', "'{tmp}/m.pt2' does not end in .onnx, the suffix of format 'onnx'")], ids=['format', 'suffix', 'other-suffix'])
def test_bad_format_or_suffix_is_one_line_naming_it(out, fmt, message, tmp_path):
    ckpt = save_nano(tmp_path / 'model.pt', {'img_size': 64})
    with pytest.raises(ValueError) as e: export_checkpoint(ckpt, tmp_path / out, fmt)
    assert str(e.value) == message.format(tmp=tmp_path)
    assert os.listdir(tmp_path) == ['model.pt']


def test_bad_image_size_and_missing_checkpoint(tmp_path):
    with pytest.raises(ValueError, match=r"^img_size=50: expected a positive multiple of 32$"):
        export_model(fresh('nano'), tmp_path / 'm.pt2', 'pt2', 50)
    with pytest.raises(ValueError, match=r"^checkpoint '.*nope\.pt' does not exist"):
        export_checkpoint(tmp_path / 'nope.pt', tmp_path / 'm.pt2', 'pt2')
    with pytest.raises(ValueError, match=r"^'.*m\.pt' is not an exported model: expected a name ending in \.onnx or \.pt2$"):
        load_exported(tmp_path / 'm.pt')


def test_missing_onnx_packages_say_what_to_install(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, 'find_spec', lambda name, *a: None if name in ('onnxruntime', 'onnxscript') else real(name, *a))
    with pytest.raises(ImportError) as e: export_checkpoint('digits-nano', tmp_path / 'm.onnx', 'onnx')
    assert str(e.value) == "exporting to onnx needs onnxscript, onnxruntime: pip install 'hsvlt_lite[export]'"
