"""CPU latency at batch 1 of an exported HSVLT against eager PyTorch, in one process: eager, `torch.compile`,
the `torch.export` program (.pt2) and ONNX Runtime (.onnx), as medians of interleaved repeats and as ratios
to eager. Models are randomly initialised (latency does not depend on the weights).

    OMP_NUM_THREADS=1 python benchmarks/export_latency.py [--models nano:64 tiny:224] [--repeats 30] [-k 80]

ONNX Runtime is given as many threads as PyTorch uses. Use as many threads as there are idle cores: on a
2-core machine busy with other work, 2 threads made eager nano 40x slower (a descheduled OpenMP thread stalls
every parallel region), which says nothing about the runtimes. Needs `pip install 'hsvlt_lite[export]'` and,
for `torch.compile`, a C++ compiler; compiling tiny takes minutes on such a CPU.

On one thread of a 2-core AVX2 CPU (torch 2.14.1, onnxruntime 1.32.0, k=80, 20 repeats), time / eager:
nano 64²: torch.compile 0.54, pt2 0.97, ONNX Runtime 0.30 (eager 9.7 ms);
tiny 224²: torch.compile 0.97, pt2 0.98, ONNX Runtime 0.81 (eager 229 ms).
"""
import argparse, tempfile, time, torch
from pathlib import Path
from common import hsvlt, interleaved_medians
from hsvlt_lite.export import export_model, load_exported

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument('--models', nargs='+', default=['nano:64', 'tiny:224'], help='preset:image size pairs')
p.add_argument('-k', type=int, default=80, help='labels')
p.add_argument('--repeats', type=int, default=30)
args = p.parse_args()


def timed(f):
    t = time.perf_counter(); out = f()
    return out, time.perf_counter() - t


print(f'CPU, {torch.get_num_threads()} threads, torch {torch.__version__}, batch 1, k={args.k}, median of {args.repeats} interleaved repeats')
rows, setup = [], []
with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
    for spec in args.models:
        preset, size = spec.split(':'); size = int(size)
        model = hsvlt(preset, args.k).eval()
        x = torch.randn(1, 3, size, size)
        runs, costs = {'eager': model}, {}
        compiled = torch.compile(model)
        _, costs['compile'] = timed(lambda: compiled(x))             # the first call compiles
        runs['torch.compile'] = compiled
        for fmt in ('pt2', 'onnx'):
            path, costs[f'{fmt} export'] = timed(lambda: export_model(model, Path(tmp) / f'{preset}.{fmt}', fmt, size))
            runs[fmt] = load_exported(path)
        want = model(x)
        errs = {name: (run(x) - want).abs().max().item() for name, run in runs.items()}
        med, _ = interleaved_medians({name: (lambda run=run: run(x)) for name, run in runs.items()}, args.repeats, warmup=3)
        rows += [(f'{preset} {size}²', name, med[name], med[name] / med['eager'], errs[name]) for name in runs]
        setup.append(f'{preset} {size}²: ' + ', '.join(f'{name} {s:.0f} s' for name, s in costs.items()))

print(f'\n| model | runtime | ms | time / eager | max abs Δlogit |\n|---|---|---|---|---|')
for model_name, name, t, ratio, err in rows: print(f'| {model_name} | {name} | {1e3 * t:.2f} | {ratio:.2f} | {err:.1e} |')
print('\none-off costs: ' + '; '.join(setup))
