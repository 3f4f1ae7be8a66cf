"""The paper's ablations in miniature and the peers, side by side at equal training time on a bundled data set.

    python benchmarks/ablations.py probe --data emoji                    # time every model's training step, fix its steps
    python benchmarks/ablations.py run --data emoji --model late --seed 1
    python benchmarks/ablations.py all --data emoji --seeds 0 1 2        # every model and seed not in the results yet
    python benchmarks/ablations.py probe --data emoji --models hsvlt evidence   # step counts of new models only
    python benchmarks/ablations.py record --data emoji --model evidence --seed 0 --run runs/screen/ev   # a finished `hsvlt train` run
    python benchmarks/ablations.py localise --data emoji --model hsvlt --seed 0 --checkpoint emoji-nano  # a stored run's checkpoint
    python benchmarks/ablations.py rerun --data emoji --model late --seed 0   # a stored run trained again, for its report

Models: the HSVLT-nano of `hsvlt train` (`hsvlt`) and its ablations, each trained by `hsvlt train` itself with one
switch changed (`no_csa`: --aggregation last, `late`: --interaction late, `topdown`: --aggregation topdown,
`feedback`: --visual-feedback, `onehot`: --embeddings onehot); and the peers of `peers.py` (`q2l`, `mldecoder`,
`convnext`), trained by the same loop (`fit`), data, batch, learning-rate schedule and label-frequency prior.
IVLA's attention extensions (`02_ivla`, all with a per-stage loss of weight 1): `qk_stage` (QK-normalisation),
`evidence` (and match evidence), `floor` (a temperature floor of 10), `evidence_floor` (both); `mil` (QK-normalisation
with the per-stage loss on each label's best patch match instead of its features); `compete` (labels compete for the
patches, a softmax over the labels first, with the per-stage loss); `heads2` (two IVLA heads instead of one, nothing else).

Equal time: `probe` times one training step of every model (making the batch, forward, backward, AdamW) in
interleaved rounds in one process, so that a busy machine slows them all alike; each model then gets the
number of steps that takes as long as `hsvlt train`'s default number takes the HSVLT model. The step counts
are stored with the results, so a run is reproducible and does not depend on how busy the machine is when
it runs. `run --steps N` fixes the count instead (equal steps, e.g. the README's digits table).

`probe --models` times only the models named, beside `hsvlt` in the same rounds, and keeps the step counts of the
others: a model added later is set against the stored budget without re-timing the contest.

Results (per-epoch test mAP and seconds, final mAP, AP by object size and per class, and on the emoji scenes the
localisation report of `08_localisation` for every model with label attention) go to
benchmarks/results/ablations.json, which nbs/30_evidence.ipynb reads. A run at another step count than the
equal-time one (`--steps`, or `record` of a default `hsvlt train` run) is a screening run, kept under 'screen'.
The contest's runs kept no trained model; `rerun` trains one again with its stored seed and step count and keeps
that record, report included, under 'reruns' (on another CPU its mAP differs a little from the stored run's, which
stays as it is).
"""
import argparse, json, os, statistics, sys, tempfile, time, torch
from pathlib import Path
from contextlib import redirect_stdout
from torch.utils.data import DataLoader
from hsvlt_lite.recipes import Recipe, BUNDLED, run_recipe, build_model, label_vectors, train_config, test_set, sized
from hsvlt_lite.train import make_optimizer, make_loss, train_step, evaluate
from hsvlt_lite.metrics import mean_average_precision
from hsvlt_lite.checkpoints import load_model
from hsvlt_lite.localisation import emoji_localisation
from peers import PEERS

