"""Kill `hsvlt train` with SIGKILL at random moments, resume it each time, and check it ends where an uninterrupted run ends.

    OMP_NUM_THREADS=1 python benchmarks/crash_resume.py [--kills 8] [--seed 0]

One short digits run goes straight through. Then the same run is started, killed with `kill -9` after a random
time (anywhere: building the data, mid-epoch, mid-evaluation, mid-save), checked (the run folder's `model.pt`, if
there is one, must load), and started again with `--resume` (from scratch while no checkpoint exists yet) until
it finishes; then another such run, until `--kills` kills have been made. Every finished run's weights,
optimiser, EMA, schedule and history must equal the straight run's bit for bit. Prints a line per kill and run.
"""
import argparse, random, subprocess, sys, tempfile, time
from pathlib import Path
import torch
from hsvlt_lite.checkpoints import RUN_LOCK, TMP_PREFIX

ARGS = ['--epochs', '4', '--steps-per-epoch', '30', '--batch-size', '16', '--test-size', '128', '--ema']


def train(out, resume=None):
    cmd = [str(Path(sys.executable).with_name('hsvlt')), 'train', *ARGS, '--out', str(out)] + (['--resume', str(resume)] if resume else [])
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def same(a, b):
    "Bitwise equality of two nested checkpoint values."
    if isinstance(a, torch.Tensor): return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict): return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)): return isinstance(b, (list, tuple)) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--kills', type=int, default=8)
    p.add_argument('--seed', type=int, default=0)
    a = p.parse_args()
    rng, tmp = random.Random(a.seed), Path(tempfile.mkdtemp())
    t0 = time.perf_counter()
    straight = train(tmp / 'straight')
    assert straight.wait() == 0, straight.stderr.read()
    seconds = time.perf_counter() - t0
    print(f"straight run: {seconds:.0f} s")
    kills, attempt, verdicts = 0, 0, []
    while kills < a.kills:                              # an attempt: one run, killed and resumed until it finishes
        attempt += 1
        out, starts = tmp / f'crashed{attempt}', 0
        while True:
            ckpt = out / 'model.pt'
            proc, starts = train(out, ckpt if ckpt.exists() else None), starts + 1
            wait = rng.uniform(1, seconds)
            try: code = proc.wait(timeout=wait if kills < a.kills else None)
            except subprocess.TimeoutExpired:
                proc.kill(); proc.wait(); kills += 1
                epoch = torch.load(ckpt, weights_only=True)['epoch'] if ckpt.exists() else None
                left = sorted(p.name for p in out.glob(TMP_PREFIX + '*')) + sorted(p.name for p in out.glob(RUN_LOCK)) if out.exists() else []
                print(f"kill {kills} (run {attempt}) after {wait:.1f} s: model.pt "
                      f"{'loads, epoch ' + str(epoch) if epoch is not None else 'not written yet'}{', left: ' + ', '.join(left) if left else ''}", flush=True)
                continue
            if code != 0: raise SystemExit(f"run {attempt}, start {starts} failed: {proc.stderr.read()}")
            break
        ref, got = (torch.load(d / 'model.pt', weights_only=True) for d in (tmp / 'straight', out))
        ok = all(same(got[k], ref[k]) for k in ('model', 'optimizer', 'ema', 'schedule', 'epoch'))
        ok = ok and same(*[[{x: v for x, v in h.items() if x not in ('seconds', 'images_per_s')} for h in c['history']] for c in (got, ref)])
        verdicts.append(ok)
        print(f"run {attempt}: {starts} starts, bitwise equal to the straight run (weights, optimiser, EMA, schedule, history): {ok}", flush=True)
    print(f"{kills} kills in {attempt} runs; every finished run equal to the straight one: {all(verdicts)}")
    if not all(verdicts): raise SystemExit(1)


if __name__ == '__main__': main()
