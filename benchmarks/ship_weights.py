"""Put a trained run's model inside the package under a name, re-scored, with its SHA-256, beside the others.

    hsvlt train --data emoji --seed 0 --out runs/emoji-nano
    python benchmarks/ship_weights.py emoji-nano runs/emoji-nano/model.pt

writes hsvlt_lite/assets/emoji-nano.pt (the model, its configs, label names and vectors, per-class thresholds; no
optimiser, EMA or generator state) and its entry in hsvlt_lite/assets/checkpoints.json: file, SHA-256, data, the test mAP the
slim file scores on its bundled test set (and, for a run that left labels unseen, their names and mAP), and the command that trained it (the `Recipe` stored in the checkpoint,
written as a command line). A run saved before `hsvlt train` chose per-class thresholds gets them here, chosen
the same way (`run_recipe`: best F1 per class on the validation canvases). `load_model('emoji-nano')`,
`hsvlt eval --ckpt emoji-nano` and `hsvlt predict --ckpt emoji-nano` then find it; tests/test_train.py
re-scores every shipped checkpoint against the recorded mAP.
"""
import argparse, dataclasses, hashlib, json, os
from pathlib import Path
from hsvlt_lite.recipes import Recipe, test_set, score, validation_set
from hsvlt_lite.metrics import best_f1_thresholds
from hsvlt_lite.train import evaluate
from hsvlt_lite.checkpoints import save_weights, load_checkpoint, load_model, set_thresholds, stored_thresholds, unseen_labels

ASSETS = Path(__file__).parents[1] / 'hsvlt_lite' / 'assets'


def rescore(path):
    "Test mAP of checkpoint `path` on the bundled test set of its run; for a run that left labels unseen, their names and mAP too."
    ckpt = load_checkpoint(path)
    r, hidden = Recipe().resolved(ckpt['meta']), unseen_labels(ckpt)
    model, names = load_model(path)
    res = score(*evaluate(model, test_set(r), r.batch_size), names, hidden)
    return dict(mAP=res['mAP'], **(dict(unseen=hidden, unseen_mAP=res['zero_shot']['unseen_mAP']) if hidden else {}))


def add_thresholds(path):
    "Per-class thresholds for checkpoint `path` if it has none: best F1 per class on its recipe's validation canvases, as `run_recipe` chooses them."
    ckpt = load_checkpoint(path)
    if stored_thresholds(ckpt)[0] is not None: return
    r = Recipe().resolved(ckpt['meta'])
    val, source = validation_set(r, test_set(r))
    model, _ = load_model(path)
    set_thresholds(path, {'model': best_f1_thresholds(*evaluate(model, val, r.batch_size)).tolist()}, source)


def command(meta):
    "The `hsvlt train` command of a run, from the options stored in its checkpoint."
    return Recipe(**{f.name: meta[f.name] for f in dataclasses.fields(Recipe) if f.name in meta}).command()


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('name', help="the name it ships under, e.g. 'emoji-nano'")
    p.add_argument('run', type=Path, help='model.pt written by hsvlt train')
    a = p.parse_args()
    meta = load_checkpoint(a.run)['meta']
    dst = ASSETS / f'{a.name}.pt'
    save_weights(a.run, dst)
    add_thresholds(dst)
    index = ASSETS / 'checkpoints.json'
    entries = json.loads(index.read_text()) if index.exists() else {}
    entries[a.name] = dict(file=dst.name, sha256=hashlib.sha256(dst.read_bytes()).hexdigest(), data=meta['data'], **rescore(dst),
                           command=command(meta))
    tmp = index.with_suffix('.json.tmp')
    tmp.write_text(json.dumps(entries, indent=1, sort_keys=True) + '\n')
    os.replace(tmp, index)
    print(f"{a.name}: {dst} ({dst.stat().st_size:,} bytes), mAP {entries[a.name]['mAP']:.4f}, sha256 {entries[a.name]['sha256'][:16]}…")