RESULTS = Path(__file__).parent / 'results' / 'ablations.json'
SWITCHES = {'hsvlt': {}, 'no_csa': dict(aggregation='last'), 'late': dict(interaction='late'), 'topdown': dict(aggregation='topdown'),
            'feedback': dict(visual_feedback=True), 'onehot': dict(embeddings='onehot'),
            'qk_stage': dict(qk_norm=True, stage_loss=1.), 'evidence': dict(qk_norm=True, match_evidence=True, stage_loss=1.),
            'floor': dict(qk_norm=True, temperature_floor=10., stage_loss=1.),
            'evidence_floor': dict(qk_norm=True, match_evidence=True, temperature_floor=10., stage_loss=1.),
            'mil': dict(qk_norm=True, stage_loss=1., stage_heads='evidence'),
            'compete': dict(competitive=True, stage_loss=1.), 'heads2': dict(heads=2)}
MODELS = (*SWITCHES, *PEERS)
# The digits contest keeps the recipe it was run with, `hsvlt train`'s default then: batch 32 at 3e-3, 5 epochs of 850 steps, all full size.
CONTESTS = {'digits': dict(batch_size=32, lr=3e-3, epochs=5, steps_per_epoch=850, low_res=0.)}


def recipe(data, model='hsvlt', seed=0, steps_per_epoch=None):
    "The `hsvlt train` recipe of a run (the peers train by the HSVLT model's), on the contest's recipe where it has its own."
    fixed = dict(CONTESTS.get(data, {}))
    if steps_per_epoch: fixed['steps_per_epoch'] = steps_per_epoch
    return Recipe(data=data, seed=seed, **fixed, **SWITCHES.get(model, {}))


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


def probe(data, models=MODELS, rounds=120, warmup=3, make=None):
    """Median seconds of one training step (batch making included) of each of `models` and `hsvlt`, in interleaved rounds.
    `make(m, names)`: model `m`'s fresh network and resolved recipe (default: this contest's `build` and `recipe`)."""
    models = ('hsvlt', *(m for m in models if m != 'hsvlt'))
    r = recipe(data).resolved()
    names = list(BUNDLED[data][0].label_names)
    cfg = train_config(r, progress=False)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    make = make or (lambda m, names: (build(m, recipe(data, m).resolved(), names), recipe(data, m).resolved()))
    steps = {}
    for m in models:
        net, rm = make(m, names)
        net = net.to(memory_format=fmt)
        batches = iter(DataLoader(BUNDLED[data][0]('train', n=0, size=r.img_size).fresh(r.batch_size, None, seed=10_000), batch_size=None))
        cfg_m = train_config(rm, progress=False)                                 # a per-stage loss is part of the step
        opt, loss = make_optimizer(net, cfg_m), make_loss(cfg_m.loss)
        scaler = torch.amp.GradScaler('cpu', enabled=False)
        steps[m] = lambda net=net, batches=batches, opt=opt, loss=loss, scaler=scaler, cfg_m=cfg_m: train_step(net, next(batches), opt, loss, scaler, cfg_m, torch.device('cpu'))
    times = {m: [] for m in models}
    for i in range(warmup + rounds):
        for m, f in steps.items():
            t = time.perf_counter(); f(); dt = time.perf_counter() - t
            if i >= warmup: times[m].append(dt)
    return {m: statistics.median(ts) for m, ts in times.items()}


def equal_time_steps(data, seconds):
    "Steps per epoch of each model so that all train as long as `hsvlt train`'s default run of the HSVLT model."
    d = dict(BUNDLED[data][1], **CONTESTS.get(data, {}))
    budget = d['epochs'] * d['steps_per_epoch'] * seconds['hsvlt']
    return {m: max(1, round(budget / seconds[m] / d['epochs'])) for m in seconds}


def localisation(model, data):
    "The localisation report (`08_localisation`) of a trained model with label attention, on the emoji scenes; else None."
    return emoji_localisation(model) if data == 'emoji' and hasattr(model, 'forward_features') else None


