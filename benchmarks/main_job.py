"""Where the main job's time goes (`hsvlt train` with no options: HSVLT-nano on the bundled digits), and what it costs on
the slow kind of machine (a 2-core AVX2-only CPU) without owning one.

    python benchmarks/main_job.py profile [--steps-per-epoch N]   # the real job, every phase timed
    python benchmarks/main_job.py steps [--rounds 30] [--low]     # one step (full size, or half side) split into its parts
    python benchmarks/main_job.py predict [--rounds 40] [--pairs 2]   # the job's seconds on the slow kind, from step ratios (stored)
    python benchmarks/main_job.py record RUN...                   # store what `hsvlt train` runs wrote in results/main_job.json

`predict` times the main job's training steps (fresh canvases drawn, forward, backward, AdamW; full-size ones and, for
the first part of the job, half-side ones, weighted by their counts) interleaved with a fixed
reference step in the same process, torchvision's ConvNeXt-T at batch 16 and 64² (forward and backward), and the job's work
outside training (canvases, per-epoch scoring, thresholds, checkpoints, the picture) in reference steps, on AVX2 kernels
(`ATEN_CPU_CAPABILITY=avx2`, oneDNN held to AVX2, set before torch loads; `--native` keeps the machine's own), the kernels
the slow kind runs. It does the same for the commit whose job was timed on the slow kind (`ANCHOR`, checked out into a
temporary git worktree), alternating fresh processes, since the ratios drift with how busy a shared machine is (0.383 to
0.443 for the anchor's step in one afternoon). The slow kind's seconds are then its measured ones at the anchor times how
much the ratios moved: on a quiet 2-core AMD EPYC with AVX2 only, the anchor's job took 0.146-0.160 s a training step
(epochs of 850 steps in 124.3-135.8 s), 68 s outside training and 705 s wall.
"""
import argparse, os, sys

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument('what', choices=['profile', 'steps', 'predict', 'measure', 'record'])
p.add_argument('runs', nargs='*', help='record: run folders written by hsvlt train')
p.add_argument('--rounds', type=int, default=40, help='steps: timed steps; predict: interleaved rounds')
p.add_argument('--steps-per-epoch', type=int, help="profile: a shorter job (default: the job's own)")
p.add_argument('--pairs', type=int, default=2, help='predict: measurements of this code and of the anchor commit, alternated')
p.add_argument('--native', action='store_true', help="predict: the machine's own kernels instead of AVX2")
p.add_argument('--low', action='store_true', help='steps: a half-side step of the first part of the job instead of a full-size one')
args = p.parse_args()
if args.what in ('predict', 'measure') and not args.native:
    os.environ.setdefault('ATEN_CPU_CAPABILITY', 'avx2')
    os.environ.setdefault('ONEDNN_MAX_CPU_ISA', 'AVX2')

import dataclasses, json, statistics, subprocess, tempfile, time, torch, torchvision
from collections import defaultdict
from pathlib import Path
import hsvlt_lite.recipes as recipes, hsvlt_lite.train as train
from hsvlt_lite.recipes import Recipe, run_recipe, build_model, label_vectors, train_set, train_config
from hsvlt_lite.train import make_optimizer, make_loss, train_step
from common import interleaved_medians

ANCHOR = '0a3efa5'                  # the commit whose main job was timed on the slow kind:
SLOW_STEP_S = (0.146, 0.160)        # its training step there (epochs of 850 steps in 124.3-135.8 s),
SLOW_OUTSIDE_S = 68.                # its seconds outside training,
SLOW_WALL_S = 705                   # and the whole command
MAIN = Recipe()


class Phases:
    "Seconds spent in named functions of the library while the job runs (wrapped in place, outermost call only)."
    def __init__(self): self.seconds, self.calls, self.depth = defaultdict(float), defaultdict(int), 0

    def wrap(self, module, name, label=None):
        fn = getattr(module, name)
        def timed(*a, **kw):
            if self.depth: return fn(*a, **kw)
            self.depth += 1
            t = time.perf_counter()
            try: return fn(*a, **kw)
            finally:
                self.depth -= 1
                self.seconds[label or name] += time.perf_counter() - t; self.calls[label or name] += 1
        setattr(module, name, timed)


