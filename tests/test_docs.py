"""The docs site of .ci/docs.py (Sphinx, MyST-NB, sphinx-book-theme): a page per notebook under its own title, the
navigation grouped by part, `#|` lines and `#| hide` cells gone, the landing and Usage pages made from
nbs/index.ipynb, no broken internal link and nothing loaded from elsewhere; and in headless Chromium every page
renders with its images loaded, its formulas set by the offline MathJax and a copy button on every code block,
search finds pages, and the landing page (first screen) and 02 are screenshotted (into $HSVLT_SCREENSHOTS if set)."""
import base64, functools, json, os, re, shutil, subprocess, sys, pytest
from pathlib import Path
from urllib.parse import unquote, urlsplit
from bs4 import BeautifulSoup
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook
from PIL import Image
from conftest import ROOT

sys.path.insert(0, str(ROOT / '.ci'))
import docs
from sphinx.ext.mathjax import MATHJAX_URL     # Sphinx's CDN default, after docs has loaded Sphinx

CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser')
FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync']
IMAGE_TYPES = ('image/png', 'image/jpeg', 'image/svg+xml')
NAMES = sorted(p.stem for p in (ROOT / 'nbs').glob('*.ipynb') if p.stem != 'index')
SCREEN = (1280, 800)                   # the landing page's first screen


@pytest.fixture(scope='module')
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp('docs') / 'site'
    return out, docs.build(out)


def notebook(name): return json.loads((ROOT / 'nbs' / f'{name}.ipynb').read_text())
def source(cell): return ''.join(cell['source'])
@functools.cache
def html(out, page): return BeautifulSoup((out / f'{page}.html').read_text(encoding='utf-8'), 'html.parser')


def title(name):
    return next(m.group(1).strip() for c in notebook(name)['cells'] if c['cell_type'] == 'markdown'
                for m in [re.search(r'^# (.+)$', source(c), re.M)] if m)


def pictures(name):
    "Image outputs stored in the notebook, counted from its JSON."
    return sum(any(t in o.get('data', {}) for t in IMAGE_TYPES) for c in notebook(name)['cells'] for o in c.get('outputs', []))


def formulas(name):
    "The $...$ and $$...$$ formulas of the notebook's Markdown, code and code spans left out."
    n = 0
    for c in notebook(name)['cells']:
        if c['cell_type'] != 'markdown': continue
        text = re.sub(r'`[^`\n]*`', '', re.sub(r'```.*?```', '', source(c), flags=re.S))
        text, display = re.subn(r'\$\$.+?\$\$', '', text, flags=re.S)
        n += display + len(re.findall(r'\$[^$\n]+\$', text))
    return n


def shown_code(name):
    "What a reader should see of the notebook's code: none of `#| hide` and `#| echo: false` cells, no `#|` line, no empty cell."
    cells = [c for c in notebook(name)['cells'] if c['cell_type'] == 'code' and not re.search(r'^#\|\s*(hide\b|echo:\s*false\b)', source(c), re.M)]
    code = ['\n'.join(l for l in source(c).splitlines() if not l.startswith('#|')).strip() for c in cells]
    return [s for s, c in zip(code, cells) if s or c.get('outputs')]


def plain(s):
    "Text as compared here: Markdown's marks dropped, quotes straightened (Sphinx curls them), spaces collapsed."
    return ' '.join(re.sub(r'[*`]', '', s).translate(str.maketrans('‘’“”', "''\"\"")).split())


def text(tag):
    "A tag's text, as compared here, without the heading-link marks Sphinx adds."
    for a in tag.select('a.headerlink'): a.decompose()
    return plain(tag.get_text())


def part(name):
    "The part a notebook belongs to, as the course is laid out."
    if name.startswith('A'): return 'Appendices'
    n = int(name[:2])
    return "The paper's path" if n < 10 else 'Data' if n < 14 else 'Training' if n < 30 else 'Evidence'


