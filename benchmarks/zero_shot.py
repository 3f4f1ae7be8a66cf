"""Zero-shot labels on the emoji scenes: five of the 20 labels are never given in training, then scored by name.

    python benchmarks/zero_shot.py probe                          # time each model's step beside hsvlt's, fix its steps
    python benchmarks/zero_shot.py run --model shared --seed 0    # one run, stored the moment it ends
    python benchmarks/zero_shot.py run --model shared --seed 0 --keep runs/open   # ... keeping its run folder (HSVLT only)
    python benchmarks/zero_shot.py all --seeds 0 1 2              # every model and seed not stored yet
    python benchmarks/zero_shot.py run --model shared --seed 0 --loss asl   # ... with the asymmetric loss (stored as shared+asl/0)

Protocol (fixed before any model was trained on it):
- Unseen labels: UNSEEN below, each with a seen label nearest in meaning: sheep (cow, horse), bus (car, train),
  sofa (chair), motorbike (bicycle), cat (dog). Their objects appear in the training scenes as usual; their labels
  are never given (`Recipe.unseen`: their targets are ignored by the loss, the prior and the thresholds).
- Training: the default emoji recipe (`hsvlt train --data emoji`; `--loss asl` swaps binary cross-entropy for ASL), at equal time: each model gets the steps that take
  as long as the plain HSVLT-nano's 3,200 (`probe`, as in `ablations.py`).
- Test: the fixed emoji test set (seed 0) with all 20 labels. ZSL mAP over the 5 unseen, GZSL mAP over all 20, mAP
  over the 15 seen, AP of each unseen label, chance (each unseen label's share of test scenes, the AP of a random
  score), and for the models with label attention the pointing game of the unseen labels (`08_localisation`).
Models: `shared` (HSVLT-nano with `head='shared'`), and on the same visual stages `open_mldecoder` (ML-Decoder's
zero-shot head) and `textdot` (CLIP-style dot product), from `peers.py`. The class-wise HSVLT-nano, trained on
all 20 labels, is the contest's stored run (`ablations.json`, emoji/hsvlt): its seen-label mAP is the price of openness.

Results go to benchmarks/results/zero_shot.json.
"""
import argparse, json, os, sys, tempfile, time, torch
from pathlib import Path
from contextlib import redirect_stdout
from hsvlt_lite.recipes import Recipe, BUNDLED, run_recipe, build_model, label_vectors, test_set
from hsvlt_lite.checkpoints import load_model
from hsvlt_lite.emoji import compose_scenes
from hsvlt_lite.model import normalize
from hsvlt_lite.localisation import localisation_report, patch_hits, scene_objects
from ablations import probe, equal_time_steps
from peers import OPEN_PEERS

UNSEEN = ('sheep', 'bus', 'sofa', 'motorbike', 'cat')
MODELS = ('shared', *OPEN_PEERS)
RESULTS = Path(__file__).parent / 'results' / 'zero_shot.json'


def recipe(seed=0, steps_per_epoch=None, loss='bce'):
    "The recipe every model trains by: the default emoji run (with `loss`), the unseen labels' targets ignored."
    return Recipe(data='emoji', head='shared', unseen=UNSEEN, seed=seed, steps_per_epoch=steps_per_epoch, loss=loss)


def make(model, names):
    "A fresh network for `model` on label `names` (`hsvlt`: the plain class-wise HSVLT-nano, the time yardstick) and its resolved recipe."
    if model == 'hsvlt': r = Recipe(data='emoji').resolved()
    else: r = recipe().resolved()
    e = label_vectors(r.embeddings, names)
    return (OPEN_PEERS[model](e) if model in OPEN_PEERS else build_model(r, e)), r


def load(): return json.loads(RESULTS.read_text()) if RESULTS.exists() else {}


def save(results):
    "Write the results atomically."
    tmp = RESULTS.with_suffix('.json.tmp')
    tmp.write_text(json.dumps(results, indent=1, sort_keys=True) + '\n')
    os.replace(tmp, RESULTS)


