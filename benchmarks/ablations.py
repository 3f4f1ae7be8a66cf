"""The paper's ablations in miniature and the peers, side by side at equal training time on a bundled data set.

    python benchmarks/ablations.py probe --data emoji                    # time every model's training step, fix its steps
    python benchmarks/ablations.py run --data emoji --model late --seed 1
    python benchmarks/ablations.py all --data emoji --seeds 0 1 2        # every model and seed not in the results yet

Models: the HSVLT-nano of `hsvlt train` (`hsvlt`) and its ablations, each trained by `hsvlt train` itself with one
switch changed (`no_csa`: --aggregation last, `late`: --interaction late, `topdown`: --aggregation topdown,
`feedback`: --visual-feedback, `onehot`: --embeddings onehot); and the peers of `peers.py` (`q2l`, `mldecoder`,
`convnext`), trained by the same loop (`fit`), data, batch, learning-rate schedule and label-frequency prior.

Equal time: `probe` times one training step of every model (making the batch, forward, backward, AdamW) in
interleaved rounds in one process, so that a busy machine slows them all alike; each model then gets the
number of steps that takes as long as `hsvlt train`'s default number takes the HSVLT model. The step counts
are stored with the results, so a run is reproducible and does not depend on how busy the machine is when
it runs. `run --steps N` fixes the count instead (equal steps, e.g. the README's digits table).

Results (per-epoch test mAP and seconds, final mAP, AP by object size and per class) go to
benchmarks/results/ablations.json, which nbs/30_evidence.ipynb reads.
"""
import argparse, json, os, statistics, sys, tempfile, time, torch
from pathlib import Path
from contextlib import redirect_stdout
from torch.utils.data import DataLoader
from hsvlt_lite.recipes import Recipe, BUNDLED, run_recipe, build_model, label_vectors, train_config
from hsvlt_lite.train import make_optimizer, make_loss, train_step
from peers import PEERS

RESULTS = Path(__file__).parent / 'results' / 'ablations.json'
SWITCHES = {'hsvlt': {}, 'no_csa': dict(aggregation='last'), 'late': dict(interaction='late'), 'topdown': dict(aggregation='topdown'),
            'feedback': dict(visual_feedback=True), 'onehot': dict(embeddings='onehot')}
MODELS = (*SWITCHES, *PEERS)


def recipe(data, model='hsvlt', seed=0, steps_per_epoch=None):
    "The `hsvlt train` recipe of a run (the peers train by the HSVLT model's)."
    return Recipe(data=data, seed=seed, steps_per_epoch=steps_per_epoch, **SWITCHES.get(model, {}))


def build(model, r, names):
    "A fresh model: what `hsvlt train` builds for resolved recipe `r`, or a peer."
    return PEERS[model](len(names)) if model in PEERS else build_model(r, label_vectors(r.embeddings, names))


def load():
    return json.loads(RESULTS.read_text()) if RESULTS.exists() else {}


def save(results):
    "Write the results atomically."
    RESULTS.parent.mkdir(exist_ok=True)
    tmp = RESULTS.with_suffix('.json.tmp')
    tmp.write_text(json.dumps(results, indent=1, sort_keys=True) + '\n')
    os.replace(tmp, RESULTS)


def probe(data, rounds=120, warmup=3):
    "Median seconds of one training step (batch making included) of every model, in interleaved rounds."
    r = recipe(data).resolved()
    names = list(BUNDLED[data][0].label_names)
    cfg = train_config(r, progress=False)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    steps = {}
    for m in MODELS:
        net = build(m, recipe(data, m).resolved(), names).to(memory_format=fmt)
        batches = iter(DataLoader(BUNDLED[data][0]('train', n=0, size=r.img_size).fresh(r.batch_size, None, seed=10_000), batch_size=None))
        opt, loss = make_optimizer(net, cfg), make_loss(cfg.loss)
        scaler = torch.amp.GradScaler('cpu', enabled=False)
        steps[m] = lambda net=net, batches=batches, opt=opt, loss=loss, scaler=scaler: train_step(net, next(batches), opt, loss, scaler, cfg, torch.device('cpu'))
    times = {m: [] for m in MODELS}
    for i in range(warmup + rounds):
        for m, f in steps.items():
            t = time.perf_counter(); f(); dt = time.perf_counter() - t
            if i >= warmup: times[m].append(dt)
    return {m: statistics.median(ts) for m, ts in times.items()}