def profile():
    "The real main job, its phases timed by wrapping the library functions it calls."
    ph = Phases()
    for mod, name, label in [(recipes, 'test_set', 'test canvases (2,000)'), (recipes, 'validation_set', 'validation canvases (2,000)'),
                             (recipes, 'prior_targets', 'prior canvases (1,024)'), (recipes, 'label_vectors', 'label vectors'),
                             (recipes, 'build_model', 'build model'), (train, 'train_step', 'train steps'),
                             (train, 'evaluate', 'scoring per epoch'), (recipes, 'evaluate', 'final scoring (test, validation)'),
                             (train, 'save_checkpoint', 'checkpoints'), (recipes, 'load_model', 'reload model'),
                             (recipes, 'best_f1_thresholds', 'thresholds'), (recipes, 'set_thresholds', 'write thresholds'),
                             (recipes, 'plot_attention', 'attention picture'), (recipes, 'save_figure', 'save picture'),
                             (recipes, 'write_json', 'metrics.json')]:
        ph.wrap(mod, name, label)
    from hsvlt_lite.scenes import FreshCanvases
    draw = FreshCanvases.__iter__
    def timed_iter(self):
        it = draw(self)
        while True:
            t = time.perf_counter()
            try: batch = next(it)
            except StopIteration: return
            finally: ph.seconds['draw training canvases'] += time.perf_counter() - t
            yield batch
    FreshCanvases.__iter__ = timed_iter
    r = MAIN if args.steps_per_epoch is None else Recipe(steps_per_epoch=args.steps_per_epoch)
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        m = run_recipe(r, out=Path(d) / 'run', progress=False)
        wall = time.perf_counter() - t
    known = sum(ph.seconds.values())
    print(f"\nmain job ({r.command()}), {torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()} kernels: "
          f"{wall:.1f} s in run_recipe, mAP {m['mAP']:.4f}")
    steps = r.resolved().steps_per_epoch * r.resolved().epochs
    print(f"{'phase':34} {'seconds':>8} {'share':>6} {'calls':>6}")
    for k, v in sorted(ph.seconds.items(), key=lambda kv: -kv[1]):
        print(f"{k:34} {v:8.1f} {v / wall:6.1%} {ph.calls.get(k, steps):6}")
    print(f"{'rest (the loop, logging)':34} {wall - known:8.1f} {(wall - known) / wall:6.1%}")
    train_s = ph.seconds['train steps'] + ph.seconds['draw training canvases']
    print(f"training {train_s:.1f} s ({train_s / steps * 1000:.1f} ms a step with drawing); outside training {wall - train_s:.1f} s")


def low_res_steps(r):
    "How many of resolved recipe `r`'s steps its training data draws at half the side (0 for a library without them)."
    return getattr(train_set(r).dataset, 'low_res_steps', 0)


def batches(r, low):
    "The main job's fresh training batches: those of its first steps, at half the side (`low`), or full-size ones of its last epoch."
    loader = train_set(r if low or not hasattr(r, 'low_res') else dataclasses.replace(r, low_res=0.))   # a library without low_res: all full size
    if not low: loader.dataset.set_epoch(r.epochs - 1)
    return iter(loader)


def main_job(low=False):
    "The main job's model (channels-last), training config, AdamW, loss and a stream of its fresh training batches (`batches`)."
    r = MAIN.resolved()
    torch.manual_seed(0)
    model = build_model(r, label_vectors(r.embeddings, recipes.test_set(r).label_names)).to(memory_format=torch.channels_last)
    cfg = train_config(r, progress=False)
    return model, cfg, make_optimizer(model, cfg), make_loss(cfg.loss), batches(r, low)


