"""Bad input and a hostile environment, as a table: every case ends with one line `hsvlt: error: ...` that names what was
wrong, exit code 2, before any training step; a run folder that holds a run is never replaced silently, nor shared by
two runs; only the project's own temporary files are ever removed; a diverging run stops at once and leaves no
non-finite weights behind."""
import json, os, subprocess, sys, time, pytest, torch
from pathlib import Path
from PIL import Image
from hsvlt_lite import train as train_mod
from hsvlt_lite.cli import main
from hsvlt_lite.checkpoints import save_checkpoint, load_checkpoint, claim_free_run_dir, RUN_LOCK, TMP_PREFIX
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
