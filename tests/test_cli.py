"The command line end to end on a short digits run: outputs checked against scikit-learn and the model itself."
import csv, json, os, shutil, subprocess, sys, numpy as np, pytest, torch
from sklearn.metrics import average_precision_score, f1_score, precision_recall_curve
from pathlib import Path
from PIL import Image
from hsvlt_lite.cli import main
from hsvlt_lite.data import VOC_CLASSES, ListFileDataset, eval_transform
from hsvlt_lite.scenes import MultiScaleDigits, FreshCanvases
from hsvlt_lite.emoji import EmojiScenes
from hsvlt_lite.metrics import mean_average_precision
from hsvlt_lite.train import evaluate
from hsvlt_lite.checkpoints import load_model, load_checkpoint, stored_thresholds

ARGS = ['--epochs', '2', '--steps-per-epoch', '6', '--batch-size', '32', '--test-size', '128']


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp('cli') / 'run'
    assert main(['train', *ARGS, '--ema', '--out', str(out)]) == 0
    return out


def test_train_writes_checkpoint_metrics_and_picture(run, capsys):
    metrics = json.loads((run / 'metrics.json').read_text())
    test = MultiScaleDigits('test', n=128, size=64, seed=0)
    for key, weights in (('raw', 'model'), ('ema', 'ema')):
        model, names = load_model(run / 'model.pt', weights)
        scores, targets = evaluate(model, test)
        assert metrics[key]['mAP'] == pytest.approx(mean_average_precision(scores, targets), abs=1e-9)
        for band, t in test.targets_by_scale().items():
            assert metrics[key]['AP_by_size'][band] == pytest.approx(mean_average_precision(scores, t), abs=1e-9)
    assert metrics['mAP'] == metrics['ema']['mAP'] and names == list(test.label_names)
    assert len(metrics['history']) == 2 and metrics['timings']['train_seconds'] > 0
    assert metrics['config']['model']['stem'] == 'conv' and metrics['config']['model']['label_norm'] is True
    assert metrics['config']['train']['channels_last'] is True
    assert (run / 'attention.png').read_bytes()[:4] == b'\x89PNG'


def test_eval_prints_the_same_map(run, capsys):
    metrics = json.loads((run / 'metrics.json').read_text())
    assert main(['eval', '--ckpt', str(run / 'model.pt')]) == 0
    out = capsys.readouterr().out
    assert out.startswith('data: digits: 128 test canvases of 64 px (seed 0)\n') and f"mAP   {metrics['raw']['mAP']:.4f}" in out


