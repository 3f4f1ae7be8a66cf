"""The docs site of .ci/docs.py: a page per notebook in reading order, no broken internal link, every picture of the
notebooks inline, and in headless Chromium every page renders with its images loaded and its formulas set."""
import json, os, re, shutil, subprocess, sys, pytest
from html.parser import HTMLParser
from PIL import Image
from conftest import ROOT

sys.path.insert(0, str(ROOT / '.ci'))
import docs

CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser')
FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync']
IMAGE_TYPES = ('image/png', 'image/jpeg', 'image/svg+xml')


@pytest.fixture(scope='module')
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp('site')
    return out, docs.build(out)


def notebook(name): return json.loads((ROOT / 'nbs' / f'{name}.ipynb').read_text())


def pictures(name):
    "Image outputs stored in the notebook, counted from its JSON."
    return sum(any(t in o.get('data', {}) for t in IMAGE_TYPES) for c in notebook(name)['cells'] for o in c.get('outputs', []))


def has_math(name):
    return any(c['cell_type'] == 'markdown' and re.search(r'\$\$.+?\$\$|\$[^$\n]+\$', ''.join(c['source']), re.S) for c in notebook(name)['cells'])


class Refs(HTMLParser):
    "Every href and src of a page, and its <img> sources."
    def __init__(self):
        super().__init__(); self.refs, self.imgs = [], []
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for k in ('href', 'src'):
            if a.get(k): self.refs.append(a[k])
        if tag == 'img': self.imgs.append(a.get('src', ''))


def refs(path):
    p = Refs(); p.feed(path.read_text(encoding='utf-8'))
    return p


def test_a_page_for_every_notebook_in_reading_order(site):
    out, pages = site
    names = [p.stem for p in (ROOT / 'nbs').glob('*.ipynb')]
    assert pages[0] == 'index' and sorted(pages) == sorted(names) and pages[1:] == sorted(pages[1:])
    assert all((out / f'{p}.html').is_file() for p in pages)


def test_no_internal_link_is_broken_and_the_navigation_reaches_every_page(site):
    out, pages = site
    for p in pages:
        r = refs(out / f'{p}.html')
        internal = [x for x in r.refs if not re.match(r'(https?:|data:|mailto:|#)', x)]
        missing = [x for x in internal if not (out / x.split('#')[0].split('?')[0]).exists()]
        assert not missing, (p, missing)
        assert {f'{q}.html' for q in pages if q != p} <= set(internal), p


def test_the_notebooks_pictures_are_inline(site):
    out, pages = site
    for p in pages:
        imgs = refs(out / f'{p}.html').imgs
        assert len(imgs) == pictures(p) and all(i.startswith('data:image/') for i in imgs), p
    assert sum(pictures(p) for p in pages) > 10


def test_every_page_renders_in_headless_chromium(site, tmp_path):
    if not CHROMIUM:
        if os.environ.get('HSVLT_BROWSER_CHECK'): pytest.fail('HSVLT_BROWSER_CHECK is set but there is no chromium on PATH')
        pytest.skip("no chromium on PATH (.ci/run installs Debian's chromium)")
    out, pages = site
    offline = (out / 'mathjax' / 'MathJax.js').is_file()
    for p in pages:
        url = (out / f'{p}.html').as_uri()
        dom = subprocess.run([CHROMIUM, *FLAGS, f'--user-data-dir={tmp_path / "profile"}', '--virtual-time-budget=15000', '--dump-dom', url],
                             capture_output=True, text=True, timeout=120).stdout
        body = re.search(r'<body[^>]*>', dom)
        assert body, (p, dom[:300])
        n = pictures(p)
        assert f'data-images="{n}/{n}"' in body.group(0), (p, body.group(0))
        formulas = re.search(r'data-mathjax="(\w+)"', body.group(0)).group(1)
        if offline: assert (int(formulas) > 0) == has_math(p), (p, formulas)
        shot = tmp_path / f'{p}.png'
        subprocess.run([CHROMIUM, *FLAGS, f'--user-data-dir={tmp_path / "profile"}', '--window-size=1280,1600', f'--screenshot={shot}', url],
                       capture_output=True, timeout=120)
        with Image.open(shot) as im:
            grey = im.convert('L')
            dark = sum(grey.histogram()[:128]) / (grey.width * grey.height)    # text and pictures, not just the navigation bar
            assert im.size == (1280, 1600) and dark > 0.01, (p, im.size, dark)