def unseen_pointing(model, names, n=400, seed=1):
    "The localisation report of `model` on `n` fresh emoji test scenes, counting only the unseen labels' objects."
    images, layout = compose_scenes(n, 'test', 64, torch.Generator().manual_seed(seed))
    objects = scene_objects(layout)
    present = objects.amax(1) > 0
    present[:, [c for c, name in enumerate(names) if name not in UNSEEN]] = False
    return localisation_report(model, normalize(images), lambda grid: patch_hits(layout.box, objects, grid, 64), present)


def key(model, loss): return model if loss == 'bce' else f'{model}+{loss}'


def run(model, seed, steps_per_epoch, loss='bce', keep=None, log=sys.stderr):
    "Train `model` by the protocol (with `loss`) and return its record."
    r, t0 = recipe(seed, steps_per_epoch, loss), time.perf_counter()
    with redirect_stdout(log):
        if model == 'shared':
            out = Path(keep) if keep else Path(tempfile.mkdtemp(prefix=f'zero-shot-{seed}-')) / 'run'
            m = run_recipe(r, out, progress=False)
            net = load_model(out / 'model.pt')[0]
        else:
            built, out = [], None
            m = run_recipe(r, build=lambda names: built.append(make(model, names)[0]) or built[-1], progress=False)
            net = built[-1]
    names, zs = m['label_names'], m['zero_shot']
    targets = test_set(r.resolved()).targets
    steps = r.resolved().steps_per_epoch * r.resolved().epochs
    return dict(model=key(model, loss), loss=loss, seed=seed, steps=steps, wall_seconds=time.perf_counter() - t0, train_seconds=m['timings']['train_seconds'],
                ZSL=zs['unseen_mAP'], GZSL=zs['all_mAP'], seen=zs['seen_mAP'], AP_unseen={n: m['AP'][n] for n in UNSEEN},
                chance={n: targets[:, names.index(n)].float().mean().item() for n in UNSEEN},
                command=f'python benchmarks/zero_shot.py run --model {model} --seed {seed}' + (f' --loss {loss}' if loss != 'bce' else ''), checkpoint=out and str(out / 'model.pt'),
                localisation_unseen=unseen_pointing(net, names) if hasattr(net, 'forward_features') else None)


def store(record):
    results = load()
    results.setdefault('runs', {})[f"{record['model']}/{record['seed']}"] = record
    save(results)
    print(f"{record['model']} seed {record['seed']}: ZSL {record['ZSL']:.4f}  GZSL {record['GZSL']:.4f}  seen {record['seen']:.4f}  ({record['steps']} steps)")


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('what', choices=('probe', 'run', 'all'))
    p.add_argument('--model', choices=MODELS, default='shared')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    p.add_argument('--keep', help='run: keep the run folder here (shared only)')
    p.add_argument('--loss', choices=('bce', 'asl'), default='bce', help='the training loss of every model run')
    a = p.parse_args()
    if a.what == 'probe':
        seconds = probe('emoji', MODELS, make=make)
        results = load()
        results['probe'] = dict(step_seconds=seconds, steps_per_epoch=equal_time_steps('emoji', seconds))
        save(results)
        for m, s in seconds.items(): print(f"{m:15} {s * 1000:6.1f} ms/step  -> {results['probe']['steps_per_epoch'][m] * BUNDLED['emoji'][1]['epochs']} steps")
    else:
        counts = load().get('probe', {}).get('steps_per_epoch')
        if not counts: raise SystemExit('no step counts yet: run `python benchmarks/zero_shot.py probe` first')
        todo = [(a.model, a.seed)] if a.what == 'run' else [(m, s) for s in a.seeds for m in MODELS if f'{key(m, a.loss)}/{s}' not in load().get('runs', {})]
        for m, s in todo: store(run(m, s, counts[m], a.loss, keep=a.keep if a.what == 'run' else None))