def run(data, model, seed, steps_per_epoch, log=sys.stdout):
    "Train one model by `run_recipe`, as `hsvlt train` does (the peers by the same loop, data, schedule and prior); its record."
    r = recipe(data, model, seed, steps_per_epoch)
    t0 = time.perf_counter()
    with redirect_stdout(log):
        if model in SWITCHES:
            out = Path(tempfile.mkdtemp(prefix=f'ablation-{data}-{model}-{seed}-'))
            m = run_recipe(r, out, progress=False)
            net = load_model(out / 'model.pt')[0]
        else:
            built = []
            out, m = None, run_recipe(r, build=lambda names: built.append(PEERS[model](len(names))) or built[-1], progress=False)
            net = built[-1]
    steps = r.resolved().steps_per_epoch * r.resolved().epochs
    command = r.command() if model in SWITCHES else f'python benchmarks/ablations.py run --data {data} --model {model} --seed {seed} --steps {steps}'
    return make_record(m, net, command, out and str(out / 'model.pt'), data, model, seed, steps, time.perf_counter() - t0)


def make_record(metrics, net, command, checkpoint, data, model, seed, steps, wall_seconds):
    "A stored run: the metrics of `run_recipe` (or a run's metrics.json), how it was made, and the localisation report of its trained `net`."
    return dict(mAP=metrics['mAP'], AP=metrics['AP'], AP_by_size=metrics['AP_by_size'], history=metrics['history'], params=metrics['params'],
                command=command, checkpoint=checkpoint, data=data, model=model, seed=seed, steps=steps, wall_seconds=wall_seconds,
                train_seconds=metrics['timings']['train_seconds'], localisation=localisation(net, data))


