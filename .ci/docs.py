"""Build the docs site: every notebook in nbs/, as stored (executed, with its outputs), as a page of a Sphinx site
(MyST-NB, sphinx-book-theme) in _docs/ (settings.ini's doc_path), with the navigation grouped by part, search,
code copy buttons and equations set by MathJax. No Quarto.

    python .ci/docs.py [--out DIR]

Sphinx reads processed copies written to a build folder, never nbs/ itself:
- each notebook as a reader sees it: `#| hide` cells removed, the code of `#| echo: false` cells hidden (their
  output stays), the other `#|` directive lines dropped, notebook names written as code (`12_emoji`) linked to
  their pages;
- nbs/index.ipynb in two pages: the landing page (00's data-flow figure, index's first paragraph, "Start the
  course", then index's sections that show no commands) and the Usage page (the sections that show commands or
  code). The landing page also holds the navigation: one toctree per part.
The Sphinx configuration is .ci/site/conf.py; it copies Debian's libjs-mathjax into the site for offline formulas.
"""
import argparse, base64, re, shutil, sys, tempfile, time
from configparser import ConfigParser
from pathlib import Path
import nbformat
from nbformat.v4 import new_markdown_cell, new_notebook
from sphinx.cmd.build import build_main

ROOT = Path(__file__).resolve().parents[1]
CONF = Path(__file__).resolve().parent / 'site'
PARTS = (("The paper's path", 0), ('Data', 10), ('Training', 14), ('Evidence', 30))   # name, first notebook number
APPENDICES = 'Appendices'                                                             # A1_stem, A2_nano, ...
DIRECTIVE = re.compile(r'#\|')
HIDE = re.compile(r'#\|\s*hide\b')
NO_ECHO = re.compile(r'#\|\s*echo:\s*false\b')       # Quarto's: show the output, not the code
FENCE = re.compile(r'(```.*?```)', re.S)


def settings():
    cfg = ConfigParser(delimiters=['=']); cfg.read(ROOT / 'settings.ini', encoding='utf-8')
    return cfg['DEFAULT']


def part(name):
    "The part of the course a notebook belongs to, from its file name."
    if re.match(r'A\d', name): return APPENDICES
    number = int(re.match(r'(\d+)_', name).group(1))
    return [p for p, first in PARTS if number >= first][-1]


def link_names(text, names):
    "Notebook names written as code in Markdown (`12_emoji`) become links to their pages; fenced code is left alone."
    def link(m): return f'[`{m.group(1)}`]({m.group(1)}.ipynb)' if m.group(1) in names else m.group(0)
    return ''.join(chunk if chunk.startswith('```') else re.sub(r'(?<!\[)`(\w+)`', link, chunk) for chunk in FENCE.split(text))


def readable(nb, names):
    """The notebook as a reader sees it: `#| hide` cells gone, `#| echo: false` cells' code hidden, `#|` lines dropped
    (and code cells left empty by that)."""
    cells = []
    for cell in nb.cells:
        lines = cell.source.splitlines()
        if cell.cell_type == 'code':
            if any(HIDE.match(line) for line in lines): continue
            if any(NO_ECHO.match(line) for line in lines): cell.metadata['tags'] = cell.metadata.get('tags', []) + ['remove-input']
            cell.source = '\n'.join(line for line in lines if not DIRECTIVE.match(line)).strip('\n')
            if not cell.source and not cell.get('outputs'): continue
        elif cell.cell_type == 'markdown':
            cell.source = link_names(cell.source, names)
        cells.append(cell)
    nb.cells = cells
    nb.metadata['language_info'] = {'name': 'python', 'pygments_lexer': 'ipython3'}   # nbdev_clean drops it
    return nb


def sections(cells):
    "Cells split at level-2 headings (outside fenced code): [(heading, cells)], the part before the first headed ''."
    out = [('', [])]
    for cell in cells:
        if cell.cell_type != 'markdown':
            out[-1][1].append(cell); continue
        chunk, fenced = [], False
        for line in cell.source.splitlines() + ['## ']:          # a sentinel heading flushes the last chunk
            if line.startswith('```'): fenced = not fenced
            if line.startswith('## ') and not fenced:
                if '\n'.join(chunk).strip(): out[-1][1].append(new_markdown_cell('\n'.join(chunk).strip('\n')))
                if line != '## ': out.append((line[3:].strip(), []))
                chunk = []
            chunk.append(line)
    return out


