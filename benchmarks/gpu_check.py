"""Ready for the first GPU (issue 15, section 5): every CUDA path of the library in one run, a row each, as a Markdown table.

    python benchmarks/gpu_check.py [--device cuda] [--json benchmarks/results/gpu_check.json]

Rows: fp32 logits of nano (64²) and small (448²) on CUDA against the CPU, TF32 off (max |Δ| <= 1e-4); `--steps` training
steps of nano through `fit` on one fixed batch of the bundled digits in fp32, bf16 and fp16, eager, channels-last, and
`torch.compile` + channels-last (every loss finite, the last below the first, the first equal to the CPU's fp32 forward);
`torchrun --nproc_per_node 1` through `hsvlt train` (NCCL on CUDA, gloo on the CPU); training images/s of small at 448²,
batch 32, bf16 against fp32. Target: under five minutes on one GPU.

Without CUDA (or with --device cpu) it runs what a CPU can and says `skipped: ...` for the rest: the CUDA parities and fp16;
`torch.compile` only with --cpu-compile, the speed row only with smaller --speed-preset/--speed-size, e.g. nano and 64.
Exit code 1 when a check that ran failed.
"""
import argparse, copy, dataclasses, gc, json, math, os, shutil, socket, subprocess, sys, tempfile, time, traceback
import torch
from contextlib import contextmanager
from pathlib import Path
from torch.utils.data import DataLoader
from common import hsvlt, train_step, interleaved_medians
from hsvlt_lite.labels import embed_labels
from hsvlt_lite.model import HSVLT, HSVLTConfig
from hsvlt_lite.scenes import DIGIT_NAMES, MultiScaleDigits
from hsvlt_lite.train import TrainConfig, check_device, fit, make_loss

PARITY_TOL = 1e-4                                                   # max |Δ| of fp32 logits, CUDA against the CPU
FIRST_LOSS_TOL = {'none': 5e-3, 'bf16': 2e-2, 'fp16': 2e-2}         # first training loss against the CPU's fp32 forward (CUDA: TF32 convolutions)
PRECISION = {'none': 'fp32', 'bf16': 'bf16', 'fp16': 'fp16'}        # TrainConfig.amp -> the row's name
SPEED = dict(preset='small', size=448, batch=32)


class Skip(Exception): "A check that cannot run here; the message says why."


@dataclasses.dataclass
class Row:
    name: str
    device: str
    status: str          # 'ok' | 'FAIL: why' | 'skipped: why'
    figure: str
    seconds: float
    detail: dict


def run_check(name, device, fn):
    "Run check `fn` -> (figure, detail, problem or None) and time it; an exception is a FAIL row, `Skip` a skipped one."
    t = time.perf_counter()
    try:
        figure, detail, problem = fn()
        if device.type == 'cuda': torch.cuda.synchronize(device)
        status = 'ok' if problem is None else f'FAIL: {problem}'
    except Skip as e: figure, detail, status = '', {}, f'skipped: {e}'
    except Exception as e:
        traceback.print_exc()
        figure, detail, status = '', {}, f"FAIL: {type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]}"
    if device.type == 'cuda': gc.collect(); torch.cuda.empty_cache()
    return Row(name, str(device), status, figure, round(time.perf_counter() - t, 2), detail)


@contextmanager
def no_tf32():
    "CUDA matmuls and convolutions in full fp32 (cuDNN's convolutions use TF32 by default) inside the block."
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try: yield
    finally: torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def nano(seed):
    "HSVLT-nano for the 10 digits with the shipped MiniLM label vectors, its weights fixed by `seed`."
    torch.manual_seed(seed)
    return HSVLT(HSVLTConfig.preset('nano', text_dim=384), embed_labels(DIGIT_NAMES, 'minilm'))


def digits_batch(n, size, seed):
    "One fixed batch of `n` bundled digit canvases: normalised images `b 3 h w`, targets `b 10`."
    return next(iter(DataLoader(MultiScaleDigits('train', n=n, size=size, seed=seed), batch_size=n)))


def cpu_first_loss(model, batch):
    "The loss of `model` (in training mode, as `fit` sees it) on `batch`, fp32 on the CPU, its weights untouched."
    m = copy.deepcopy(model).cpu().train()
    with torch.no_grad(): return make_loss('bce')(m(batch[0]), batch[1]).item()


def parity(device, cuda_off, preset, size, seed):
    "Max |Δ| of fp32 eval logits of `preset` at `size`², two images, on `device` against the CPU."
    if cuda_off: raise Skip(cuda_off)
    torch.manual_seed(seed)
    model = (nano(seed) if preset == 'nano' else hsvlt(preset, k=80, d=384)).eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad(): ref = model(x)
    with no_tf32(), torch.no_grad(): out = model.to(device)(x.to(device)).cpu()
    diff = (out - ref).abs().max().item()
    figure = f'max |Δ| {diff:.1e} (|logit| <= {ref.abs().max().item():.2f})'
    return figure, dict(max_abs_diff=diff, max_abs_logit=ref.abs().max().item()), None if diff <= PARITY_TOL else f'max |Δ| {diff:.2e} > {PARITY_TOL:g}'


