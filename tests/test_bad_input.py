"""Bad input and a hostile environment, as a table: every case ends with one line `hsvlt: error: ...` that names what was
wrong, exit code 2, before any training step; a run folder that holds a run is never replaced silently; a diverging run
stops at once and leaves no non-finite weights behind."""
import os, pytest, torch
from PIL import Image
from hsvlt_lite import train as train_mod
from hsvlt_lite.cli import main, free_run_dir
from hsvlt_lite.checkpoints import save_checkpoint, load_checkpoint
from hsvlt_lite.model import HSVLT, HSVLTConfig
from hsvlt_lite.scenes import MultiScaleDigits

SHORT = ['--epochs', '1', '--steps-per-epoch', '2', '--batch-size', '8', '--test-size', '32']


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    "A folder of good and bad inputs: label and list files, images, embeddings, checkpoints, a run folder with a run."
    d = tmp_path_factory.mktemp('inputs')
    img = MultiScaleDigits('test', n=1, size=64, seed=3).images[0].permute(1, 2, 0).numpy()
    Image.fromarray(img).save(d / 'good.png')
    (d / 'corrupt.png').write_bytes((d / 'good.png').read_bytes()[:60])
    (d / 'text.png').write_text('not an image')
    (d / 'names.txt').write_text('cat\ndog\n')
    (d / 'repeated.txt').write_text('cat\ndog\ncat\n')
    (d / 'good.txt').write_text('good.png\tcat\n')
    (d / 'unknown.txt').write_text('good.png\tcat,zebra\n')
    (d / 'notab.txt').write_text('good.png cat\n')
    (d / 'missing.txt').write_text('good.png\tcat\nnothere.png\tdog\n')
    (d / 'badimage.txt').write_text('good.png\tcat\ncorrupt.png\tdog\n')
    (d / 'garbage.pt').write_bytes(b'\x00garbage' * 10)
    torch.save(torch.randn(3, 8), d / 'wrongshape.pt')
    (d / 'dir.pt').mkdir()
    (d / 'afile').write_text('x')
    save_checkpoint(d / 'run' / 'model.pt', HSVLT(HSVLTConfig.preset('nano', dims=(8, 16, 24, 32)), torch.randn(10, 768)))
    return d


def lst(d, name): return ['train', '--data', 'list', '--root', str(d), '--labels', str(d / 'names.txt'), '--train-list', str(d / 'good.txt'),
                          '--test-list', str(d / name), '--img-size', '64', '--batch-size', '1']

