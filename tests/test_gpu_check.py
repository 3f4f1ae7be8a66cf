"benchmarks/gpu_check.py on the CPU: the parts a CPU can run are `ok` with figures checked here against torch's own BCE; every CUDA part says it was skipped."
import json, math, os, subprocess, sys
import pytest, torch, torch.nn.functional as F
from torch.testing import assert_close
from conftest import ROOT
sys.path.insert(0, str(ROOT / 'benchmarks'))
import gpu_check

STEPS, BATCH, SIZE, SEED, TORCHRUN_STEPS = 6, 4, 64, 0, 2
TRAIN_OK = ['train fp32 eager', 'train bf16 eager', 'train fp32 channels-last', 'train bf16 channels-last']
CUDA_ONLY = ['fp32 logits nano 64²: CUDA vs CPU', 'fp32 logits small 448²: CUDA vs CPU',
             'train fp16 eager', 'train fp16 channels-last', 'train fp16 compile + channels-last']
COMPILE = ['train fp32 compile + channels-last', 'train bf16 compile + channels-last']
TORCHRUN, SPEED = 'torchrun ×1 hsvlt train (gloo)', 'images/s nano 64² b2: bf16 vs fp32'


@pytest.fixture(scope='module')
def cpu_run(tmp_path_factory):
    "The script run on the CPU with small settings: its exit code, stdout and JSON rows by name."
    out = tmp_path_factory.mktemp('gpu_check') / 'rows.json'
    cmd = [sys.executable, str(ROOT / 'benchmarks' / 'gpu_check.py'), '--device', 'cpu', '--steps', str(STEPS), '--batch', str(BATCH),
           '--size', str(SIZE), '--seed', str(SEED), '--torchrun-steps', str(TORCHRUN_STEPS), '--test-size', '32',
           '--speed-preset', 'nano', '--speed-size', '64', '--speed-batch', '2', '--speed-repeats', '2', '--json', str(out)]
    run = subprocess.run(cmd, env={**os.environ, 'OMP_NUM_THREADS': '1'}, capture_output=True, text=True, timeout=600, cwd=out.parent)
    rows = {r['name']: r for r in json.loads(out.read_text())['rows']} if out.exists() else {}
    return run, rows


def test_cpu_run_exits_0_and_prints_every_row(cpu_run):
    run, rows = cpu_run
    assert run.returncode == 0, run.stderr[-3000:]
    assert list(rows) == CUDA_ONLY[:2] + ['train fp32 eager', 'train bf16 eager', 'train fp16 eager', 'train fp32 channels-last',
                                          'train bf16 channels-last', 'train fp16 channels-last', COMPILE[0], COMPILE[1], CUDA_ONLY[-1], TORCHRUN, SPEED]
    table = [l for l in run.stdout.splitlines() if l.startswith('| ')]
    assert table[0] == '| check | device | status | figure | seconds |'
    assert table[1:] == [f"| {r['name']} | cpu | {r['status']} | {r['figure']} | {r['seconds']:.1f} |" for r in rows.values()]


def test_cpu_training_rows_are_ok_and_their_losses_honest(cpu_run):
    "Each loss sequence is finite and falls; its first loss is torch's BCE of the same model on the same batch; bf16 really ran in bf16."
    _, rows = cpu_run
    x, y = gpu_check.digits_batch(BATCH, SIZE, SEED)
    with torch.no_grad(): first = F.binary_cross_entropy_with_logits(gpu_check.nano(SEED).train()(x), y).item()
    losses = {}
    for name in TRAIN_OK:
        row = rows[name]
        assert row['status'] == 'ok', (name, row['status'])
        losses[name] = l = row['detail']['losses']
        assert len(l) == STEPS and all(map(math.isfinite, l)) and l[-1] < l[0], (name, l)
        assert row['figure'] == f'loss {l[0]:.3f} → {l[-1]:.3f} in {STEPS} steps'
        assert l[0] == pytest.approx(first, abs=1e-5 if 'fp32' in name else 2e-2), name
    assert_close(losses['train fp32 channels-last'], losses['train fp32 eager'], rtol=1e-4, atol=1e-5)
    assert losses['train bf16 eager'] != losses['train fp32 eager']          # autocast was on
    assert_close(losses['train bf16 eager'][0], losses['train fp32 eager'][0], rtol=0, atol=2e-2)


def test_cuda_rows_say_skipped_for_want_of_cuda(cpu_run):
    _, rows = cpu_run
    for name in CUDA_ONLY:
        assert rows[name]['status'].startswith('skipped: ') and 'CUDA' in rows[name]['status'], (name, rows[name]['status'])
        assert rows[name]['figure'] == '' and rows[name]['detail'] == {}
    for name in COMPILE: assert rows[name]['status'].startswith('skipped: ') and '--cpu-compile' in rows[name]['status'], name


def test_torchrun_row_trained_through_the_command(cpu_run):
    _, rows = cpu_run
    row = rows[TORCHRUN]
    assert row['status'] == 'ok', row['status']
    d = row['detail']
    assert d['processes'] == 1 and d['device'] == 'cpu' and d['step'] == TORCHRUN_STEPS and 'hsvlt train' in d['command']
    assert len(d['losses']) == TORCHRUN_STEPS and all(map(math.isfinite, d['losses'])) and 0 <= d['mAP'] <= 1
    assert row['figure'] == f"loss {d['losses'][0]:.3f} → {d['losses'][-1]:.3f} in {TORCHRUN_STEPS} steps, test mAP {d['mAP']:.3f}"


def test_speed_row_runs_when_made_small(cpu_run):
    _, rows = cpu_run
    row = rows[SPEED]
    ips = row['detail']['images_per_s']
    assert row['status'] == 'ok' and ips['fp32'] > 0 and ips['bf16'] > 0
    assert row['detail']['ratio'] == pytest.approx(ips['bf16'] / ips['fp32'])


@pytest.mark.parametrize('losses, problem', [([0.7, 0.6, 0.7], 'the loss did not fall'), ([0.7, math.nan, 0.1], 'a loss is not finite'),
                                             ([0.9, 0.5, 0.1], "is not the CPU fp32 forward's 0.7000")])
def test_training_check_fails_on_a_bad_loss(monkeypatch, losses, problem):
    monkeypatch.setattr(gpu_check, 'fit', lambda *a, **kw: [dict(losses=losses)])
    _, _, found = gpu_check.training(torch.device('cpu'), 'none', (torch.zeros(2, 3, 64, 64), torch.zeros(2, 10)), 3, SEED, 0.7)
    assert found is not None and problem in found


def test_a_failed_check_makes_exit_code_1_and_a_fail_row(monkeypatch, tmp_path):
    def skip(): raise gpu_check.Skip('no CUDA here')
    def crash(): raise RuntimeError('CUDA error: an illegal memory access\nmore')
    fake = [('fine', lambda: ('1.0', {}, None)), ('wrong', lambda: ('2.0', {}, 'loss rose')), ('cannot', skip), ('crash', crash)]
    monkeypatch.setattr(gpu_check, 'checks', lambda args, device: fake)
    assert gpu_check.main(['--device', 'cpu', '--json', str(tmp_path / 'rows.json')]) == 1
    rows = json.loads((tmp_path / 'rows.json').read_text())['rows']
    assert [r['status'] for r in rows] == ['ok', 'FAIL: loss rose', 'skipped: no CUDA here', 'FAIL: RuntimeError: CUDA error: an illegal memory access']
    monkeypatch.setattr(gpu_check, 'checks', lambda args, device: fake[:1] + fake[2:3])
    assert gpu_check.main(['--device', 'cpu']) == 0
