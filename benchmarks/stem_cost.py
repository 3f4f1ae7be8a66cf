"""Training images/s of HSVLT-nano with its stride-1 convolution stem against the 4×4 patch stem, at several input
sizes, interleaved in one process: the figures behind `stem='auto'` (`22_recipes`).

    python benchmarks/stem_cost.py [--sizes 64 96 128 224] [--batch 32] [--repeats 5] [-k 10]

A train step here is forward + backward (channels-last, as the recipes train at these sizes); the ratio is
conv-stem time over patch-stem time at the same size.
"""
import argparse, torch
from common import hsvlt, train_step, interleaved_medians

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument('--sizes', type=int, nargs='+', default=[64, 96, 128, 224])
p.add_argument('--batch', type=int, default=32)
p.add_argument('-k', type=int, default=10)
p.add_argument('--repeats', type=int, default=5)
args = p.parse_args()

torch.manual_seed(0)
models = {stem: hsvlt('nano', args.k, d=384, stem=stem).to(memory_format=torch.channels_last).train() for stem in ('conv', 'patch')}
print(f"{'size':>5} {'conv img/s':>11} {'patch img/s':>12} {'conv/patch time':>16}")
for size in args.sizes:
    x = torch.randn(args.batch, 3, size, size).to(memory_format=torch.channels_last)
    med, _ = interleaved_medians({stem: (lambda m=m: train_step(m, x)) for stem, m in models.items()}, args.repeats, warmup=1)
    print(f"{size:>5} {args.batch / med['conv']:>11.0f} {args.batch / med['patch']:>12.0f} {med['conv'] / med['patch']:>16.2f}", flush=True)
