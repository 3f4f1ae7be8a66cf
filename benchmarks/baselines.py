"""What a user would pick instead of HSVLT, trained on the same bundled digits, test set, seed and time budget
as `hsvlt train`'s default, by the same training loop:

- `convnext`: HSVLT-nano's visual stages (same stem and ConvNeXt blocks) with no label interaction:
  global average pool, LayerNorm, linear head.
- `q2l`: a Query2Label-style model: a fine 3x3 conv + BatchNorm + GELU + max-pool stem down to 8x8 tokens,
  a 2-layer pre-norm transformer encoder with learned positions, one decoder layer with one learned query
  per label, a class-wise linear head.
- `hsvlt`: the default HSVLT-nano recipe run through this same harness.

    python benchmarks/baselines.py --model q2l [--budget 540] [--lr 3e-3] [--seed 0] [--steps N]

The step count is set from a short throughput probe so that training takes about `--budget` seconds (run it
on an otherwise idle machine, or fix the count with `--steps`); the learning rate warms up over 10k images
and decays to zero at the last step (the library's `fit`). HSVLT and the pooled ConvNeXt train with the
`hsvlt train` defaults (batch size, learning rate, channels-last, stem, layer scale); the peer with the same
batch size and memory format and its own best learning rate.
Prints test mAP, AP by glyph size, parameters and images/s.
"""
import argparse, time, torch, torch.nn as nn
from torch.utils.data import DataLoader
from hsvlt_lite.layers import ConvStem, PatchDown, ConvNeXtBlock
from hsvlt_lite.csa import ClasswiseLinear
from hsvlt_lite.model import HSVLT, HSVLTConfig
from hsvlt_lite.data import MultiScaleDigits
from hsvlt_lite.metrics import mean_average_precision
from hsvlt_lite.train import TrainConfig, fit, evaluate, seed_everything
from hsvlt_lite.cli import DIGITS_DEFAULTS, build_parser, resolve, make_model, label_vectors, set_prior, train_targets, make_test


class PooledConvNeXt(nn.Module):
    "HSVLT-nano's visual stream without labels: ConvNeXt stages, global average pool, LayerNorm, linear head."
    def __init__(self, k, cfg=HSVLTConfig.preset('nano', stem='conv')):
        super().__init__()
        layers, c_in = [], 3
        for i, (c, d) in enumerate(zip(cfg.dims, cfg.depths)):
            layers += [ConvStem(3, c) if i == 0 else PatchDown(c_in, c, 2, norm_first=True)]
            layers += [ConvNeXtBlock(c, cfg.layer_scale_init) for _ in range(d)]
            c_in = c
        self.features, self.norm, self.head = nn.Sequential(*layers), nn.LayerNorm(c_in), nn.Linear(c_in, k)

    def forward(self, x): return self.head(self.norm(self.features(x).mean((-2, -1))))


class Query2Label(nn.Module):
    "A small Query2Label-style model: conv stem to 8x8 tokens, transformer encoder, label-query decoder, class-wise head."
    def __init__(self, k, d=64, tokens=64):
        super().__init__()
        def down(c_in, c_out): return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.GELU(), nn.MaxPool2d(2)]
        self.stem = nn.Sequential(*down(3, 32), *down(32, d), *down(d, d))
        self.pos = nn.Parameter(torch.randn(tokens, d) * 0.02)
        layer = dict(d_model=d, nhead=4, dim_feedforward=2 * d, dropout=0., batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(**layer), 2, enable_nested_tensor=False)
        self.queries = nn.Parameter(torch.randn(k, d) * 0.02)
        self.decoder = nn.TransformerDecoderLayer(**layer)
        self.head = ClasswiseLinear(k, d)

    def forward(self, x):
        t = self.stem(x).flatten(2).transpose(1, 2)                      # b (h w) d
        t = self.encoder(t + self.pos[:t.shape[1]])
        return self.head(self.decoder(self.queries.expand(len(x), -1, -1), t))


def build(name, names):
    if name == 'convnext': return PooledConvNeXt(len(names))
    if name == 'q2l': return Query2Label(len(names))
    return make_model(cli, label_vectors(cli.embeddings, names))          # exactly what `hsvlt train` builds


def head_bias(model):
    return model.aggregate.head.bias if isinstance(model, HSVLT) else model.head.bias


p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument('--model', choices=('convnext', 'q2l', 'hsvlt'), required=True)
p.add_argument('--budget', type=float, default=540., help='training seconds')
p.add_argument('--lr', type=float, default=None, help=f"peak learning rate (default: q2l 3e-3, else hsvlt train's {DIGITS_DEFAULTS['lr']})")
p.add_argument('--steps', type=int, default=None, help='training steps (default: what the probe says fits in --budget)')
p.add_argument('--seed', type=int, default=0)
p.add_argument('--batch-size', type=int, default=DIGITS_DEFAULTS['batch_size'])
args = p.parse_args()
cli = resolve(build_parser().parse_args(['train', '--seed', str(args.seed)]))   # `hsvlt train`'s defaults

test = make_test(cli)
names = list(test.label_names)
seed_everything(args.seed)
model = build(args.model, names)
set_prior(head_bias(model), train_targets(cli, None))
recipe = MultiScaleDigits('train', n=0, size=cli.img_size)

fmt = torch.channels_last if cli.channels_last else torch.contiguous_format

def probe_rate():
    "Training images/s of a fresh copy of the model over 8 steps (after 4 warm-up steps)."
    probe_model = build(args.model, names).to(memory_format=fmt)
    opt = torch.optim.AdamW(probe_model.parameters(), lr=1e-4)
    for i, (x, y) in enumerate(DataLoader(recipe.fresh(args.batch_size, 12, seed=10_000 + args.seed), batch_size=None)):
        if i == 4: start = time.perf_counter()
        loss = nn.functional.binary_cross_entropy_with_logits(probe_model(x.contiguous(memory_format=fmt)), y)
        opt.zero_grad(); loss.backward(); opt.step()
    return 8 * args.batch_size / (time.perf_counter() - start)

steps = args.steps or max(1, int(args.budget * probe_rate() / args.batch_size * 0.97))   # 3% for the per-epoch evaluation
epochs = 10
cfg = TrainConfig(epochs=epochs, batch_size=args.batch_size, lr=args.lr or (3e-3 if args.model == 'q2l' else cli.lr),
                  steps_per_epoch=max(1, steps // epochs), seed=args.seed, progress=False, channels_last=cli.channels_last)
t0 = time.perf_counter()
history = fit(model, DataLoader(recipe.fresh(args.batch_size, cfg.steps_per_epoch, args.seed), batch_size=None), test, cfg, label_names=names)
wall = time.perf_counter() - t0
scores, targets = evaluate(model, test, channels_last=cfg.channels_last)
by_size = {band: mean_average_precision(scores, t) for band, t in test.targets_by_scale().items()}
print(f"model {args.model}  params {sum(p.numel() for p in model.parameters()):,}  lr {cfg.lr}  seed {args.seed}")
train_s = sum(h['seconds'] for h in history)
print(f"steps {cfg.epochs * cfg.steps_per_epoch} ({cfg.epochs * cfg.steps_per_epoch * cfg.batch_size / train_s:.0f} img/s), training {train_s:.0f} s, wall {wall:.0f} s")
print('mAP by epoch: ' + ' '.join(f"{h['mAP']:.3f}" for h in history))
print('AP by glyph size: ' + '  '.join(f'{k} {v:.4f}' for k, v in by_size.items()))
print(f"mAP: {mean_average_precision(scores, targets):.4f}")
