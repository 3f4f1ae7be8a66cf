"""Short runs that test a suspected cause of the label collapse: the default emoji recipe cut to 800 steps (four
epochs of 200, warm-up and cosine over those; nano's small-image stem at every size) with one option changed, and the localisation report of
`08_localisation` on 400 fresh test scenes at the run's own image size.

    python benchmarks/diagnose.py base                       # the plain recipe, 800 steps
    python benchmarks/diagnose.py size128 --img-size 128     # the same on 128-px canvases: grids of 32, 16, 8, 4
    python benchmarks/diagnose.py heads2 --heads 2           # two IVLA heads (nano has one)
    python benchmarks/diagnose.py scale_ref --layer-scale 1e-6   # the reference's ConvNeXt layer scale (nano: 1.0)
    python benchmarks/diagnose.py no_label_norm --label-norm off  # labels enter IVLA without LayerNorm
    python benchmarks/diagnose.py no_gate --no-gate          # the label gate taken out: L + S only
    python benchmarks/diagnose.py fixed_lang --fixed-lang    # stages 2-4's label projections frozen orthonormal (cosines kept)

Results go to benchmarks/results/diagnosis.json, keyed by the name given.
"""
import argparse, dataclasses, json, os, sys, torch
from pathlib import Path
from hsvlt_lite.model import HSVLT
from hsvlt_lite.recipes import Recipe, run_recipe, model_config, label_vectors
from hsvlt_lite.localisation import emoji_localisation

RESULTS = Path(__file__).parent / 'results' / 'diagnosis.json'

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('name')
    p.add_argument('--img-size', type=int, default=64)
    p.add_argument('--steps', type=int, default=800)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--heads', type=int, default=1, help='IVLA heads')
    p.add_argument('--layer-scale', type=float, default=1.0, help="ConvNeXt layer scale's initial value")
    p.add_argument('--label-norm', choices=('auto', 'on', 'off'), default='auto')
    p.add_argument('--no-gate', action='store_true', help='no label gate after the residual')
    p.add_argument('--fixed-lang', action='store_true', help="stages 2-4's label projections frozen at orthonormal rows, so they keep every cosine")
    a = p.parse_args()
    r = Recipe(data='emoji', img_size=a.img_size, stem='conv', epochs=4, steps_per_epoch=a.steps // 4, seed=a.seed,   # nano's stem at any size
               label_norm=a.label_norm)

    built = []
    def build(names):
        "nano as `hsvlt train` builds it, with this run's changes."
        e = label_vectors(r.embeddings, names)
        model = HSVLT(dataclasses.replace(model_config(r, e.shape[1]), num_heads=a.heads, layer_scale_init=a.layer_scale), e)
        for blk in (b for s in model.stages for b in s.blocks):
            if a.no_gate: blk.gate = None
        for s in model.stages[1:]:
            if a.fixed_lang:
                torch.nn.init.orthogonal_(s.lang.weight); torch.nn.init.zeros_(s.lang.bias)   # c_out ≥ c_in: orthonormal columns, inner products kept
                s.lang.requires_grad_(False)
        built.append(model)
        return model

    m = run_recipe(r, build=build, progress=False)              # no run folder: the trained model is scored and reported as it is
    changes = ' '.join(x for x in (f'heads={a.heads}' if a.heads != 1 else '', f'layer_scale_init={a.layer_scale:g}' if a.layer_scale != 1 else '',
                                   'no gate' if a.no_gate else '', 'fixed lang' if a.fixed_lang else '') if x)
    record = dict(command=r.command() + (f' (model: {changes})' if changes else ''), mAP=m['mAP'], train_seconds=m['timings']['train_seconds'],
                  localisation=emoji_localisation(built[0], size=a.img_size))
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results[a.name] = record
    tmp = RESULTS.with_suffix('.json.tmp'); tmp.write_text(json.dumps(results, indent=1, sort_keys=True) + '\n'); os.replace(tmp, RESULTS)
    print(f"{a.name}: mAP {m['mAP']:.4f}  pointing " + ' '.join(f"{s['pointing']:.2f}" for s in record['localisation']) + '  chance '
          + ' '.join(f"{s['chance']:.2f}" for s in record['localisation']) + '  one patch ' + ' '.join(f"{s['shared']:.2f}" for s in record['localisation'])
          + '  cos L ' + ' '.join(f"{s['cos_L']:.2f}" for s in record['localisation']), file=sys.stderr)
