"""Write README.md from nbs/index.ipynb; with --check, fail if README.md is not current.

nbdev_readme needs Quarto, which is not installable everywhere; this does the same with nbconvert:
drop `#| hide` cells and `#|` directive lines, keep the executed outputs, render as Markdown.
"""
import re, sys
from pathlib import Path
import nbformat
from nbconvert import MarkdownExporter

root = Path(__file__).resolve().parent.parent
nb = nbformat.read(root / 'nbs' / 'index.ipynb', as_version=4)
cells = []
for cell in nb.cells:
    lines = cell.source.splitlines()
    if any(re.match(r'#\|\s*hide\b', line) for line in lines): continue
    cell.source = '\n'.join(line for line in lines if not line.startswith('#|'))
    cells.append(cell)
nb.cells = cells
nb.metadata['language_info'] = {'name': 'python'}   # fenced code blocks get a language
body, _ = MarkdownExporter().from_notebook_node(nb)
text = '<!-- Made from nbs/index.ipynb by .ci/readme.py: edit the notebook, not this file. -->\n\n' + re.sub(r'\n{3,}', '\n\n', body).strip() + '\n'
readme = root / 'README.md'
if '--check' in sys.argv:
    if not readme.exists() or readme.read_text(encoding='utf-8') != text:
        sys.exit('README.md is not current: run `python .ci/readme.py` and commit it')
else:
    readme.write_text(text, encoding='utf-8')