def test_a_run_remembers_its_data_by_absolute_path(tmp_path, monkeypatch, capsys):
    for place, seed in (('a', 3), ('b', 4)):                               # two folders, each with a data set of its own in ds/
        MultiScaleDigits('train', n=32, size=64, seed=seed).save_list(tmp_path / place / 'ds', 'train')
        MultiScaleDigits('test', n=48, size=64, seed=seed).save_list(tmp_path / place / 'ds', 'test')
    monkeypatch.chdir(tmp_path / 'a')
    relative = ['--data', 'list', '--root', 'ds', '--train-list', 'ds/train.txt', '--test-list', 'ds/test.txt', '--labels', 'ds/labels.txt']
    assert main(['train', *relative, '--img-size', '64', '--epochs', '1', '--batch-size', '8', '--out', 'run']) == 0
    ds, ckpt = tmp_path / 'a' / 'ds', tmp_path / 'a' / 'run' / 'model.pt'
    meta = load_checkpoint(ckpt)['meta']
    assert [meta[k] for k in ('root', 'train_list', 'test_list', 'labels')] == [str(ds), str(ds / 'train.txt'), str(ds / 'test.txt'), str(ds / 'labels.txt')]
    model, _ = load_model(ckpt)
    def our_map(root):                                                     # scikit-learn's mAP of the run's model on the data in `root`
        scores, targets = evaluate(model, ListFileDataset(root, root / 'test.txt', root / 'labels.txt', eval_transform(64)))
        return np.mean([average_precision_score(targets[:, c], scores[:, c]) for c in range(10) if targets[:, c].any()])
    assert abs(our_map(ds) - our_map(tmp_path / 'b' / 'ds')) > 1e-3       # the two data sets score apart

    monkeypatch.chdir(tmp_path / 'b'); capsys.readouterr()                 # from another folder that has a ds/ of its own
    assert main(['eval', '--ckpt', str(ckpt)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"data: list test set: root {ds}, test list {ds / 'test.txt'}, labels {ds / 'labels.txt'}\n")
    assert f"mAP   {our_map(ds):.4f}" in out

    ds.rename(tmp_path / 'a' / 'moved')                                    # the data set moves
    assert main(['eval', '--ckpt', str(ckpt)]) == 2
    assert capsys.readouterr().err == f"hsvlt: error: the data of {str(ckpt)!r} has moved: {str(ds)!r} does not exist (give its new place with --root)\n"


def test_predict_prints_the_models_probabilities(run, tmp_path, capsys):
    img = MultiScaleDigits('test', n=1, size=64, seed=7).images[0]
    Image.fromarray(img.permute(1, 2, 0).numpy()).save(tmp_path / 'x.png')
    assert main(['predict', '--ckpt', str(run / 'model.pt'), str(tmp_path / 'x.png'), '--top', '2', '--attention', str(tmp_path / 'a.png')]) == 0
    model, names = load_model(run / 'model.pt')
    with torch.no_grad(): p = torch.sigmoid(model(eval_transform(64)(img)[None]))[0]
    top = p.topk(2)
    out = capsys.readouterr().out
    assert ', '.join(f'{names[i]} {v:.3f}' for v, i in zip(top.values.tolist(), top.indices.tolist())) in out
    assert (tmp_path / 'a.png').read_bytes()[:4] == b'\x89PNG'


def test_train_stores_best_f1_thresholds_for_each_kept_weights(run, capsys):
    "Each stored threshold gives the best F1 scikit-learn finds along its class's precision-recall curve on the validation canvases (seed 1); eval reports the scores at them."
    ckpt, metrics = load_checkpoint(run / 'model.pt'), json.loads((run / 'metrics.json').read_text())
    val = MultiScaleDigits('test', n=128, size=64, seed=1)
    for weights in ('model', 'ema'):
        th, source = stored_thresholds(ckpt, weights)
        assert source == metrics['threshold_source'] == '128 validation canvases drawn like the digits test set with another seed'
        model, names = load_model(run / 'model.pt', weights)
        scores, targets = evaluate(model, val)
        for c in range(len(names)):
            p, r, _ = precision_recall_curve(targets[:, c], scores[:, c])
            best = np.max(np.divide(2 * p * r, p + r, out=np.zeros_like(p), where=p + r > 0))
            assert f1_score(targets[:, c], scores[:, c] >= th[c]) == pytest.approx(best, abs=1e-9)
        assert th.tolist() == pytest.approx(list(metrics['raw' if weights == 'model' else 'ema']['thresholds'].values()))
    test_scores, test_targets = evaluate(load_model(run / 'model.pt')[0], MultiScaleDigits('test', n=128, size=64, seed=0))
    th = stored_thresholds(ckpt)[0]
    of1 = f1_score(test_targets.numpy(), test_scores.numpy() >= th.numpy(), average='micro')
    assert main(['eval', '--ckpt', str(run / 'model.pt')]) == 0
    assert f'OF1 {of1:.4f}' in capsys.readouterr().out.splitlines()[-1]


def test_predict_writes_every_score_and_the_predicted_set(run, tmp_path, capsys):
    "A folder, a file named twice and a glob, into CSV and JSON Lines: probabilities are the model's, predicted sets those at the stored thresholds or at --threshold."
    imgs = MultiScaleDigits('test', n=4, size=64, seed=9).images
    files = [tmp_path / 'in' / 'a.png', tmp_path / 'in' / 'b.png', tmp_path / 'in' / 'deep' / 'c.png', tmp_path / 'other' / 'd.png']
    for f, img in zip(files, imgs): f.parent.mkdir(parents=True, exist_ok=True); Image.fromarray(img.permute(1, 2, 0).numpy()).save(f)
    model, names = load_model(run / 'model.pt')
    with torch.no_grad(): p = torch.sigmoid(model(eval_transform(64)(imgs)))
    th = stored_thresholds(load_checkpoint(run / 'model.pt'))[0]
    specs = [str(tmp_path / 'in'), str(files[0]), f'{tmp_path}/other/*.png']
    assert main(['predict', '--ckpt', str(run / 'model.pt'), *specs, '--out', str(tmp_path / 'p.csv'), '--batch-size', '3']) == 0
    assert main(['predict', '--ckpt', str(run / 'model.pt'), *specs, '--out', str(tmp_path / 'p.jsonl'), '--threshold', '0.3']) == 0
    rows, lines = list(csv.DictReader(open(tmp_path / 'p.csv'))), [json.loads(l) for l in open(tmp_path / 'p.jsonl')]
    assert [r['path'] for r in rows] == [l['path'] for l in lines] == list(map(str, files))
    for r, l, pi in zip(rows, lines, p):
        torch.testing.assert_close(torch.tensor([float(r[n]) for n in names]), pi, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(torch.tensor([l['scores'][n] for n in names]), pi, rtol=1e-5, atol=1e-7)
        assert r['predicted'] == ';'.join(n for n, x, t in zip(names, pi.tolist(), th.tolist()) if x >= t)
        assert l['predicted'] == [n for n, x in zip(names, pi.tolist()) if x >= 0.3]
    out = capsys.readouterr().out
    assert 'thresholds: per class, chosen on 128 validation canvases' in out and 'thresholds: 0.3 for every label (--threshold)' in out


def test_an_interrupted_run_resumed_ends_with_the_same_weights(run, tmp_path, monkeypatch, capsys):
    real = FreshCanvases.__iter__
    def dies_in_epoch_2(self):
        if self.epoch == 1: raise KeyboardInterrupt
        yield from real(self)
    monkeypatch.setattr(FreshCanvases, '__iter__', dies_in_epoch_2)
    part = tmp_path / 'part'
    capsys.readouterr()
    assert main(['train', *ARGS, '--ema', '--out', str(part)]) == 130           # Ctrl-C: one line, the shell's code for it
    assert capsys.readouterr().err == "hsvlt: interrupted: train stopped, nothing partial was written\n"
    assert sorted(os.listdir(part)) == ['model.pt'] and load_checkpoint(part / 'model.pt')['epoch'] == 1   # the last whole epoch, nothing else
    monkeypatch.undo()
    assert main(['train', *ARGS, '--ema', '--out', str(part), '--resume', str(part / 'model.pt')]) == 0
    for weights in ('model', 'ema'):
        whole, _ = load_model(run / 'model.pt', weights); resumed, _ = load_model(part / 'model.pt', weights)
        for (n, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()): torch.testing.assert_close(b, a, rtol=0, atol=0, msg=n)


def test_emoji_scenes_train_with_the_ablation_switches(tmp_path):
    "--data emoji end to end with every switch of the ablations at once; the run's mAP is scikit-learn's on its checkpoint."
    out = tmp_path / 'emoji'
    assert main(['train', '--data', 'emoji', *ARGS, '--aggregation', 'last', '--interaction', 'late', '--visual-feedback', '--out', str(out)]) == 0
    metrics = json.loads((out / 'metrics.json').read_text())
    m = metrics['config']['model']
    assert (m['aggregation'], m['interaction'], m['visual_feedback']) == ('last', 'late', True)
    model, names = load_model(out / 'model.pt')
    test = EmojiScenes('test', n=128)
    scores, targets = evaluate(model, test)
    assert names == list(VOC_CLASSES) and torch.equal(targets, test.targets)
    assert metrics['mAP'] == pytest.approx(average_precision_score(targets.numpy(), scores.numpy(), average=None).mean(), abs=1e-9)
    assert set(metrics['AP_by_size']) == {'small', 'medium', 'large'}


def test_attention_extensions_train_from_the_command_line(tmp_path):
    "--qk-norm, --temperature-floor, --match-evidence and --stage-loss reach the model and the loop; every head starts at the label prior."
    from hsvlt_lite.recipes import prior_targets, Recipe
    out = tmp_path / 'selective'
    flags = ['--qk-norm', '--temperature-floor', '12', '--match-evidence', '--stage-loss', '0.5']
    assert main(['train', '--data', 'emoji', *ARGS, *flags, '--epochs', '1', '--steps-per-epoch', '1', '--out', str(out)]) == 0
    metrics = json.loads((out / 'metrics.json').read_text())
    m, t = metrics['config']['model'], metrics['config']['train']
    assert (m['qk_norm'], m['temperature_floor'], m['match_evidence'], m['stage_heads'], t['stage_loss']) == (True, 12.0, True, 'features', 0.5)
    assert '--qk-norm --temperature-floor 12.0 --match-evidence --stage-loss 0.5' in metrics['command']
    model, _ = load_model(out / 'model.pt')
    assert all(float(ivla.temperature().min()) >= 12 for ivla in (b.ivla for s in model.stages for b in s.blocks))
    fresh = Recipe(data='emoji', batch_size=32, test_size=128).resolved()
    p = prior_targets(fresh, None).mean(0).clamp(1e-3, 1 - 1e-3)
    start = torch.load(out / 'model.pt', weights_only=True)                # one step from the prior: the biases moved by at most lr
    for key in ['aggregate.head.bias'] + [f'stage_heads.{i}.bias' for i in range(4)]:
        assert (start['model'][key] - torch.logit(p)).abs().max() < 0.05, key


def test_eval_and_predict_take_a_shipped_name(tmp_path, capsys):
    assert main(['eval', '--ckpt', 'emoji-nano', '--test-size', '200']) == 0
    model, names = load_model('emoji-nano')
    test = EmojiScenes('test', n=200)
    assert f"mAP   {mean_average_precision(*evaluate(model, test)):.4f}" in capsys.readouterr().out
    Image.fromarray(test.images[3].permute(1, 2, 0).numpy()).save(tmp_path / 'scene.png')
    assert main(['predict', '--ckpt', 'emoji-nano', str(tmp_path / 'scene.png'), '--attention', str(tmp_path / 'att.png')]) == 0
    with torch.no_grad(): p = torch.sigmoid(model(test[3][0][None]))[0]
    top = p.topk(3)
    assert ', '.join(f'{names[i]} {v:.3f}' for v, i in zip(top.values.tolist(), top.indices.tolist())) in capsys.readouterr().out
    assert (tmp_path / 'att.png').read_bytes()[:4] == b'\x89PNG'


def test_eval_refuses_a_checkpoint_from_another_label_set(run, tmp_path, capsys):
    img = MultiScaleDigits('test', n=1, size=64, seed=7).images[0]
    Image.fromarray(img.permute(1, 2, 0).numpy()).save(tmp_path / 'x.png')
    (tmp_path / 'names.txt').write_text('cat\ndog\n'); (tmp_path / 'test.txt').write_text('x.png\tcat\n')
    code = main(['eval', '--ckpt', str(run / 'model.pt'), '--data', 'list', '--root', str(tmp_path), '--test-list', str(tmp_path / 'test.txt'),
                 '--labels', str(tmp_path / 'names.txt'), '--img-size', '64'])
    err = capsys.readouterr().err
    assert code == 2 and 'was trained on labels' in err and err.count('\n') == 1


def test_channels_last_is_the_digits_default_and_can_be_turned_off():
    from hsvlt_lite.cli import build_parser, recipe_of
    def layout(*argv): return recipe_of(build_parser().parse_args(['train', *argv])).resolved().channels_last
    assert layout() is True and layout('--no-channels-last') is False
    assert layout('--data', 'voc2007') is False and layout('--data', 'voc2007', '--channels-last') is True


def test_dims_and_depths_replace_the_presets():
    from hsvlt_lite.cli import build_parser, recipe_of
    from hsvlt_lite.recipes import build_model
    r = recipe_of(build_parser().parse_args(['train', '--dims', '8', '16', '24', '32', '--depths', '1', '2', '1', '3'])).resolved()
    model = build_model(r, torch.randn(10, 384))
    assert [len(s.blocks) for s in model.stages] == [1, 2, 1, 3]
    assert [s.blocks[0].conv.dwconv.in_channels for s in model.stages] == [8, 16, 24, 32]
    assert model.cfg.stem == 'conv' and model.cfg.label_norm and model.cfg.layer_scale_init == 1.0   # the rest is still nano's


def test_console_script_help_documents_every_option():
    hsvlt = shutil.which('hsvlt') or str(Path(sys.executable).parent / 'hsvlt')   # the console script pip installed
    out = subprocess.run([hsvlt, 'train', '--help'], capture_output=True, text=True, check=True).stdout
    for opt in ('--data', '--root', '--train-list', '--test-list', '--labels', '--preset', '--img-size', '--epochs', '--batch-size', '--lr',
                '--loss', '--embeddings', '--pretrained', '--device', '--amp', '--compile', '--ema', '--resume', '--out', '--seed',
                '--dims', '--depths', '--weight-decay', '--warmup', '--schedule', '--aggregation', '--interaction', '--visual-feedback',
                '--qk-norm', '--temperature-floor', '--match-evidence', '--stage-loss', '--low-res'):
        assert opt in out


def test_pretrained_torchvision_fills_the_visual_stream(monkeypatch):
    "--pretrained torchvision: the visual stream holds torchvision's ConvNeXt weights (a random stand-in here: no downloads)."
    import torchvision
    from hsvlt_lite.recipes import Recipe, build_model
    stand_in = torchvision.models.convnext_tiny(weights=None)
    asked = []
    monkeypatch.setattr(torchvision.models, 'convnext_tiny', lambda weights: asked.append(weights) or stand_in)
    model = build_model(Recipe(preset='tiny', pretrained='torchvision'), torch.randn(4, 384))
    assert asked == ['DEFAULT'] and model.cfg.stem == 'patch' and not model.cfg.label_norm
    torch.testing.assert_close(model.stages[2].blocks[8].conv.fc2.weight, stand_in.features[5][8].block[5].weight)
    torch.testing.assert_close(model.stages[0].down.proj.weight, stand_in.features[0][0].weight.permute(0, 2, 3, 1).reshape(96, 48))


def test_pretrained_file_fills_the_visual_stream(golden, tmp_path, capsys):
    "--pretrained FILE.pth: a facebookresearch ConvNeXt checkpoint (the reference's own visual weights) gives the reference's visual maps; a bad file is one line."
    import re
    from hsvlt_lite.recipes import Recipe, build_model
    sd = golden['state_dict']
    fb = {'model': {k: w for k, w in sd.items() if re.match(r'(downsample_layers|stages\.\d+\.\d+\.(dwconv|norm|pwconv|gamma))', k)}}
    torch.save(fb, tmp_path / 'convnext_tiny_1k_224.pth')
    from hsvlt_lite.weights import reference_config
    cfg = reference_config(sd)                         # the fixture's small ConvNeXt: its widths and depths
    r = Recipe(data='list', preset='tiny', dims=cfg.dims, depths=cfg.depths, pretrained=str(tmp_path / 'convnext_tiny_1k_224.pth'))
    assert (r.resolved().lr, r.resolved().batch_size, r.resolved().schedule, r.resolved().img_size) == (1e-5, 4, 'plateau', 448)
    model = build_model(r, torch.randn(4, 384)).eval()
    with torch.no_grad(): feats = model.forward_features(golden['images'], need_weights=False)
    for f, v in zip(feats, golden['stage_visual']): torch.testing.assert_close(f.V, v, rtol=1e-4, atol=1e-4)
    (tmp_path / 'notes.pth').write_text('not a checkpoint')
    for bad, msg in (('missing.pth', 'no such file'), ('notes.pth', 'is not a readable checkpoint'), ('weights.bin', "expected 'none', 'torchvision' or a ConvNeXt checkpoint file")):
        assert main(['train', '--preset', 'tiny', '--pretrained', str(tmp_path / bad), '--out', str(tmp_path / 'run')]) == 2
        err = capsys.readouterr().err
        assert err.count('\n') == 1 and msg in err, err


def test_export_writes_a_program_with_the_models_logits(run, tmp_path, capsys):
    "hsvlt export --format pt2: the saved program, loaded by torch.export alone, gives the checkpoint's logits on test canvases at two batch sizes."
    assert main(['export', '--ckpt', str(run / 'model.pt'), '--format', 'pt2', str(tmp_path / 'm.pt2')]) == 0
    assert 'max |logit difference| against PyTorch' in capsys.readouterr().out
    program = torch.export.load(tmp_path / 'm.pt2').module()
    model, _ = load_model(run / 'model.pt')
    test = MultiScaleDigits('test', n=5, size=64, seed=0)
    for x in (torch.stack([test[i][0] for i in range(5)]), test[0][0][None]):
        with torch.no_grad(): torch.testing.assert_close(program(x), model(x), rtol=0, atol=1e-4)
    assert main(['export', '--ckpt', str(run / 'model.pt'), '--format', 'onnx', str(tmp_path / 'm.pt2')]) == 2
    assert "does not end in .onnx" in capsys.readouterr().err
