"""The up-front image check (`LabelledImages.check_images`) next to one epoch's reading of the same images
(`load_image` of each, one after another in one process), and what each way of checking one image finds and costs.

    OMP_NUM_THREADS=1 python benchmarks/image_check.py [--sizes 1000 100000] [--px 96] [--workers 8] [--folder DIR]

Writes N small JPEGs (px × px, about 2 KB each, 1,000 to a folder) and a list file into a temporary folder, and
removes it afterwards. The files were just written, so both the check and the epoch read them from the page cache;
from a cold disk both are slower.
"""
import argparse, io, os, shutil, statistics, tempfile, time, warnings
import numpy as np
from pathlib import Path
from PIL import Image
from hsvlt_lite.data import ListFileDataset, load_image, check_image

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument('--sizes', type=int, nargs='+', default=[1000, 100_000])
p.add_argument('--px', type=int, default=96)
p.add_argument('--workers', type=int, default=8)
p.add_argument('--folder', default=None, help='where to make the temporary folder (default: the system temp folder)')
args = p.parse_args()


def jpeg_bytes(rng, px, quality=90):
    "A smooth random picture (two colour gradients and a little noise) as JPEG bytes."
    y, x = np.mgrid[0:px, 0:px] / px
    a, b = rng.integers(0, 256, (2, 3))
    im = a * x[..., None] + b * y[..., None] + rng.normal(0, 4, (px, px, 3))
    out = io.BytesIO()
    Image.fromarray(np.clip(im, 0, 255).astype(np.uint8)).save(out, 'JPEG', quality=quality)
    return out.getvalue()


def seconds(f):
    t = time.perf_counter(); f(); return time.perf_counter() - t


# --- what each way of checking finds, and what it costs -------------------------------------------------------------

def by_open(path):
    with Image.open(path) as im: im.size, im.mode

def by_verify(path):
    with Image.open(path) as im: im.verify()

def by_draft(path): check_image(path, 'list.txt:1')

def by_load(path): load_image(path, 'list.txt:1')

WAYS = {'open+size': by_open, 'verify': by_verify, 'draft 1/8 (check_image)': by_draft, 'full decode (load_image)': by_load}


def bad_files(folder, rng):
    "Broken files of the kinds people meet: cut downloads, empty files, text, flipped bits."
    good = jpeg_bytes(rng, 96)
    noisy = folder / 'noisy.png'
    Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(noisy)
    png = noisy.read_bytes()
    idat = png.index(b'IDAT') + 4
    files = {'JPEG cut at 1/2': good[:len(good) // 2], 'JPEG cut 100 bytes short': good[:-100],
             'JPEG without its end marker': good[:-2],
             'JPEG, 64 bytes of junk mid-scan': good[:len(good) // 2] + bytes(rng.integers(0, 256, 64, dtype=np.uint8)) + good[len(good) // 2 + 64:],
             'empty file': b'', 'text named .jpg': b'<html>404 Not Found</html>\n',
             'PNG cut at 1/2': png[:len(png) // 2],
             'PNG, IHDR checksum wrong': png[:29] + bytes([png[29] ^ 1]) + png[30:],
             'PNG, one bit of pixel data flipped': png[:idat + 40] + bytes([png[idat + 40] ^ 4]) + png[idat + 41:]}
    for i, (name, data) in enumerate(files.items()): (folder / f'bad{i}').write_bytes(data)
    return {name: folder / f'bad{i}' for i, name in enumerate(files)}


def finds(way, path):
    try: way(path)
    except Exception: return 'found'
    return '-'


def per_image_us(way, path, n=300):
    times = []
    for _ in range(n):
        t = time.perf_counter(); way(path); times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e6


def ways_table(folder):
    rng = np.random.default_rng(0)
    bad = bad_files(folder, rng)
    width = max(map(len, bad)) + 2
    print('What each way of checking finds:')
    print(' ' * width + ''.join(f'{w:>26}' for w in WAYS))
    for name, path in bad.items(): print(f'{name:<{width}}' + ''.join(f'{finds(way, path):>26}' for way in WAYS.values()))
    for px, size in ((args.px, f'{args.px}x{args.px}'), (500, '500x375')):
        path = folder / f'good{px}.jpg'
        if px == 500:
            Image.fromarray(np.clip(np.mgrid[0:375, 0:500][1][..., None] / 2 + rng.normal(0, 20, (375, 500, 3)), 0, 255).astype(np.uint8)).save(path, quality=90)
        else: path.write_bytes(jpeg_bytes(rng, px))
        print(f'{"cost, µs, JPEG " + size:<{width}}' + ''.join(f'{per_image_us(way, path):>26.0f}' for way in WAYS.values()))
    print()


# --- the check against one epoch's reading ----------------------------------------------------------------------------

def timing(folder, n):
    rng = np.random.default_rng(n)
    pool = [jpeg_bytes(rng, args.px) for _ in range(256)]
    root = folder / f'n{n}'
    t = time.perf_counter()
    lines = []
    for i in range(n):
        sub = root / f'{i // 1000:03d}'
        if i % 1000 == 0: sub.mkdir(parents=True)
        (sub / f'{i:06d}.jpg').write_bytes(pool[i % len(pool)])
        lines.append(f'{i // 1000:03d}/{i:06d}.jpg\tcat\n')
    (root / 'list.txt').write_text(''.join(lines))
    written = time.perf_counter() - t
    size = sum(len(pool[i % len(pool)]) for i in range(n)) / n
    t = time.perf_counter()
    ds = ListFileDataset(root, root / 'list.txt', ['cat'])
    build = time.perf_counter() - t
    check = seconds(lambda: ds.check_images(args.workers))
    check_1 = seconds(lambda: ds.check_images(1))
    epoch = seconds(lambda: [load_image(path, w) for path, w in zip(ds.paths, ds.where)])
    print(f'N = {n:,} JPEGs of {args.px}x{args.px} px, {size / 1024:.1f} KB each on average (written in {written:.1f} s)')
    print(f'  building the dataset (parse the list, stat every file):  {build:8.2f} s')
    print(f'  check_images(workers={args.workers}):                           {check:8.2f} s   ({check / n * 1e6:.0f} µs an image)')
    print(f'  check_images(workers=1):                           {check_1:8.2f} s   ({check_1 / n * 1e6:.0f} µs an image)')
    print(f'  one epoch of load_image, one process:              {epoch:8.2f} s   ({epoch / n * 1e6:.0f} µs an image)')
    print(f'  check / epoch:  {check / epoch:.2f} (workers={args.workers}),  {check_1 / epoch:.2f} (workers=1)')
    print(f'  load average now: {", ".join(f"{x:.1f}" for x in os.getloadavg())} on {os.cpu_count()} CPUs\n', flush=True)
    shutil.rmtree(root)


folder = Path(tempfile.mkdtemp(prefix='image_check_', dir=args.folder))
try:
    warnings.simplefilter('ignore')          # libjpeg's warnings on the broken files are not what is measured
    ways_table(folder)
    for n in args.sizes: timing(folder, n)
finally: shutil.rmtree(folder, ignore_errors=True)