CASES = [   # (id, argv as a function of the inputs folder, what the line must say)
    ('preset', lambda d: ['train', '--preset', 'huge'], "invalid choice: 'huge'"),
    ('img-size', lambda d: ['train', '--img-size', '100'], 'image size 100'),
    ('img-size-neg', lambda d: ['train', '--img-size', '-32'], "'-32' is not above 0"),
    ('lr-inf', lambda d: ['train', '--lr', 'inf'], "--lr: 'inf' is not a finite number"),
    ('lr-nan', lambda d: ['train', '--lr', 'nan'], "--lr: 'nan' is not a finite number"),
    ('lr-zero', lambda d: ['train', '--lr', '0'], "--lr: '0' is not above 0"),
    ('lr-text', lambda d: ['train', '--lr', 'fast'], "--lr: 'fast' is not a number"),
    ('weight-decay', lambda d: ['train', '--weight-decay', '-1'], "--weight-decay: '-1' is not at least 0"),
    ('warmup-nan', lambda d: ['train', '--warmup', 'nan'], "--warmup: 'nan' is not a finite number"),
    ('ema', lambda d: ['train', '--ema', '1.5'], "--ema: '1.5' is not below 1"),
    ('epochs', lambda d: ['train', '--epochs', '0'], "--epochs: '0' is not above 0"),
    ('epochs-float', lambda d: ['train', '--epochs', '1.5'], "--epochs: '1.5' is not an integer"),
    ('batch', lambda d: ['train', '--batch-size', '0'], "--batch-size: '0' is not above 0"),
    ('steps', lambda d: ['train', '--steps-per-epoch', '-3'], "--steps-per-epoch: '-3' is not above 0"),
    ('test-size', lambda d: ['train', '--test-size', '0'], "--test-size: '0' is not above 0"),
    ('workers', lambda d: ['train', '--workers', '-1'], "--workers: '-1' is not at least 0"),
    ('seed', lambda d: ['train', '--seed', '-1'], "--seed: '-1' is not at least 0"),
    ('depths', lambda d: ['train', '--depths', '2', '2', '0', '1'], "--depths: '0' is not above 0"),
    ('dims-count', lambda d: ['train', '--dims', '32', '64', '96'], 'argument --dims: expected 4 arguments'),
    ('device', lambda d: ['train', '--device', 'tpu'], "device='tpu': expected 'cpu', 'cuda' or 'cuda:N'"),
    ('device-gpu', lambda d: ['train', '--device', 'cuda:7', '--out', str(d / 'gpu')], "device='cuda:7' but torch sees"),
    ('amp-fp16-cpu', lambda d: ['train', *SHORT, '--amp', 'fp16', '--out', str(d / 'fp16')], "amp='fp16' needs device='cuda'"),
    ('pretrained', lambda d: ['train', '--pretrained', 'torchvision', '--out', str(d / 'pre')], "needs preset tiny, small or base, not 'nano'"),
    ('embeddings-missing', lambda d: ['train', '--embeddings', str(d / 'nothere.pt'), '--out', str(d / 'e1')], "nothere.pt' does not exist"),
    ('embeddings-garbage', lambda d: ['train', '--embeddings', str(d / 'garbage.pt'), '--out', str(d / 'e2')], "garbage.pt' is not a readable"),
    ('embeddings-shape', lambda d: ['train', '--embeddings', str(d / 'wrongshape.pt'), '--out', str(d / 'e3')], 'must hold a (10, D) tensor'),
    ('embeddings-dir', lambda d: ['train', '--embeddings', str(d / 'dir.pt'), '--out', str(d / 'e4')], "dir.pt' is not a file"),
    ('list-no-test', lambda d: ['train', '--data', 'list', '--root', str(d)], '--data list needs --test-list'),
    ('list-missing-file', lambda d: lst(d, 'nofile.txt') + ['--out', str(d / 'l1')], 'nofile.txt'),
    ('list-unknown-label', lambda d: lst(d, 'unknown.txt') + ['--out', str(d / 'l2')], "unknown.txt:1: unknown label 'zebra'"),
    ('list-no-tab', lambda d: lst(d, 'notab.txt') + ['--out', str(d / 'l3')], 'notab.txt:1: expected'),
    ('list-missing-image', lambda d: lst(d, 'missing.txt') + ['--out', str(d / 'l4')], 'missing.txt:2'),
    ('list-corrupt-image', lambda d: lst(d, 'badimage.txt') + ['--out', str(d / 'l5')], 'badimage.txt:2'),
    ('list-is-dir', lambda d: lst(d, 'dir.pt') + ['--out', str(d / 'l6')], 'dir.pt'),
    ('labels-repeated', lambda d: lst(d, 'good.txt')[:6] + [str(d / 'repeated.txt')] + lst(d, 'good.txt')[7:] + ['--out', str(d / 'l7')], 'repeated.txt:3'),
    ('out-is-file', lambda d: ['train', '--out', str(d / 'afile')], "afile' is a file"),
    ('out-under-file', lambda d: ['train', '--out', str(d / 'afile' / 'run')], 'cannot be written'),
    ('out-unwritable', lambda d: ['train', '--out', '/proc/hsvlt-run'], "'/proc/hsvlt-run' cannot be written"),
    ('out-holds-run', lambda d: ['train', '--out', str(d / 'run')], 'already holds a run (model.pt): continue it with --resume'),
    ('resume-missing', lambda d: ['train', '--resume', str(d / 'none.pt'), '--out', str(d / 'r1')], "none.pt' does not exist"),
    ('resume-garbage', lambda d: ['train', '--resume', str(d / 'garbage.pt'), '--out', str(d / 'r2')], "garbage.pt' is not a readable checkpoint"),
    ('eval-missing', lambda d: ['eval', '--ckpt', str(d / 'none.pt')], "none.pt' does not exist"),
    ('eval-garbage', lambda d: ['eval', '--ckpt', str(d / 'garbage.pt')], "garbage.pt' is not a readable checkpoint"),
    ('predict-missing', lambda d: ['predict', '--ckpt', 'emoji-nano', str(d / 'nothere.png')], 'nothere.png'),
    ('predict-not-image', lambda d: ['predict', '--ckpt', 'emoji-nano', str(d / 'text.png')], 'text.png'),
    ('predict-corrupt', lambda d: ['predict', '--ckpt', 'emoji-nano', str(d / 'corrupt.png')], 'corrupt.png'),
    ('predict-top', lambda d: ['predict', '--ckpt', 'emoji-nano', '--top', '0', str(d / 'good.png')], "--top: '0' is not above 0"),
]


