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
import argparse, contextlib, json, os, statistics, sys, tempfile, time, torch
from pathlib import Path
from torch.utils.data import DataLoader
from hsvlt_lite.cli import BUNDLED, build_parser, resolve, make_test, make_train, make_model, label_vectors, set_prior, train_targets, train_config, score, main
from hsvlt_lite.metrics import mean_average_precision
from hsvlt_lite.train import fit, evaluate, seed_everything, make_optimizer, make_loss, train_step
from peers import PEERS

RESULTS = Path(__file__).parent / 'results' / 'ablations.json'
SWITCHES = {'hsvlt': [], 'no_csa': ['--aggregation', 'last'], 'late': ['--interaction', 'late'], 'topdown': ['--aggregation', 'topdown'],
            'feedback': ['--visual-feedback'], 'onehot': ['--embeddings', 'onehot']}
MODELS = (*SWITCHES, *PEERS)


def cli_args(data, model='hsvlt', seed=0, steps_per_epoch=None):
    "The resolved `hsvlt train` arguments of a run (the peers take the HSVLT model's)."
    argv = ['train', '--data', data, '--seed', str(seed), *SWITCHES.get(model, [])]
    if steps_per_epoch: argv += ['--steps-per-epoch', str(steps_per_epoch)]
    return argv, resolve(build_parser().parse_args(argv))


def build(model, args, names):
    "A fresh model: what `hsvlt train` builds for these arguments, or a peer."
    return PEERS[model](len(names)) if model in PEERS else make_model(args, label_vectors(args.embeddings, names))


def head_bias(model): return model.head.bias if hasattr(model, 'head') else model.aggregate.head.bias


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
    _, args = cli_args(data)
    names = list(BUNDLED[data][0].label_names)
    cfg = train_config(args, progress=False)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    steps = {}
    for m in MODELS:
        _, a = cli_args(data, m)
        net = build(m, a, names).to(memory_format=fmt)
        batches = iter(DataLoader(BUNDLED[data][0]('train', n=0, size=args.img_size).fresh(args.batch_size, None, seed=10_000), batch_size=None))
        opt, loss = make_optimizer(net, cfg), make_loss(cfg.loss)
        scaler = torch.amp.GradScaler('cpu', enabled=False)
        steps[m] = lambda net=net, batches=batches, opt=opt, loss=loss, scaler=scaler: train_step(net, next(batches), opt, loss, scaler, cfg, torch.device('cpu'))
    times = {m: [] for m in MODELS}
    for r in range(warmup + rounds):
        for m, f in steps.items():
            t = time.perf_counter(); f(); dt = time.perf_counter() - t
            if r >= warmup: times[m].append(dt)
    return {m: statistics.median(ts) for m, ts in times.items()}


def equal_time_steps(data, seconds):
    "Steps per epoch of each model so that all train as long as `hsvlt train`'s default run of the HSVLT model."
    d = BUNDLED[data][1]
    budget = d['epochs'] * d['steps_per_epoch'] * seconds['hsvlt']
    return {m: max(1, round(budget / seconds[m] / d['epochs'])) for m in seconds}


def run(data, model, seed, steps_per_epoch, log=sys.stdout):
    "Train one model; its record (history, final scores, timing)."
    argv, args = cli_args(data, model, seed, steps_per_epoch)
    t0 = time.perf_counter()
    if model in SWITCHES:                                          # `hsvlt train` itself
        out = Path(tempfile.mkdtemp(prefix=f'ablation-{data}-{model}-{seed}-'))
        with contextlib.redirect_stdout(log): code = main(argv + ['--out', str(out)])
        if code: raise SystemExit(f"hsvlt {' '.join(argv)} failed")
        m = json.loads((out / 'metrics.json').read_text())
        record = dict(mAP=m['mAP'], AP=m['AP'], AP_by_size=m['AP_by_size'], history=m['history'], checkpoint=str(out / 'model.pt'),
                      params=sum(p.numel() for p in build(model, args, m['label_names']).parameters()), command='hsvlt ' + ' '.join(argv))
    else:                                                          # a peer, by the same loop and recipe
        test = make_test(args)
        names = list(test.label_names)
        train_data = make_train(args)
        seed_everything(seed)
        net = build(model, args, names)
        set_prior(head_bias(net), train_targets(args, train_data))
        history = fit(net, train_data, test, train_config(args, progress=False), label_names=names)
        scores, targets = evaluate(net, test, args.batch_size, channels_last=args.channels_last)
        s = score(scores, targets, names)
        record = dict(mAP=s['mAP'], AP=s['AP'], AP_by_size={b: mean_average_precision(scores, t) for b, t in test.targets_by_scale().items()},
                      history=[{k: v for k, v in h.items() if k != 'losses'} for h in history], params=sum(p.numel() for p in net.parameters()),
                      command=f'python benchmarks/ablations.py run --data {data} --model {model} --seed {seed} --steps {args.steps_per_epoch * args.epochs}')
    record.update(data=data, model=model, seed=seed, steps=args.steps_per_epoch * args.epochs, wall_seconds=time.perf_counter() - t0,
                  train_seconds=sum(h['seconds'] for h in record['history']))
    return record


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
        for m, s in seconds.items(): print(f"{m:10} {s * 1000:6.1f} ms/step  -> {results['probe'][a.data]['steps_per_epoch'][m] * 10} steps")
    elif a.what == 'run': run_and_store(a.data, a.model, a.seed, a.steps)
    else:
        for seed in a.seeds:
            for m in a.models:
                if f'{a.data}/{m}/{seed}' not in load().get('runs', {}): run_and_store(a.data, m, seed, a.steps)
