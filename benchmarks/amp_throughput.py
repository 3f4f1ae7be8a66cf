"""Training images/s of an HSVLT preset with AMP bf16 vs the same model in fp32, in one process (for a GPU run).

    python benchmarks/amp_throughput.py --device cuda [--preset small] [--size 448] [--batch 32] [--repeats 10] [--channels-last]

On a CPU it runs too (bf16 autocast on CPU), slowly: use --preset nano --size 64 there.
"""
import argparse, contextlib, torch
from common import hsvlt, train_step, interleaved_medians

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument('--preset', default='small')
p.add_argument('--size', type=int, default=448)
p.add_argument('--batch', type=int, default=32)
p.add_argument('-k', type=int, default=80)
p.add_argument('--repeats', type=int, default=10)
p.add_argument('--device', default='cuda')
p.add_argument('--channels-last', action='store_true')
args = p.parse_args()

dev = torch.device(args.device)
fmt = torch.channels_last if args.channels_last else torch.contiguous_format
model = hsvlt(args.preset, args.k).to(dev, memory_format=fmt).train()
x = torch.randn(args.batch, 3, args.size, args.size, device=dev).to(memory_format=fmt)

def step(amp):
    def run():
        with torch.autocast(dev.type, dtype=torch.bfloat16) if amp else contextlib.nullcontext(): train_step(model, x)
        if dev.type == 'cuda': torch.cuda.synchronize()
    return run

med, _ = interleaved_medians({'fp32': step(False), 'bf16': step(True)}, args.repeats)
print(f'{args.preset} {args.size}² batch {args.batch} k={args.k} on {torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"}, '
      f'channels_last={args.channels_last}, median of {args.repeats} steps:')
for name, t in med.items(): print(f'  {name}: {args.batch / t:8.1f} images/s  ({t * 1000:.1f} ms/step)')
print(f'bf16 / fp32 speed-up: {med["fp32"] / med["bf16"]:.2f}x')
