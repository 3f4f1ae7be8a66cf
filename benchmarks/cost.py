"""Parameters and forward FLOPs of each preset at 224² and 448² (k = 80 labels, D = 768), beside torchvision's
ConvNeXt of the same size, with the folded and with the plain IVLA.

    python benchmarks/cost.py [--presets nano tiny small base] [--sizes 224 448]

FLOPs = 2 x multiply-adds, counted by torch.utils.flop_counter (attention included, see common.py).
"""
import argparse, torch
from common import convnext_like, hsvlt, flops, params

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument('--presets', nargs='+', default=['nano', 'tiny', 'small', 'base'])
p.add_argument('--sizes', nargs='+', type=int, default=[224, 448])
p.add_argument('-k', type=int, default=80)
args = p.parse_args()

print(f'{"preset":6} {"size":>4} {"params":>12} {"ConvNeXt":>12} {"GFLOPs folded":>13} {"plain":>7} {"ConvNeXt":>9} {"folded/CNX":>10} {"plain/CNX":>9}')
with torch.no_grad():
    for preset in args.presets:
        models = {fold: hsvlt(preset, args.k, fold=fold).eval() for fold in ('folded', 'plain')}
        cnx = convnext_like(preset).eval()
        cnx_params = params(cnx) - params(cnx.classifier)   # the feature extractor only
        for size in args.sizes:
            x = torch.randn(1, 3, size, size)
            g = {fold: flops(lambda: m(x)) / 1e9 for fold, m in models.items()}
            g_cnx = flops(lambda: cnx.features(x)) / 1e9
            print(f'{preset:6} {size:4} {params(models["folded"]):12,} {cnx_params:12,} {g["folded"]:13.2f} {g["plain"]:7.2f} {g_cnx:9.2f}'
                  f' {g["folded"] / g_cnx:10.3f} {g["plain"] / g_cnx:9.3f}')
