"""Put a trained run's model inside the package under a name, re-scored, with its SHA-256, beside the others.

    hsvlt train --data emoji --seed 0 --out runs/emoji-nano
    python benchmarks/ship_weights.py emoji-nano runs/emoji-nano/model.pt

writes hsvlt_lite/assets/emoji-nano.pt (the model, its configs, label names and vectors; no optimiser, EMA or
generator state) and its entry in hsvlt_lite/assets/checkpoints.json: file, SHA-256, data, the test mAP the
slim file scores on its bundled test set, and the command that trained it. `load_model('emoji-nano')`,
`hsvlt eval --ckpt emoji-nano` and `hsvlt predict --ckpt emoji-nano` then find it; tests/test_train.py
re-scores every shipped checkpoint against the recorded mAP.
"""
import argparse, hashlib, json, os
from pathlib import Path
from hsvlt_lite.cli import build_parser, resolve, make_test, score
from hsvlt_lite.train import save_weights, load_checkpoint, load_model, evaluate

ASSETS = Path(__file__).parents[1] / 'hsvlt_lite' / 'assets'


def rescore(path):
    "Test mAP of checkpoint `path` on the bundled test set of its run."
    ckpt = load_checkpoint(path)
    args = resolve(build_parser().parse_args(['eval', '--ckpt', str(path)]), ckpt['meta'])
    model, names = load_model(path)
    return score(*evaluate(model, make_test(args), args.batch_size), names)['mAP']


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('name', help="the name it ships under, e.g. 'emoji-nano'")
    p.add_argument('run', type=Path, help='model.pt written by hsvlt train')
    p.add_argument('--command', help='the hsvlt train command of the run (default: --data and --seed of the run; checked against it)')
    a = p.parse_args()
    meta = load_checkpoint(a.run)['meta']
    dst = ASSETS / f'{a.name}.pt'
    save_weights(a.run, dst)
    command = a.command or f"hsvlt train --data {meta['data']} --seed {meta['seed']}"
    made = vars(resolve(build_parser().parse_args(command.split()[1:])))
    if any(made.get(k) != v for k, v in meta.items() if k != 'out'):
        raise SystemExit(f"{a.run} was not trained by {command!r}: give the command that made it with --command")
    index = ASSETS / 'checkpoints.json'
    entries = json.loads(index.read_text()) if index.exists() else {}
    entries[a.name] = dict(file=dst.name, sha256=hashlib.sha256(dst.read_bytes()).hexdigest(), data=meta['data'], mAP=rescore(dst),
                           command=command)
    tmp = index.with_suffix('.json.tmp')
    tmp.write_text(json.dumps(entries, indent=1, sort_keys=True) + '\n')
    os.replace(tmp, index)
    print(f"{a.name}: {dst} ({dst.stat().st_size:,} bytes), mAP {entries[a.name]['mAP']:.4f}, sha256 {entries[a.name]['sha256'][:16]}…")