def record_run(data, model, seed, folder):
    "The record of a finished `hsvlt train` run in `folder` whose command is this model's recipe (any step count)."
    metrics = json.loads((Path(folder) / 'metrics.json').read_text())
    r = recipe(data, model, seed, metrics['history'][-1]['step'] // len(metrics['history']))
    want = r.command()
    if metrics['command'] != want: raise SystemExit(f"{folder}: its command {metrics['command']!r} is not {model}'s recipe {want!r}")
    steps = r.resolved().steps_per_epoch * r.resolved().epochs
    checkpoint = Path(folder) / 'model.pt'
    return make_record(metrics, load_model(checkpoint)[0], want, str(checkpoint), data, model, seed, steps, metrics['timings']['wall_seconds'])


def localise(data, model, seed, checkpoint):
    "Add the localisation report of `checkpoint` to the stored run it was saved from (its test mAP must be the run's, to 1e-4)."
    results = load()
    kind = next((k for k in ('runs', 'screen') if f'{data}/{model}/{seed}' in results.get(k, {})), None)
    if kind is None: raise SystemExit(f'no stored run {data}/{model}/{seed}')
    record, (net, names) = results[kind][f'{data}/{model}/{seed}'], load_model(checkpoint)
    r = recipe(data, model, seed).resolved()
    got = mean_average_precision(*evaluate(net, test_set(sized(r)), r.batch_size))
    if abs(got - record['mAP']) > 1e-4: raise SystemExit(f"{checkpoint}: test mAP {got:.5f} is not the run's {record['mAP']:.5f}: another model")
    record.update(localisation=localisation(net, data), checkpoint=str(checkpoint))
    results = load(); results[kind][f'{data}/{model}/{seed}'] = record; save(results)
    print(f'{data} {model} seed {seed}: mAP {got:.5f} as stored; localisation added')


def store(record):
    "Keep a run's record: under 'runs' at its model's equal-time step count, else under 'screen'."
    results = load()                                               # another run may have finished meanwhile
    data, model = record['data'], record['model']
    equal = results.get('probe', {}).get(data, {}).get('steps_per_epoch', {}).get(model)
    kind = 'runs' if equal is not None and record['steps'] == equal * BUNDLED[data][1]['epochs'] else 'screen'
    results.setdefault(kind, {})[f"{data}/{model}/{record['seed']}"] = record
    save(results)
    loc = record.get('localisation')
    print(f"{data} {model} seed {record['seed']} ({kind}): mAP {record['mAP']:.4f}  AP by size " + ' '.join(f"{k} {v:.3f}" for k, v in record['AP_by_size'].items())
          + f"  {record['steps']} steps, {record['train_seconds']:.0f} s training"
          + ('' if not loc else '\n  pointing ' + ' '.join(f"{s['pointing']:.2f}" for s in loc if s) + '  chance ' + ' '.join(f"{s['chance']:.2f}" for s in loc if s)
             + '  shared ' + ' '.join(f"{s['shared']:.2f}" for s in loc if s) + '  cos L ' + ' '.join(f"{s['cos_L']:.2f}" for s in loc if s)))


def rerun(data, model, seed):
    "Train a stored run again (its seed and steps) and keep the new record, with its localisation report, under 'reruns'."
    old = load()['runs'][f'{data}/{model}/{seed}']
    record = run(data, model, seed, old['steps'] // BUNDLED[data][1]['epochs'], log=sys.stderr)
    results = load()
    results.setdefault('reruns', {})[f'{data}/{model}/{seed}'] = record
    save(results)
    print(f"{data} {model} seed {seed} again: mAP {record['mAP']:.4f} (stored run: {old['mAP']:.4f})")


def run_and_store(data, model, seed, steps=None):
    results = load()
    if steps is None:
        if data not in results.get('probe', {}): raise SystemExit(f"no step times for --data {data}: run `python benchmarks/ablations.py probe --data {data}` first")
        spe = results['probe'][data]['steps_per_epoch'][model]
    else: spe = max(1, round(steps / BUNDLED[data][1]['epochs']))
    store(run(data, model, seed, spe, log=sys.stderr))


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('what', choices=('probe', 'run', 'all', 'record', 'localise', 'rerun'))
    p.add_argument('--data', choices=tuple(BUNDLED), default='emoji')
    p.add_argument('--model', choices=MODELS, default='hsvlt')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    p.add_argument('--models', choices=MODELS, nargs='+', default=list(MODELS))
    p.add_argument('--steps', type=int, help='training steps (default: the equal-time count from `probe`)')
    p.add_argument('--run', type=Path, help='record: the folder of a finished `hsvlt train` run of --model')
    p.add_argument('--checkpoint', help='localise: the checkpoint (a file or a shipped name) saved by the stored run')
    a = p.parse_args()
    if a.what == 'probe':
        seconds = probe(a.data, a.models)
        results = load()
        stored = results.setdefault('probe', {}).setdefault(a.data, dict(step_seconds={}, steps_per_epoch={}))
        steps = equal_time_steps(a.data, seconds)
        if set(seconds) != set(MODELS) and stored['steps_per_epoch']: steps.pop('hsvlt')          # the contest's own counts stay
        stored['step_seconds'].update({m: seconds[m] for m in steps}); stored['steps_per_epoch'].update(steps)
        save(results)
        epochs = BUNDLED[a.data][1]['epochs']
        for m, s in seconds.items(): print(f"{m:10} {s * 1000:6.1f} ms/step  -> {stored['steps_per_epoch'][m] * epochs} steps")
    elif a.what == 'record':
        if a.run is None: raise SystemExit('record needs --run FOLDER')
        store(record_run(a.data, a.model, a.seed, a.run))
    elif a.what == 'rerun': rerun(a.data, a.model, a.seed)
    elif a.what == 'localise':
        if a.checkpoint is None: raise SystemExit('localise needs --checkpoint')
        localise(a.data, a.model, a.seed, a.checkpoint)
    elif a.what == 'run': run_and_store(a.data, a.model, a.seed, a.steps)
    else:
        counted = load().get('probe', {}).get(a.data, {}).get('steps_per_epoch', {})
        for seed in a.seeds:
            for m in a.models:
                if a.steps is None and m not in counted: print(f'{m}: no equal-time step count for --data {a.data} (probe --models {m}); skipped'); continue
                if f'{a.data}/{m}/{seed}' not in load().get('runs', {}): run_and_store(a.data, m, seed, a.steps)
