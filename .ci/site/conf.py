"""Sphinx configuration of the docs site. `python .ci/docs.py` writes the pages' sources (processed copies of nbs/)
to a build folder and runs Sphinx on them with this file; see there."""
import shutil
from configparser import ConfigParser
from pathlib import Path

settings = ConfigParser(delimiters=['='])
settings.read(Path(__file__).resolve().parents[2] / 'settings.ini', encoding='utf-8')
meta = settings['DEFAULT']

project = html_title = meta['title']
author = meta['author']
copyright = meta['copyright']
extensions = ['myst_nb', 'sphinx_copybutton']
nb_execution_mode = 'off'                 # the notebooks are committed executed: show their outputs as stored
myst_enable_extensions = ['dollarmath', 'attrs_inline']   # $ and $$ formulas; the landing page's button class
myst_dmath_double_inline = True    # $$...$$ inside a paragraph, as Jupyter shows it, is display math
suppress_warnings = ['myst.header']    # some notebooks go from # to ###, which reads well
html_theme = 'sphinx_book_theme'
html_theme_options = {'home_page_in_toc': True, 'show_toc_level': 2, 'navbar_persistent': []}   # search: in the sidebar
html_static_path = ['_static']
html_css_files = ['site.css']
html_copy_source = False

# Equations: MathJax 2 from Debian's libjs-mathjax, copied into the site so that pages set their formulas offline.
MATHJAX = Path('/usr/share/javascript/mathjax')
if MATHJAX.is_dir():
    mathjax_path = 'mathjax/MathJax.js?config=TeX-AMS_CHTML'      # relative to the site's _static/
    myst_update_mathjax = False       # MyST would write a MathJax 4 configuration
    mathjax2_config = {'tex2jax': {'inlineMath': [['\\(', '\\)']], 'displayMath': [['\\[', '\\]']], 'processEscapes': True},
                       'showMathMenu': False, 'messageStyle': 'none'}


def copy_mathjax(app, exception):
    if exception is None and app.builder.format == 'html' and MATHJAX.is_dir():
        shutil.copytree(MATHJAX, Path(app.outdir) / '_static' / 'mathjax', dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns('unpacked', 'test', 'SVG'))   # SVG: an output the pages never load


def setup(app):
    app.connect('build-finished', copy_mathjax)
