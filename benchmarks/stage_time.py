"""Where a training step of `hsvlt train`'s model goes, stage by stage: forward + backward time of each part
(the stem or down-sampling, each block's ConvNeXt update, and its label update: LayerNorm, IVLA, gate, timed as
the whole block minus its ConvNeXt update), each run on the activations it sees in the real model, medians of
interleaved runs, as a share of their sum.

    python benchmarks/stage_time.py [--preset nano] [--size 64] [--batch 32] [--repeats 15] [--depths 2 2 1 1] [--dims 32 64 96 128]
                                    [--against-dims 32 64 128 256 --against-depths 1 1 2 1]

The model is the one `hsvlt train` builds for the bundled digits (its preset, MiniLM label vectors,
channels-last); `--dims`/`--depths` override the preset's. The whole model's step is
also timed in the contiguous layout, for the channels-last / contiguous ratio; with `--against-...` a whole
training step (with AdamW) is timed against another model's in the same interleaved rounds.
"""
import argparse, copy, torch
from common import interleaved_medians
from hsvlt_lite.recipes import Recipe, build_model, label_vectors
from hsvlt_lite.scenes import DIGIT_NAMES

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument('--preset', default='nano')
p.add_argument('--size', type=int, default=64)
p.add_argument('--batch', type=int, default=32)
p.add_argument('--repeats', type=int, default=15)
p.add_argument('--dims', type=int, nargs=4, help="stage widths instead of the preset's")
p.add_argument('--depths', type=int, nargs=4, help="blocks per stage instead of the preset's")
p.add_argument('--against-dims', type=int, nargs=4, help="also time a whole training step against this model's (widths)")
p.add_argument('--against-depths', type=int, nargs=4, help='... and block counts; either one turns the comparison on')
args = p.parse_args()

def cli_model(dims, depths):
    "What `hsvlt train --preset P [--dims ...] [--depths ...]` builds, channels-last."
    r = Recipe(preset=args.preset, dims=dims, depths=depths).resolved()
    return build_model(r, label_vectors(r.embeddings, DIGIT_NAMES)).to(memory_format=torch.channels_last).train()

model = cli_model(args.dims, args.depths)
x = torch.randn(args.batch, 3, args.size, args.size).contiguous(memory_format=torch.channels_last)

seen = {}                                   # module -> the inputs it got in the real forward pass
hooks = [m.register_forward_pre_hook(lambda m, inp: seen.__setitem__(m, [t.detach() for t in inp if isinstance(t, torch.Tensor)]))
         for s in model.stages for m in [s.down, *s.blocks]]
with torch.no_grad(): model(x)
for h in hooks: h.remove()

def fwd_bwd(fn, inputs):
    "A callable running `fn` on fresh leaf copies of `inputs`, then backward of the sum of its outputs."
    def run():
        out = fn(*[t.clone().requires_grad_() for t in inputs])
        sum(o.float().sum() for o in (out if isinstance(out, tuple) else (out,)) if o is not None).backward()
    return run

parts = {}
for i, stage in enumerate(model.stages):
    parts[(i, 'stem' if i == 0 else 'down')] = fwd_bwd(stage.down, seen[stage.down][:1])
    for j, blk in enumerate(stage.blocks):
        parts[(i, f'block {j}')] = fwd_bwd(blk, seen[blk][:2])
        parts[(i, f'block {j} ConvNeXt')] = fwd_bwd(blk.conv, seen[blk][:1])
parts[('all', 'whole model')] = fwd_bwd(model, [x])
contiguous = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
parts[('all', 'contiguous')] = fwd_bwd(contiguous, [x.contiguous()])

def optimizer_step(m):
    "A whole training step of `m` with AdamW."
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4)
    def run():
        opt.zero_grad(); m(x).float().square().mean().backward(); opt.step()
    return run

compare = args.against_dims or args.against_depths
if compare:
    other = cli_model(args.against_dims, args.against_depths)
    parts[('all', 'step')], parts[('all', 'other step')] = optimizer_step(model), optimizer_step(other)

med, _ = interleaved_medians(parts, args.repeats)
whole, whole_contiguous = med[('all', 'whole model')], med[('all', 'contiguous')]
rows = []                                   # (stage, part, seconds); a block's label update is the block minus its ConvNeXt update
for i, stage in enumerate(model.stages):
    rows.append((i, 'stem' if i == 0 else 'down', med[(i, 'stem' if i == 0 else 'down')]))
    for j in range(len(stage.blocks)):
        conv = med[(i, f'block {j} ConvNeXt')]
        rows += [(i, f'block {j} ConvNeXt', conv), (i, f'block {j} labels', med[(i, f'block {j}')] - conv)]
total = sum(t for *_, t in rows)
print(f"{args.preset} dims {model.cfg.dims} depths {model.cfg.depths}, {args.size}² b={args.batch}, "
      f"{torch.get_num_threads()} threads, median of {args.repeats}; forward + backward, ms and share of the parts' sum:")
for i, name, t in rows: print(f'  stage {i + 1} {name:18} {t * 1e3:7.2f} ms  {t / total:6.1%}')
for i, (c, d) in enumerate(zip(model.cfg.dims, model.cfg.depths)):
    print(f'stage {i + 1} ({c} channels, {d} blocks): {sum(t for s, _, t in rows if s == i) / total:6.1%}')
print(f'parts sum {total * 1e3:.1f} ms; whole model forward + backward {whole * 1e3:.1f} ms channels-last, '
      f'{whole_contiguous * 1e3:.1f} ms contiguous (ratio {whole / whole_contiguous:.2f})')
if compare:
    step, other_step = med[('all', 'step')], med[('all', 'other step')]
    print(f'training step with AdamW: this model {step * 1e3:.1f} ms, dims {other.cfg.dims} depths {other.cfg.depths} '
          f'{other_step * 1e3:.1f} ms (ratio {step / other_step:.2f})')