def test_a_page_for_every_notebook_under_its_title(site):
    out, pages = site
    assert pages == ['index', 'usage', *NAMES]
    assert [p.name for p in out.parent.iterdir()] == ['site']                  # the build leaves nothing beside the site
    for name in NAMES:
        page = html(out, name)
        assert text(page.find('h1')) == plain(title(name)) and plain(page.title.get_text()) == f'{plain(title(name))} — hsvlt_lite', name
    assert text(html(out, 'usage').find('h1')) == 'Usage' and text(html(out, 'index').find('h1')) == title('index')


def test_the_navigation_groups_the_notebooks_by_part_with_their_titles(site):
    out, pages = site
    want = [('Using hsvlt_lite', [('Usage', 'usage.html')])]
    for name in NAMES:
        if want[-1][0] != part(name): want.append((part(name), []))
        want[-1][1].append((plain(title(name)), f'{name}.html'))
    assert [w[0] for w in want] == ["Using hsvlt_lite", "The paper's path", 'Data', 'Training', 'Evidence', 'Appendices']
    for page in pages:
        nav = html(out, page).select_one('nav.bd-docs-nav')
        got = [(text(cap), [(text(a), f'{page}.html' if a['href'] == '#' else a['href']) for a in cap.find_next_sibling('ul').select('a.reference')])
               for cap in nav.select('p.caption')]
        assert got == want, page


def test_directive_lines_and_hidden_cells_are_gone(site):
    out, pages = site
    for name in NAMES:
        shown = [p.get_text().strip() for p in html(out, name).select('div.cell_input pre')]
        assert shown == shown_code(name), name
    assert [p.get_text().strip() for p in html(out, 'usage').select('div.cell_input pre')] == shown_code('index')
    assert any(re.match(r'#\|\s*hide', source(c)) for c in notebook('index')['cells'])     # so the line above removed one
    for page in pages:
        assert '#|' not in html(out, page).select_one('article').get_text(), page


def test_readable_hides_what_the_directives_say_and_drops_their_lines():
    nb = new_notebook(cells=[new_code_cell('#| hide\nimport secret'), new_code_cell('#| echo: false\ndraw()', outputs=[{'output_type': 'stream', 'name': 'stdout', 'text': 'drawn'}]),
                             new_code_cell('#| export\ndef f(): pass'), new_code_cell('#| default_exp ivla'), new_markdown_cell('see `02_ivla`, `x_y` and ```\n`02_ivla`\n```')])
    cells = docs.readable(nb, ['02_ivla']).cells
    assert [c.source for c in cells] == ['draw()', 'def f(): pass', 'see [`02_ivla`](02_ivla.ipynb), `x_y` and ```\n`02_ivla`\n```']
    assert [c.metadata.get('tags') for c in cells] == [['remove-input'], None, None] and cells[0].outputs[0]['text'] == 'drawn'


def test_the_landing_page_opens_on_the_data_flow_figure_a_paragraph_and_the_way_in(site):
    out, _ = site
    article = html(out, 'index').select_one('article')
    first = [t for t in article.find_all(['h1', 'img', 'p']) if t.name != 'p' or t.get_text(strip=True)][:4]
    assert [t.name for t in first] == ['h1', 'img', 'p', 'p']
    cells = notebook('00_overview')['cells']
    flow = next(i for i, c in enumerate(cells) if c['cell_type'] == 'markdown' and re.search(r'^#+ .*data flow', source(c), re.I | re.M))
    png = next(o['data']['image/png'] for c in cells[flow:] for o in c.get('outputs', []) if 'image/png' in o.get('data', {}))
    assert (out / first[1]['src']).read_bytes() == base64.b64decode(png)
    paragraphs = re.split(r'\n\s*\n', '\n\n'.join(source(c) for c in notebook('index')['cells'] if c['cell_type'] == 'markdown'))
    assert text(first[2]) == plain(next(p for p in paragraphs if not p.startswith(('#', '>'))))
    start = first[3].find('a')
    assert text(start) == 'Start the course →' and start['href'] == '00_overview.html'
    table = article.find('table')     # index's list of notebooks: each name, written as code, links to its page
    assert [a['href'] for a in table.select('a')] == [f'{name}.html' for name in NAMES] == [f"{text(c)}.html" for c in table.select('a code')]


