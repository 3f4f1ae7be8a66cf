"""Median train-step time (forward + backward, b = 1, 448², k = 80) of an HSVLT preset divided by torchvision's
ConvNeXt of the same size, measured interleaved in the same process; and the folded vs the plain IVLA.

    python benchmarks/step_time.py [--preset small] [--size 448] [--repeats 7] [--device cpu|cuda] [--amp bf16] [--split]

With --split it also times the late-fusion model (the same visual stream, one IVLA) and counts every model's forward
FLOPs, to say how much of HSVLT's excess over ConvNeXt is the visual stream and how much the label path, and how fast
each runs against its FLOPs.

Target for `small` on a 2-core CPU: HSVLT / ConvNeXt <= 1.25 (the reference implementation measures 1.73).
"""
import argparse, contextlib, torch
from common import convnext_like, hsvlt, train_step, interleaved_medians, flops

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument('--preset', default='small')
p.add_argument('--size', type=int, default=448)
p.add_argument('--batch', type=int, default=1)
p.add_argument('-k', type=int, default=80)
p.add_argument('--repeats', type=int, default=7)
p.add_argument('--device', default='cpu')
p.add_argument('--amp', choices=['none', 'bf16'], default='none')
p.add_argument('--channels-last', action='store_true')
p.add_argument('--split', action='store_true', help='also time the late-fusion model and count FLOPs: visual stream against label path')
args = p.parse_args()

dev = torch.device(args.device)
fmt = torch.channels_last if args.channels_last else torch.contiguous_format
models = {'hsvlt folded': hsvlt(args.preset, args.k, fold='folded'), 'hsvlt plain': hsvlt(args.preset, args.k, fold='plain'),
          'convnext': convnext_like(args.preset)}
if args.split: models['late fusion'] = hsvlt(args.preset, args.k, fold='folded', interaction='late', aggregation='last')
models = {n: m.to(dev, memory_format=fmt).train() for n, m in models.items()}
x = torch.randn(args.batch, 3, args.size, args.size, device=dev).to(memory_format=fmt)
amp = torch.autocast(dev.type, dtype=torch.bfloat16) if args.amp == 'bf16' else contextlib.nullcontext()

def step(m):
    def run():
        with amp: train_step(m, x)
        if dev.type == 'cuda': torch.cuda.synchronize()
    return run

med, _ = interleaved_medians({n: step(m) for n, m in models.items()}, args.repeats)
print(f'{args.preset} {args.size}² b={args.batch} k={args.k} on {args.device} ({torch.get_num_threads()} threads), amp={args.amp}, '
      f'channels_last={args.channels_last}, median of {args.repeats}:')
for n, t in med.items(): print(f'  {n:13} {t * 1000:9.1f} ms')
print(f'hsvlt folded / convnext: {med["hsvlt folded"] / med["convnext"]:.3f}')
print(f'hsvlt plain  / convnext: {med["hsvlt plain"] / med["convnext"]:.3f}')
print(f'folded / plain:          {med["hsvlt folded"] / med["hsvlt plain"]:.3f}')

if args.split:
    fl = {n: flops(lambda m=m: m(x)) for n, m in models.items()}
    c = med['convnext']
    for n in ('hsvlt folded', 'late fusion'): print(f'{n:13} time / convnext {med[n] / c:.3f}, forward FLOPs / convnext {fl[n] / fl["convnext"]:.3f}')
    label_t, label_f = med['hsvlt folded'] - med['late fusion'], fl['hsvlt folded'] - fl['late fusion']
    print(f'label path (folded less late fusion): {label_t * 1000:.0f} ms for {label_f / 1e9:.1f} forward GFLOPs, '
          f'{(label_f / label_t) / (fl["convnext"] / c):.2f}x the FLOP rate of the ConvNeXt step')