def steps():
    "One full-size training step of the main job (`--low`: a half-side one) split into drawing, forward, backward (with the loss) and the optimiser."
    model, cfg, opt, loss_fn, it = main_job(args.low)
    parts = defaultdict(list)
    for i in range(args.rounds + 3):
        t0 = time.perf_counter(); x, y = next(it)
        x = x.to(memory_format=torch.channels_last)
        t1 = time.perf_counter(); loss = loss_fn(model(x), y)
        t2 = time.perf_counter(); opt.zero_grad(set_to_none=True); loss.backward()
        t3 = time.perf_counter(); torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        t4 = time.perf_counter(); opt.step()
        t5 = time.perf_counter()
        if i < 3: continue
        for k, a, b in [('draw', t0, t1), ('forward + loss', t1, t2), ('backward', t2, t3), ('clip', t3, t4), ('AdamW', t4, t5)]:
            parts[k].append(b - a)
    med = {k: statistics.median(v) for k, v in parts.items()}
    total = sum(med.values())
    print(f"main job step ({'half' if args.low else 'full'} side), {torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()} kernels, median of {args.rounds}:")
    for k, v in med.items(): print(f"  {k:16} {v * 1000:7.1f} ms {v / total:6.1%}")
    print(f"  {'sum':16} {total * 1000:7.1f} ms")


def main_and_reference():
    "The main job's training steps (drawing included), full-size and, where it has them, half-side, and the reference step, as callables."
    model, cfg, opt, loss_fn, it = main_job()
    r = MAIN.resolved()
    low = batches(r, True) if low_res_steps(r) else None
    scaler, cpu = torch.amp.GradScaler('cpu', enabled=False), torch.device('cpu')
    for g in opt.param_groups: g['lr'] = cfg.lr / 10
    ref = torchvision.models.convnext_tiny(weights=None)
    x = torch.randn(16, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    def ref_step():
        ref.zero_grad(set_to_none=True)
        ref(x).square().mean().backward()
    fns = dict(main=lambda: train_step(model, next(it), opt, loss_fn, scaler, cfg, cpu), reference=ref_step)
    return fns | (dict(main_low=lambda: train_step(model, next(low), opt, loss_fn, scaler, cfg, cpu)) if low is not None else {})


def outside_training():
    "Seconds of the main job outside its training steps: the job run with one step an epoch, less those steps."
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        hist = run_recipe(Recipe(steps_per_epoch=1), out=Path(d) / 'run', progress=False)['history']
        return time.perf_counter() - t - sum(h['seconds'] for h in hist)


def measure():
    "This process's code: the main job's mean step (full-size and half-side steps weighted by their counts) and outside-training time against the reference step; one JSON line."
    fns = main_and_reference()
    med, _ = interleaved_medians(fns, args.rounds, warmup=3)
    outside = outside_training()
    r = MAIN.resolved()
    steps, low = r.epochs * r.steps_per_epoch, low_res_steps(r)
    mean = ((steps - low) * med['main'] + low * med.get('main_low', 0.)) / steps
    print(json.dumps(dict(main=mean, full=med['main'], half=med.get('main_low'), reference=med['reference'], outside=outside, steps=steps,
                          low_steps=low, kernels=torch.backends.cpu.get_cpu_capability(), threads=torch.get_num_threads())))


def measured(code=None):
    "`measure` in a fresh process, on this tree's library or on a checkout at `code`."
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [code, os.environ.get('PYTHONPATH')])))
    cmd = [sys.executable, __file__, 'measure', '--rounds', str(args.rounds)] + (['--native'] if args.native else [])
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    m = json.loads(out.strip().splitlines()[-1])
    return dict(m, ratio=m['main'] / m['reference'], full_ratio=m['full'] / m['reference'], outside_refs=m['outside'] / m['reference'])