def training(device, amp, batch, steps, seed, reference, channels_last=False, compile=False):
    "`steps` steps of nano through `fit` on the one `batch`: every loss finite, the last below the first, the first the CPU's `reference`."
    model = nano(seed)
    cfg = TrainConfig(epochs=1, steps_per_epoch=steps, batch_size=len(batch[0]), lr=3e-3, warmup_images=0, device=str(device),
                      amp=amp, channels_last=channels_last, compile=compile, seed=seed, progress=False)
    losses = fit(model, DataLoader([batch] * steps, batch_size=None), None, cfg)[0]['losses']
    figure = f'loss {losses[0]:.3f} → {losses[-1]:.3f} in {steps} steps'
    problems = [msg for bad, msg in ((not all(map(math.isfinite, losses)), 'a loss is not finite'),
                                     (not losses[-1] < losses[0], 'the loss did not fall'),
                                     (not abs(losses[0] - reference) <= FIRST_LOSS_TOL[amp],
                                      f'first loss {losses[0]:.4f} is not the CPU fp32 forward\'s {reference:.4f} ± {FIRST_LOSS_TOL[amp]:g}')) if bad]
    return figure, dict(losses=losses, cpu_fp32_first_loss=reference), '; '.join(problems) or None


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def torchrun_train(device, steps, test_size, seed):
    "`torchrun --nproc_per_node 1 hsvlt train` on the bundled digits, `steps` steps, into a temporary run folder; then its files read back."
    exe = shutil.which('hsvlt', path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get('PATH', '')]))
    if exe is None: return '', {}, 'the hsvlt command is not installed (pip install -e .)'
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / 'run'
        cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '1', '--master_addr', '127.0.0.1', '--master_port', str(free_port()),
               exe, 'train', '--device', str(device), '--epochs', '1', '--steps-per-epoch', str(steps), '--test-size', str(test_size),
               '--seed', str(seed), '--out', str(out)]
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp)
        if run.returncode:
            lines = [l for l in (run.stderr + run.stdout).splitlines() if l.strip()]
            return '', dict(stderr=run.stderr[-4000:]), f'exit code {run.returncode}: {lines[-1] if lines else ""}'
        metrics = json.loads((out / 'metrics.json').read_text())
        ckpt = torch.load(out / 'model.pt', map_location='cpu', weights_only=True)
    losses, said = ckpt['history'][-1]['losses'], [l for l in run.stdout.splitlines() if l.startswith('mAP: ')]
    detail = dict(command=' '.join(cmd[2:]), losses=losses, mAP=metrics['mAP'], step=ckpt['history'][-1]['step'],
                  device=metrics['config']['train']['device'], processes=len(ckpt['rng']))
    problems = [msg for bad, msg in ((len(losses) != steps or detail['step'] != steps, f'{len(losses)} steps logged, not {steps}'),
                                     (not all(map(math.isfinite, losses)), 'a loss is not finite'),
                                     (detail['device'] != str(device), f"trained on {detail['device']!r}, not {str(device)!r}"),
                                     (detail['processes'] != 1, f"{detail['processes']} processes saved their state, not 1"),
                                     (said != [f"mAP: {metrics['mAP']:.4f}"], "the last line is not the mAP of metrics.json")) if bad]
    return f"loss {losses[0]:.3f} → {losses[-1]:.3f} in {steps} steps, test mAP {metrics['mAP']:.3f}", detail, '; '.join(problems) or None


def speed(device, preset, size, batch, repeats):
    "Training images/s (forward + backward) of `preset` at `size`², `batch`, bf16 autocast against fp32; median of interleaved repeats."
    model = hsvlt(preset, k=80).to(device).train()
    x = torch.randn(batch, 3, size, size, device=device)
    def step(dtype):
        def run():
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None): train_step(model, x)
            if device.type == 'cuda': torch.cuda.synchronize(device)
        return run
    med, _ = interleaved_medians({'fp32': step(None), 'bf16': step(torch.bfloat16)}, repeats)
    ips = {name: batch / t for name, t in med.items()}
    ratio = ips['bf16'] / ips['fp32']
    figure = f"bf16 {ips['bf16']:.1f} / fp32 {ips['fp32']:.1f} images/s = {ratio:.2f}×"
    return figure, dict(images_per_s=ips, ratio=ratio), 'bf16 is slower than fp32' if device.type == 'cuda' and ratio < 1 else None


