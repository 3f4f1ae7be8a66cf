"""How the labels lose their identity during training: the default emoji run of a model with a localisation report
(`08_localisation`, 200 fresh test scenes) after every 80 steps.

    python benchmarks/dynamics.py --model hsvlt          # HSVLT-nano as `hsvlt train --data emoji` builds it
    python benchmarks/dynamics.py --model evidence       # a model of benchmarks/ablations.py's switches

The run is `hsvlt train --data emoji` cut into 40 epochs of 80 steps instead of 10 of 320: the same 3,200 steps,
warm-up and cosine schedule (new canvases are drawn per epoch, so it is another draw of the same run, not the
same one). Per epoch the test mAP, the training loss and the report go to benchmarks/results/dynamics.json,
which nbs/08_localisation.ipynb draws.
"""
import argparse, json, os, sys, tempfile
from pathlib import Path
from hsvlt_lite.recipes import Recipe, run_recipe
from hsvlt_lite.localisation import emoji_localisation
from ablations import SWITCHES

RESULTS = Path(__file__).parent / 'results' / 'dynamics.json'


def trace(model, seed=0, epochs=40, steps_per_epoch=80, scenes=200):
    "Train `model`'s emoji recipe in `epochs` short epochs; its per-epoch record (step, mAP, loss, localisation) and final metrics."
    r = Recipe(data='emoji', seed=seed, epochs=epochs, steps_per_epoch=steps_per_epoch, **SWITCHES[model])
    m = run_recipe(r, Path(tempfile.mkdtemp(prefix=f'dynamics-{model}-')), progress=False,
                   on_epoch=lambda net: dict(localisation=emoji_localisation(net, n=scenes)))
    keep = ('epoch', 'step', 'lr', 'train_loss', 'mAP', 'localisation')
    return dict(command=r.command(), model=model, seed=seed, mAP=m['mAP'], history=[{k: h[k] for k in keep} for h in m['history']])


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--model', choices=tuple(SWITCHES), default='hsvlt')
    p.add_argument('--seed', type=int, default=0)
    a = p.parse_args()
    record = trace(a.model, a.seed)
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results[f'emoji/{a.model}/{a.seed}'] = record
    tmp = RESULTS.with_suffix('.json.tmp')
    tmp.write_text(json.dumps(results, indent=1, sort_keys=True) + '\n')
    os.replace(tmp, RESULTS)
    print(f"{a.model} seed {a.seed}: mAP {record['mAP']:.4f}; stored in {RESULTS}", file=sys.stderr)
