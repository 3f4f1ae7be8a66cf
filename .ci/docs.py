"""Build the docs site: every notebook in nbs/, as stored (executed, with its outputs), as one static HTML page
in _docs/ (settings.ini's doc_path), in reading order, with navigation, pictures inline and equations set by
MathJax. No Quarto: jupyter's nbconvert does the pages.

    python .ci/docs.py [--out DIR]

MathJax: an offline copy where Debian's libjs-mathjax provides one (/usr/share/javascript/mathjax, copied into
the site), else the usual CDN, with the TeX left readable in the page when it cannot load. Each page also
records, once loaded, how many of its images loaded and how many formulas MathJax set (attributes of <body>),
for the browser check in tests/test_docs.py.
"""
import argparse, html, re, shutil, sys, time
from configparser import ConfigParser
from pathlib import Path
import nbformat
from nbconvert import HTMLExporter

ROOT = Path(__file__).resolve().parents[1]
MATHJAX = Path('/usr/share/javascript/mathjax')
CDN = 'https://cdnjs.cloudflare.com/ajax/libs/mathjax/2.7.7/latest.js?config=TeX-AMS_CHTML-full,Safe'
STYLE = """<style>
.site-nav { font: 14px/1.4 system-ui, sans-serif; padding: 8px 16px; background: #f3f4f6; border-bottom: 1px solid #ddd; }
.site-nav a { margin-right: 10px; white-space: nowrap; }
.site-nav .here { font-weight: bold; margin-right: 10px; }
.site-pager { font: 14px system-ui, sans-serif; display: flex; justify-content: space-between; padding: 16px; border-top: 1px solid #ddd; }
</style>"""
CHECK = """<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute('data-images', ok + '/' + imgs.length);
  if (window.MathJax && MathJax.Hub) MathJax.Hub.Queue(function () {
    document.body.setAttribute('data-mathjax', String(document.querySelectorAll('.MathJax_CHTML, .MathJax').length));
  });
  else document.body.setAttribute('data-mathjax', 'absent');
});
</script>"""


def notebooks(nbs):
    "The notebooks in reading order: the index first, then by their numbers."
    paths = sorted(nbs.glob('*.ipynb'))
    return sorted(paths, key=lambda p: (p.stem != 'index', p.stem))


def title(nb, path):
    "The notebook's first level-1 heading, or its file name."
    for cell in nb.cells:
        if cell.cell_type == 'markdown':
            m = re.search(r'^# (.+)$', cell.source, re.M)
            if m: return m.group(1).strip()
    return path.stem


def readable(nb):
    "The notebook as a reader sees it: nbdev's `#|` directive lines dropped, and code cells left empty by that."
    cells = []
    for cell in nb.cells:
        if cell.cell_type == 'code':
            cell.source = '\n'.join(line for line in cell.source.splitlines() if not line.startswith('#|')).strip('\n')
            if not cell.source and not cell.get('outputs'): continue
        cells.append(cell)
    nb.cells = cells
    return nb


def nav(pages, here):
    "The bar at the top of every page: each notebook by its file name, the current one in bold."
    items = [f'<span class="here">{html.escape(p)}</span>' if p == here else f'<a href="{p}.html">{html.escape(p)}</a>' for p in pages]
    return f'<nav class="site-nav">{" ".join(items)}</nav>'


def pager(pages, titles, here):
    "Previous and next in reading order."
    i = pages.index(here)
    prev = f'<a href="{pages[i - 1]}.html">&larr; {html.escape(titles[pages[i - 1]])}</a>' if i > 0 else '<span></span>'
    nxt = f'<a href="{pages[i + 1]}.html">{html.escape(titles[pages[i + 1]])} &rarr;</a>' if i + 1 < len(pages) else '<span></span>'
    return f'<nav class="site-pager">{prev}{nxt}</nav>'


def link_names(body, pages):
    "Notebook names written as code in the text (`12_emoji`) become links to their pages."
    return re.sub(r'<code>(\d\d_\w+)</code>', lambda m: f'<a href="{m.group(1)}.html"><code>{m.group(1)}</code></a>' if m.group(1) in pages else m.group(0), body)


def build(out):
    "Write the site to `out`; returns the page names in reading order."
    cfg = ConfigParser(); cfg.read(ROOT / 'settings.ini')
    nbs = ROOT / cfg['DEFAULT'].get('nbs_path', 'nbs')
    out.mkdir(parents=True, exist_ok=True)
    if MATHJAX.is_dir():
        shutil.copytree(MATHJAX, out / 'mathjax', dirs_exist_ok=True, ignore=shutil.ignore_patterns('unpacked', 'test'))
        mathjax = 'mathjax/MathJax.js?config=TeX-AMS_CHTML-full,Safe'
    else: mathjax = CDN
    exporter = HTMLExporter(template_name='lab', mathjax_url=mathjax, exclude_input_prompt=True, exclude_output_prompt=True)
    paths = notebooks(nbs)
    books = {p.stem: nbformat.read(p, as_version=4) for p in paths}
    pages = list(books)
    titles = {p: title(nb, Path(p)) for p, nb in books.items()}
    for p, nb in books.items():
        body, _ = exporter.from_notebook_node(readable(nb), resources={'metadata': {'name': titles[p]}})
        body = link_names(body, pages)
        body = body.replace('</head>', STYLE + '\n</head>', 1)
        body = re.sub(r'(<body[^>]*>)', lambda m: m.group(1) + '\n' + nav(pages, p), body, count=1)
        body = body.replace('</body>', pager(pages, titles, p) + '\n' + CHECK + '\n</body>', 1)
        (out / f'{p}.html').write_text(body, encoding='utf-8')
    return pages


if __name__ == '__main__':
    cfg = ConfigParser(); cfg.read(ROOT / 'settings.ini')
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--out', type=Path, default=ROOT / cfg['DEFAULT'].get('doc_path', '_docs'), help='site folder (default: settings.ini doc_path)')
    a = ap.parse_args()
    t0 = time.perf_counter()
    pages = build(a.out)
    print(f"{len(pages)} pages in {a.out} ({time.perf_counter() - t0:.1f} s; MathJax: {'offline copy' if MATHJAX.is_dir() else 'CDN'})", file=sys.stderr)