def predict():
    "Alternate this code and the calibration commit, each in a fresh process; scale the slow kind's measured seconds by the ratios."
    with tempfile.TemporaryDirectory() as d:
        anchor = Path(d) / 'anchor'
        subprocess.run(['git', 'worktree', 'add', '--detach', str(anchor), ANCHOR], cwd=Path(__file__).parent, check=True, capture_output=True)
        try: runs = [(measured(), measured(str(anchor))) for _ in range(args.pairs)]
        finally: subprocess.run(['git', 'worktree', 'remove', '--force', str(anchor)], cwd=Path(__file__).parent, check=True, capture_output=True)
    now, then = zip(*runs)
    med = lambda ms, k: statistics.median(m[k] for m in ms)
    ratio, outside = med(now, 'ratio') / med(then, 'ratio'), med(now, 'outside_refs') / med(then, 'outside_refs')
    steps = now[0]['steps']
    print(f"{now[0]['threads']} threads, {now[0]['kernels']} kernels; {args.pairs} pairs of fresh processes, this code and {ANCHOR}, "
          f"each a median of {args.rounds} rounds interleaved with the reference step (ConvNeXt-T, b=16, 64², forward + backward):")
    row = lambda ms, key, scale, fmt: ' '.join(format(m[key] * scale, fmt) for m in ms)
    for name, ms in (('this code', now), (ANCHOR, then)):
        half = f" (full size {row(ms, 'full', 1000, '.0f')} ms, half side {row(ms, 'half', 1000, '.0f')} ms, {ms[0]['low_steps']} of its steps)" if ms[0].get('low_steps') else ''
        print(f"  {name:10} step {row(ms, 'main', 1000, '.0f')} ms{half}, reference {row(ms, 'reference', 1000, '.0f')} ms, ratio {row(ms, 'ratio', 1, '.3f')}, "
              f"outside training {row(ms, 'outside_refs', 1, '.0f')} reference steps, {ms[0]['steps']} steps")
    full = med(now, 'full_ratio') / med(then, 'ratio')               # the same steps all at full size (--low-res 0)
    train_s, full_s = ([SLOW_STEP_S[0] * x * steps, SLOW_STEP_S[1] * x * steps] for x in (ratio, full))
    print(f"a step costs {ratio:.3f}x the {ANCHOR} step on average ({full:.3f}x at full size), the work outside training {outside:.3f}x")
    for what, t in (('', train_s), (' all at full size', full_s)):
        print(f"slow kind (2-core AVX2-only CPU): {steps} steps{what} {t[0]:.0f}-{t[1]:.0f} s of training + {SLOW_OUTSIDE_S * outside:.0f} s outside "
              f"= {t[0] + SLOW_OUTSIDE_S * outside:.0f}-{t[1] + SLOW_OUTSIDE_S * outside:.0f} s wall (at {ANCHOR}: {SLOW_WALL_S} s)")
    if args.native: return
    store(dict(predict=dict(steps=steps, step_ratio=ratio, outside_ratio=outside, train_s=train_s, outside_s=SLOW_OUTSIDE_S * outside,
                            wall_s=[t + SLOW_OUTSIDE_S * outside for t in train_s], full_size_wall_s=[t + SLOW_OUTSIDE_S * outside for t in full_s],
                            anchor=ANCHOR, anchor_wall_s=SLOW_WALL_S)))


RESULTS = Path(__file__).parent / 'results' / 'main_job.json'

def store(entries):
    "Merge `entries` into results/main_job.json."
    res = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    RESULTS.write_text(json.dumps(res | entries, indent=1) + '\n')


def record():
    "Store the scores `hsvlt train` runs wrote (their metrics.json) in results/main_job.json, each under its command."
    for run in map(Path, args.runs):
        m = json.loads((run / 'metrics.json').read_text())
        store({m['command']: dict(mAP=m['mAP'], AP_by_size=m['AP_by_size'], steps=m['history'][-1]['step'],
                                  history=[dict(step=h['step'], mAP=h['mAP']) for h in m['history']])})
        print(f"{m['command']}: mAP {m['mAP']:.4f}")


{'profile': profile, 'steps': steps, 'predict': predict, 'measure': measure, 'record': record}[args.what]()