def equal_time_steps(data, seconds):
    "Steps per epoch of each model so that all train as long as `hsvlt train`'s default run of the HSVLT model."
    d = BUNDLED[data][1]
    budget = d['epochs'] * d['steps_per_epoch'] * seconds['hsvlt']
    return {m: max(1, round(budget / seconds[m] / d['epochs'])) for m in seconds}


def run(data, model, seed, steps_per_epoch, log=sys.stdout):
    "Train one model by `run_recipe`, as `hsvlt train` does (the peers by the same loop, data, schedule and prior); its record."
    r = recipe(data, model, seed, steps_per_epoch)
    t0 = time.perf_counter()
    with redirect_stdout(log):
        if model in SWITCHES:
            out = Path(tempfile.mkdtemp(prefix=f'ablation-{data}-{model}-{seed}-'))
            m = run_recipe(r, out, progress=False)
        else:
            out, m = None, run_recipe(r, build=lambda names: PEERS[model](len(names)), progress=False)
    steps = r.resolved().steps_per_epoch * r.resolved().epochs
    command = r.command() if model in SWITCHES else f'python benchmarks/ablations.py run --data {data} --model {model} --seed {seed} --steps {steps}'
    return dict(mAP=m['mAP'], AP=m['AP'], AP_by_size=m['AP_by_size'], history=m['history'], params=m['params'], command=command,
                checkpoint=out and str(out / 'model.pt'), data=data, model=model, seed=seed, steps=steps,
                wall_seconds=time.perf_counter() - t0, train_seconds=m['timings']['train_seconds'])


def run_and_store(data, model, seed, steps=None):
    results = load()
    if steps is None:
        if data not in results.get('probe', {}): raise SystemExit(f"no step times for --data {data}: run `python benchmarks/ablations.py probe --data {data}` first")
        spe = results['probe'][data]['steps_per_epoch'][model]
    else: spe = max(1, round(steps / BUNDLED[data][1]['epochs']))
    record = run(data, model, seed, spe, log=sys.stderr)
    results = load()                                               # another run may have finished meanwhile
    results.setdefault('runs', {})[f'{data}/{model}/{seed}'] = record
    save(results)
    print(f"{data} {model} seed {seed}: mAP {record['mAP']:.4f}  AP by size " + ' '.join(f"{k} {v:.3f}" for k, v in record['AP_by_size'].items())
          + f"  {record['steps']} steps, {record['train_seconds']:.0f} s training")


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('what', choices=('probe', 'run', 'all'))
    p.add_argument('--data', choices=tuple(BUNDLED), default='emoji')
    p.add_argument('--model', choices=MODELS, default='hsvlt')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    p.add_argument('--models', choices=MODELS, nargs='+', default=list(MODELS))
    p.add_argument('--steps', type=int, help='training steps (default: the equal-time count from `probe`)')
    a = p.parse_args()
    if a.what == 'probe':
        seconds = probe(a.data)
        results = load()
        results.setdefault('probe', {})[a.data] = dict(step_seconds=seconds, steps_per_epoch=equal_time_steps(a.data, seconds))
        save(results)
        epochs = BUNDLED[a.data][1]['epochs']
        for m, s in seconds.items(): print(f"{m:10} {s * 1000:6.1f} ms/step  -> {results['probe'][a.data]['steps_per_epoch'][m] * epochs} steps")
    elif a.what == 'run': run_and_store(a.data, a.model, a.seed, a.steps)
    else:
        for seed in a.seeds:
            for m in a.models:
                if f'{a.data}/{m}/{seed}' not in load().get('runs', {}): run_and_store(a.data, m, seed, a.steps)