@pytest.mark.parametrize('argv,message', [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_before_any_step(argv, message, files, capsys, monkeypatch):
    def no_step(*a, **k): raise AssertionError('a training step ran')
    monkeypatch.setattr(train_mod, 'train_step', no_step)
    run = (files / 'run' / 'model.pt').read_bytes()
    try: code = main(argv(files))
    except SystemExit as e: code = e.code
    err = capsys.readouterr().err
    assert code == 2 and err.count('\n') == 1 and err.startswith('hsvlt: error: ') and message in err, err
    assert (files / 'run' / 'model.pt').read_bytes() == run and os.listdir(files / 'run') == ['model.pt']


def test_the_default_run_folder_never_replaces_a_run(tmp_path):
    base = tmp_path / 'runs' / 'digits-nano'
    assert free_run_dir(base) == base
    base.mkdir(parents=True); assert free_run_dir(base) == base           # an empty folder holds no run
    (base / 'metrics.json').write_text('{}')
    assert free_run_dir(base) == base.with_name('digits-nano-2')
    (tmp_path / 'runs' / 'digits-nano-2').mkdir(); (tmp_path / 'runs' / 'digits-nano-2' / 'model.pt').write_text('x')
    assert free_run_dir(base) == base.with_name('digits-nano-3')


def test_overwrite_replaces_the_run_and_cleans_a_crashed_save(tmp_path, capsys):
    out = tmp_path / 'run'
    assert main(['train', *SHORT, '--out', str(out)]) == 0
    first = (out / 'model.pt').read_bytes()
    (out / '.model.pt.x1y2.tmp').write_bytes(b'half')                       # what kill -9 during a save leaves
    assert main(['train', *SHORT, '--out', str(out)]) == 2                   # refused, left as it was
    assert (out / 'model.pt').read_bytes() == first
    assert main(['train', *SHORT, '--seed', '1', '--out', str(out), '--overwrite']) == 0
    assert (out / 'model.pt').read_bytes() != first and not list(out.glob('.*.tmp'))
    assert oct((out / 'model.pt').stat().st_mode & 0o777) == oct((out / 'metrics.json').stat().st_mode & 0o777)


@pytest.mark.parametrize('lr', ['1e6', '1e4'])
def test_divergence_stops_at_the_step_and_keeps_the_last_good_checkpoint(lr, tmp_path, capsys):
    out = tmp_path / 'run'
    assert main(['train', '--epochs', '1', '--steps-per-epoch', '3', '--batch-size', '8', '--test-size', '32', '--lr', '1e-3', '--out', str(out)]) == 0
    good = (out / 'model.pt').read_bytes()
    capsys.readouterr()
    code = main(['train', '--epochs', '3', '--steps-per-epoch', '40', '--batch-size', '8', '--test-size', '32', '--lr', lr, '--warmup', '0',
                 '--resume', str(out / 'model.pt')])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith('hsvlt: error: training diverged at step ') and 'at learning rate' in err and err.count('\n') == 1, err
    step = int(err.split('at step ')[1].split(':')[0])
    assert 40 < step <= 120 and f"the last good checkpoint {str(out / 'model.pt')!r} is kept" in err
    ckpt = load_checkpoint(out / 'model.pt')
    assert all(torch.isfinite(v).all() for v in ckpt['model'].values() if v.is_floating_point())
    assert ckpt['epoch'] == (step - 1) // 40                                # the epochs finished before the bad step
    if ckpt['epoch'] == 1: assert (out / 'model.pt').read_bytes() == good


def test_fit_never_writes_non_finite_weights(tmp_path):
    from torch.utils.data import TensorDataset
    model = HSVLT(HSVLTConfig.preset('nano', dims=(8, 16, 24, 32), text_dim=16), torch.randn(3, 16))
    data = TensorDataset(torch.randn(16, 3, 32, 32), (torch.rand(16, 3) < 0.5).float())
    cfg = train_mod.TrainConfig(epochs=2, batch_size=8, lr=1e6, warmup_images=0, clip=None, progress=False)
    with pytest.raises(train_mod.Diverged, match=r'training diverged at step \d+: loss nan at learning rate .*; no checkpoint was written'):
        train_mod.fit(model, data, None, cfg, out_dir=tmp_path / 'run')
    assert not (tmp_path / 'run' / 'model.pt').exists()


def test_an_error_from_a_dataloader_worker_keeps_the_file_and_line(files):
    from torch.utils.data import DataLoader
    from hsvlt_lite.cli import one_line
    from hsvlt_lite.data import ListFileDataset, eval_transform
    ds = ListFileDataset(files, files / 'badimage.txt', files / 'names.txt', eval_transform(64))
    with pytest.raises(ValueError) as e: list(DataLoader(ds, batch_size=1, num_workers=1))
    assert str(e.value).startswith('Caught ValueError in DataLoader worker')
    line = one_line(e.value)
    assert line.startswith(f"{files / 'badimage.txt'}:2: ") and 'corrupt.png' in line and '\n' not in line


def test_a_full_disk_is_one_line_and_keeps_the_last_good_checkpoint(tmp_path, capsys, monkeypatch):
    import errno
    from hsvlt_lite import checkpoints
    out = tmp_path / 'run'
    assert main(['train', *SHORT, '--out', str(out)]) == 0
    good = (out / 'model.pt').read_bytes()
    def full(obj, f): f.write(b'some bytes'); raise OSError(errno.ENOSPC, 'No space left on device')
    monkeypatch.setattr(checkpoints.torch, 'save', full)
    capsys.readouterr()
    assert main(['train', *SHORT, '--epochs', '2', '--resume', str(out / 'model.pt')]) == 2
    err = capsys.readouterr().err
    assert err == f"hsvlt: error: cannot write {str(out / 'model.pt')!r}: No space left on device\n"
    assert (out / 'model.pt').read_bytes() == good and not list(out.glob('.*.tmp'))