def test_the_usage_page_has_the_cli_gpu_and_export_material_and_every_section_of_index_is_shown_once(site):
    out, _ = site
    commands = '\n'.join(p.get_text() for p in html(out, 'usage').select('article pre'))
    for line in ('pip install -e . && hsvlt train', 'hsvlt predict --ckpt', 'hsvlt export --ckpt', '--device cuda --amp bf16',
                 'torchrun --nproc_per_node 8'):
        assert line in commands, line
    headings = [h for c in notebook('index')['cells'] if c['cell_type'] == 'markdown'
                for h in re.findall(r'^#{2,3} (.+)$', re.sub(r'```.*?```', '', source(c), flags=re.S), re.M)]
    shown = [text(h) for page in ('index', 'usage') for h in html(out, page).select('article h2, article h3')]
    assert len(headings) > 5 and sorted(shown) == sorted(plain(h) for h in headings)


def test_no_internal_link_is_broken_and_nothing_is_loaded_from_elsewhere(site):
    out, pages = site
    files = sorted(out.glob('*.html'))
    cdn = set() if (out / '_static/mathjax/MathJax.js').is_file() else {MATHJAX_URL}     # without Debian's libjs-mathjax
    assert {f'{p}.html' for p in pages} | {'search.html', 'genindex.html'} <= {f.name for f in files}
    for f in files:
        page = html(out, f.stem)
        for tag in page.select('script[src], link[href], img[src]'):
            ref = tag.get('src') or tag.get('href')
            assert not urlsplit(ref).scheme or ref in cdn or (tag.name == 'link' and tag.get('rel') not in (['stylesheet'], ['preload'])), (f.name, ref)
        for tag in page.select('[href], [src]'):
            ref = urlsplit(tag.get('href') or tag.get('src'))
            if ref.scheme or not (ref.path or ref.fragment): continue
            target = (f.parent / unquote(ref.path)).resolve() if ref.path else f
            assert target.exists(), (f.name, ref.geturl())
            if ref.fragment and target.suffix == '.html':
                assert html(target.parent, target.stem).find(id=ref.fragment), (f.name, ref.geturl())


HARNESS = """<html><body><pre id="out">running</pre><script>
const site = %(site)s, pages = %(pages)s, query = %(query)s;
function frame(url, width, height) {
  const f = document.createElement('iframe'); f.style.width = width + 'px'; f.style.height = height + 'px';
  const loaded = new Promise(r => f.onload = r); f.src = url; document.body.appendChild(f);
  return loaded.then(() => f);
}
function raw(d) {   // text a reader sees outside code, formulas and scripts
  const walk = d.createTreeWalker(d.querySelector('article'), NodeFilter.SHOW_TEXT), out = [];
  while (walk.nextNode()) if (!walk.currentNode.parentElement.closest('pre, code, script, style, .MathJax_CHTML')) out.push(walk.currentNode.data);
  return out.join(' ');
}
async function check(page) {
  const f = await frame(site + page + '.html', %(width)d, %(height)d), w = f.contentWindow, d = f.contentDocument;
  if (w.MathJax && w.MathJax.Hub) await new Promise(r => w.MathJax.Hub.Queue(r));
  const imgs = Array.from(d.querySelectorAll('article img')), bottom = s => { const e = d.querySelector(s); return e ? e.getBoundingClientRect().bottom : null; };
  const r = {page, title: d.title, chars: d.querySelector('article').innerText.length,
    images: imgs.length, loaded: imgs.filter(i => i.complete && i.naturalWidth > 0).length,
    formulas: d.querySelectorAll('article .math').length, typeset: d.querySelectorAll('article .math .MathJax_CHTML').length,
    errors: d.querySelectorAll('article .MathJax_Error, article .mjx-error, article merror').length,
    mathjax: w.MathJax && w.MathJax.version || null, leftover: (raw(d).match(/\\$\\$|\\\\\\(|\\\\\\[/g) || []).length,
    code: d.querySelectorAll('article div.highlight pre').length, buttons: d.querySelectorAll('article button.copybtn').length,
    figure: bottom('article img'), start: bottom('article a.start-course')};
  f.remove(); return r;
}
async function search() {
  const f = await frame(site + 'search.html?q=' + query, 1280, 800), d = f.contentDocument;
  const summary = () => (d.querySelector('.search-summary') || {}).textContent || '';
  for (let i = 0; i < 200 && !/finished|did not match/.test(summary()); i++) await new Promise(r => setTimeout(r, 100));
  return {summary: summary(),
          hits: Array.from(d.querySelectorAll('#search-results li a')).map(a => a.getAttribute('href'))};
}
(async () => {
  const out = {pages: []};
  try { for (const p of pages) out.pages.push(await check(p)); out.search = await search(); }
  catch (e) { out.error = String(e); }
  document.getElementById('out').textContent = JSON.stringify(out);
})();
</script></body></html>"""


