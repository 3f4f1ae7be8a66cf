"""Short runs that test a suspected cause of the label collapse: the default emoji recipe cut to 800 steps (four
epochs of 200, warm-up and cosine over those; nano's small-image stem at every size) with one option changed, and the localisation report of
`08_localisation` on 400 fresh test scenes at the run's own image size.

    python benchmarks/diagnose.py base                       # the plain recipe, 800 steps
    python benchmarks/diagnose.py size128 --img-size 128     # the same on 128-px canvases: grids of 32, 16, 8, 4

Results go to benchmarks/results/diagnosis.json, keyed by the name given.
"""
import argparse, json, os, sys, tempfile
from pathlib import Path
from hsvlt_lite.recipes import Recipe, run_recipe
from hsvlt_lite.checkpoints import load_model
from hsvlt_lite.localisation import emoji_localisation

RESULTS = Path(__file__).parent / 'results' / 'diagnosis.json'

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('name')
    p.add_argument('--img-size', type=int, default=64)
    p.add_argument('--steps', type=int, default=800)
    p.add_argument('--seed', type=int, default=0)
    a = p.parse_args()
    r = Recipe(data='emoji', img_size=a.img_size, stem='conv', epochs=4, steps_per_epoch=a.steps // 4, seed=a.seed)   # nano's stem at any size
    out = Path(tempfile.mkdtemp(prefix=f'diagnose-{a.name}-')) / 'run'
    m = run_recipe(r, out, progress=False)
    record = dict(command=r.command(), mAP=m['mAP'], train_seconds=m['timings']['train_seconds'],
                  localisation=emoji_localisation(load_model(out / 'model.pt')[0], size=a.img_size))
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results[a.name] = record
    tmp = RESULTS.with_suffix('.json.tmp'); tmp.write_text(json.dumps(results, indent=1, sort_keys=True) + '\n'); os.replace(tmp, RESULTS)
    print(f"{a.name}: mAP {m['mAP']:.4f}  pointing " + ' '.join(f"{s['pointing']:.2f}" for s in record['localisation']) + '  chance '
          + ' '.join(f"{s['chance']:.2f}" for s in record['localisation']) + '  one patch ' + ' '.join(f"{s['shared']:.2f}" for s in record['localisation'])
          + '  cos L ' + ' '.join(f"{s['cos_L']:.2f}" for s in record['localisation']), file=sys.stderr)