def shows_commands(cells):
    return any(c.cell_type == 'code' or re.search(r'^```', c.source, re.M) for c in cells)


def figure(nb, heading=re.compile(r'^#+ .*data flow', re.I | re.M)):
    "The PNG drawn by the first code cell after the notebook's data-flow heading."
    seen = False
    for cell in nb.cells:
        seen = seen or (cell.cell_type == 'markdown' and bool(heading.search(cell.source)))
        for out in cell.get('outputs', []) if seen else []:
            if 'image/png' in out.get('data', {}): return base64.b64decode(out['data']['image/png'])
    raise ValueError('no image output after a "data flow" heading in 00_overview')


def landing(index, names, toctrees):
    "The landing page (MyST Markdown) and the Usage notebook, both from the index notebook's sections."
    (_, intro), *rest = sections(index.cells)
    text = re.sub(r'^(# .*)\n', r'\1\n\n', '\n\n'.join(c.source for c in intro), flags=re.M)    # the title on its own
    text = re.split(r'\n\s*\n', text)                                                               # paragraphs
    title = next(p for p in text if p.startswith('# '))
    first = next(p for p in text if not p.startswith(('#', '>')))
    more = [p for p in text if p not in (title, first)]
    usage = [c for h, cells in rest if shows_commands(cells) for c in cells]
    shown = [c.source for h, cells in rest if not shows_commands(cells) for c in cells]
    page = [title, f"![HSVLT's data flow](dataflow.png)", first,
            f'[Start the course &rarr;]({names[0]}.ipynb){{.btn .btn-primary .start-course}}', *more, *shown, *toctrees]
    book = new_notebook(cells=[new_markdown_cell('# Usage'), *usage], metadata=index.metadata)
    return '\n\n'.join(page) + '\n', book


def toctree(caption, docs):
    return '\n'.join(['```{toctree}', ':hidden:', f':caption: {caption}', '', *docs, '```'])


def prepare(src):
    "Write the site's sources to `src`; returns the page names in reading order."
    nbs = ROOT / settings().get('nbs_path', 'nbs')
    names = sorted(p.stem for p in nbs.glob('*.ipynb') if p.stem != 'index')
    for name in names:
        nbformat.write(readable(nbformat.read(nbs / f'{name}.ipynb', as_version=4), names), src / f'{name}.ipynb')
    groups = {}
    for name in names: groups.setdefault(part(name), []).append(name)
    toctrees = [toctree('Using hsvlt_lite', ['usage'])] + [toctree(p, groups[p]) for p, _ in (*PARTS, (APPENDICES, 0)) if p in groups]
    index = readable(nbformat.read(nbs / 'index.ipynb', as_version=4), names)
    overview = nbformat.read(nbs / f'{names[0]}.ipynb', as_version=4)
    page, usage = landing(index, names, toctrees)
    (src / 'index.md').write_text(page, encoding='utf-8')
    (src / 'dataflow.png').write_bytes(figure(overview))
    nbformat.write(usage, src / 'usage.ipynb')
    return ['index', 'usage', *names]


def build(out):
    """Write the site to `out`; returns the page names in reading order. Sphinx's warnings stop the build.
    Sphinx writes into the build folder, and the site is copied to `out` from there: MyST-NB puts a folder of its
    own beside the site (jupyter_execute/), which must not land beside `out` (the repository, for _docs/)."""
    with tempfile.TemporaryDirectory(prefix='hsvlt-site-') as tmp:
        tmp = Path(tmp); src = tmp / 'src'; src.mkdir()
        pages = prepare(src)
        rc = build_main(['-b', 'html', '-q', '-W', '--keep-going', '-c', str(CONF), '-d', str(tmp / 'doctrees'), str(src), str(tmp / 'site')])
        if rc: raise RuntimeError(f'sphinx-build failed ({rc}): see its messages above')
        shutil.copytree(tmp / 'site', out, dirs_exist_ok=True)
    return pages


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--out', type=Path, default=ROOT / settings().get('doc_path', '_docs'), help='site folder (default: settings.ini doc_path)')
    a = ap.parse_args()
    t0 = time.perf_counter()
    pages = build(a.out)
    print(f'{len(pages)} pages in {a.out} ({time.perf_counter() - t0:.1f} s)', file=sys.stderr)