def chromium(*args, tmp_path):
    return subprocess.run([CHROMIUM, *FLAGS, f'--user-data-dir={tmp_path / "profile"}', *args], capture_output=True, text=True, timeout=600)


def test_every_page_in_headless_chromium(site, tmp_path):
    if not CHROMIUM:
        if os.environ.get('HSVLT_BROWSER_CHECK'): pytest.fail('HSVLT_BROWSER_CHECK is set but there is no chromium on PATH')
        pytest.skip("no chromium on PATH (.ci/run installs Debian's chromium)")
    out, pages = site
    assert (out / '_static/mathjax/MathJax.js').is_file(), "no offline MathJax in the site: install Debian's libjs-mathjax"
    harness = tmp_path / 'harness.html'
    harness.write_text(HARNESS % dict(site=json.dumps(out.as_uri() + '/'), pages=json.dumps(pages), query=json.dumps('einsum'),
                                      width=SCREEN[0], height=SCREEN[1]), encoding='utf-8')
    dom = chromium('--allow-file-access-from-files', '--virtual-time-budget=120000', '--dump-dom', harness.as_uri(), tmp_path=tmp_path).stdout
    result = json.loads(BeautifulSoup(dom, 'html.parser').select_one('#out').get_text())
    assert 'error' not in result and [r['page'] for r in result['pages']] == pages, result
    for r in result['pages']:
        name = r['page']
        assert r['chars'] > 300 and r['title'].endswith(' — hsvlt_lite'), r                                     # rendered
        want = 1 if name == 'index' else pictures('index' if name == 'usage' else name)
        assert r['images'] == r['loaded'] == want, r                                                          # every image loaded
        want = 0 if name in ('index', 'usage') else formulas(name)
        assert r['formulas'] == r['typeset'] == want and r['errors'] == r['leftover'] == 0, r                 # every formula set
        assert (r['mathjax'] or '').startswith('2.') == (want > 0), r                                    # Debian's, pages with formulas only
        assert r['buttons'] == r['code'] and (r['code'] > 0) == (name != 'index'), r                          # copy buttons
    assert sum(r['typeset'] for r in result['pages']) > 50 and sum(r['loaded'] for r in result['pages']) > 10
    landing = result['pages'][0]
    assert 0 < landing['figure'] < landing['start'] <= SCREEN[1], landing                                     # on the first screen
    search = result['search']
    assert re.search(r'found \d+ pages?', search['summary']) and '02_ivla.html' in {h.split('#')[0] for h in search['hits']}, search

    shots = Path(os.environ.get('HSVLT_SCREENSHOTS') or tmp_path); shots.mkdir(parents=True, exist_ok=True)
    for page, size in (('index', SCREEN), ('02_ivla', (1280, 1600))):
        shot = shots / f'{page}.png'
        chromium(f'--window-size={size[0]},{size[1]}', '--virtual-time-budget=15000', f'--screenshot={shot}', (out / f'{page}.html').as_uri(), tmp_path=tmp_path)
        with Image.open(shot) as im:
            rgb = im.convert('RGB'); grey = rgb.convert('L')
            dark = sum(grey.histogram()[:128]) / (grey.width * grey.height)        # text and pictures, not a blank page
            assert im.size == size and dark > 0.01, (page, im.size, dark)
            if page == 'index':   # the figure's blue and orange boxes are on the first screen
                pixels = list(rgb.getdata())
                near = lambda c: sum(all(abs(p[i] - c[i]) < 12 for i in range(3)) for p in pixels)
                assert near((0xe3, 0xee, 0xfa)) > 2000 and near((0xfd, 0xeb, 0xd8)) > 2000, page