def checks(args, device):
    "The rows, in order: (name, check) with `check()` -> (figure, detail, problem)."
    cuda_off = None if device.type == 'cuda' else 'CUDA not used (--device cpu)' if torch.cuda.is_available() else 'no CUDA here'
    batch = digits_batch(args.batch, args.size, args.seed)
    reference = cpu_first_loss(nano(args.seed), batch)
    rows = [('fp32 logits nano 64²: CUDA vs CPU', lambda: parity(device, cuda_off, 'nano', 64, args.seed)),
            ('fp32 logits small 448²: CUDA vs CPU', lambda: parity(device, cuda_off, 'small', 448, args.seed))]
    for variant, kw in (('eager', {}), ('channels-last', dict(channels_last=True)), ('compile + channels-last', dict(channels_last=True, compile=True))):
        for amp in ('none', 'bf16', 'fp16'):
            def check(amp=amp, kw=kw):
                if amp == 'fp16' and cuda_off: raise Skip(f'fp16 needs CUDA (its GradScaler); {cuda_off}')
                if kw.get('compile') and device.type == 'cpu' and not args.cpu_compile:
                    raise Skip('torch.compile on the CPU builds C++ kernels for minutes: give --cpu-compile')
                return training(device, amp, batch, args.steps, args.seed, reference, **kw)
            rows.append((f'train {PRECISION[amp]} {variant}', check))
    rows.append((f"torchrun ×1 hsvlt train ({'nccl' if device.type == 'cuda' else 'gloo'})", lambda: torchrun_train(device, args.torchrun_steps, args.test_size, args.seed)))
    sp = {k: getattr(args, f'speed_{k}') or v for k, v in SPEED.items()}
    def speed_check():
        if device.type == 'cpu' and not (args.speed_preset or args.speed_size):
            raise Skip(f"{cuda_off}, and {sp['preset']} at {sp['size']}² is too slow on the CPU: give e.g. --speed-preset nano --speed-size 64")
        return speed(device, sp['preset'], sp['size'], sp['batch'], args.speed_repeats)
    rows.append((f"images/s {sp['preset']} {sp['size']}² b{sp['batch']}: bf16 vs fp32", speed_check))
    return rows


def table(rows):
    "The rows as a Markdown table."
    lines = ['| check | device | status | figure | seconds |', '|---|---|---|---|---:|']
    return '\n'.join(lines + [f'| {r.name} | {r.device} | {r.status} | {r.figure} | {r.seconds:.1f} |' for r in rows])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu', help="'cuda', 'cuda:N' or 'cpu' (default: cuda when torch sees one)")
    p.add_argument('--steps', type=int, default=25, help='training steps on the fixed batch')
    p.add_argument('--batch', type=int, default=32, help='images in the fixed batch')
    p.add_argument('--size', type=int, default=64, help='side of the digit canvases')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--cpu-compile', action='store_true', help='run the torch.compile rows on the CPU too (slow)')
    p.add_argument('--torchrun-steps', type=int, default=5)
    p.add_argument('--test-size', type=int, default=64, help='test canvases of the torchrun run')
    p.add_argument('--speed-preset', help=f"preset of the speed row (default {SPEED['preset']}; on the CPU giving this or --speed-size runs it)")
    p.add_argument('--speed-size', type=int, help=f"image side of the speed row (default {SPEED['size']})")
    p.add_argument('--speed-batch', type=int, help=f"batch of the speed row (default {SPEED['batch']})")
    p.add_argument('--speed-repeats', type=int, default=10)
    p.add_argument('--json', type=Path, help='also write the rows to this JSON file')
    args = p.parse_args(argv)
    try: device = check_device(args.device)
    except ValueError as e: p.error(str(e))
    if device.type == 'cuda' and device.index is None: device = torch.device('cuda', torch.cuda.current_device())

    t0 = time.perf_counter()
    rows = []
    for name, fn in checks(args, device):
        rows.append(run_check(name, device, fn))
        print(f'{rows[-1].status:8.8} {rows[-1].seconds:6.1f} s  {name}  {rows[-1].figure}', file=sys.stderr, flush=True)
    total = time.perf_counter() - t0
    where = torch.cuda.get_device_name(device) if device.type == 'cuda' else f'CPU, {torch.get_num_threads()} threads'
    print(f'torch {torch.__version__} on {where}, {total:.0f} s in all\n')
    print(table(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(dict(torch=torch.__version__, device=where, seconds=round(total, 1), argv=sys.argv[1:] if argv is None else argv,
                                             rows=[dataclasses.asdict(r) for r in rows]), indent=1))
    return 1 if any(r.status.startswith('FAIL') for r in rows) else 0


if __name__ == '__main__': sys.exit(main())
