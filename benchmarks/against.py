"""This checkout's HSVLT train step (forward + backward) against the same model built by an earlier commit's code,
interleaved in one process with torchvision's ConvNeXt of the same size as the common yardstick: what a change
bought, measured so that the machine's drift cancels.

    python benchmarks/against.py REV [--preset small] [--size 448] [--batch 1] [-k 80] [--repeats 15] [--channels-last]

REV's `hsvlt_lite` is unpacked with `git archive` into a temporary folder under another package name, both models get
the same weights and are checked to give the same logits, then each is timed in turn. Prints each median, each
HSVLT / ConvNeXt ratio, and the median over rounds of this checkout's time over REV's (paired, round by round).
"""
import argparse, atexit, importlib, pathlib, shutil, statistics, subprocess, sys, tempfile, torch
from common import hsvlt, convnext_like, train_step, interleaved_medians

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument('rev', help='the earlier commit (anything git rev-parse takes)')
p.add_argument('--preset', default='small')
p.add_argument('--size', type=int, default=448)
p.add_argument('--batch', type=int, default=1)
p.add_argument('-k', type=int, default=80)
p.add_argument('--repeats', type=int, default=15)
p.add_argument('--channels-last', action='store_true')
args = p.parse_args()

root = pathlib.Path(__file__).resolve().parent.parent
rev = subprocess.run(['git', '-C', str(root), 'rev-parse', '--short', args.rev], capture_output=True, text=True)
if rev.returncode: sys.exit(f"against.py: {args.rev!r} is not a commit of {root}: {rev.stderr.strip()}")
rev = rev.stdout.strip()
tmp = pathlib.Path(tempfile.mkdtemp())
atexit.register(shutil.rmtree, tmp, ignore_errors=True)
archive = subprocess.run(['git', '-C', str(root), 'archive', rev, 'hsvlt_lite'], capture_output=True, check=True).stdout
subprocess.run(['tar', '-x', '-C', str(tmp)], input=archive, check=True)
(tmp / 'hsvlt_lite').rename(tmp / 'hsvlt_rev')                   # the package imports itself relatively: any name works
sys.path.insert(0, str(tmp))
earlier = importlib.import_module('hsvlt_rev.model')

torch.manual_seed(0)
fmt = torch.channels_last if args.channels_last else torch.contiguous_format
now = hsvlt(args.preset, args.k).train()
then = earlier.HSVLT(earlier.HSVLTConfig.preset(args.preset, text_dim=now.cfg.text_dim), now.label_embeddings.clone()).train()
then.load_state_dict(now.state_dict())
convnext = convnext_like(args.preset).train()
models = {f'hsvlt {rev}': then, 'hsvlt now': now, 'convnext': convnext}
models = {n: m.to(memory_format=fmt) for n, m in models.items()}
x = torch.randn(args.batch, 3, args.size, args.size).to(memory_format=fmt)
diff = (then(x) - now(x)).abs().max().item()
if diff > 1e-3: sys.exit(f'against.py: {rev} and this checkout give different logits (largest difference {diff:.2e}): not the same model')

med, times = interleaved_medians({n: (lambda m=m: train_step(m, x)) for n, m in models.items()}, args.repeats)
print(f'{args.preset} {args.size}² b={args.batch} k={args.k} ({torch.get_num_threads()} threads), channels_last={args.channels_last}, '
      f'median of {args.repeats}; largest logit difference {diff:.1e}')
for n, t in med.items(): print(f'  {n:16} {t * 1000:9.1f} ms' + ('' if n == 'convnext' else f'   / convnext {t / med["convnext"]:.3f}'))
paired = statistics.median(a / b for a, b in zip(times['hsvlt now'], times[f'hsvlt {rev}']))
print(f'now / {rev}, paired by round: {paired:.3f}')
