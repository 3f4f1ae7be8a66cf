"Every notebook runs top to bottom (cells flagged `slow` or `notest` skipped, as in nbdev_test)."
import pytest
from nbdev.test import test_nb as run_nb
from conftest import ROOT

NOTEBOOKS = sorted((ROOT / 'nbs').glob('*.ipynb'))

def test_notebooks_found():
    assert len(NOTEBOOKS) >= 7

@pytest.mark.parametrize('nb', NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(nb):
    ok, _ = run_nb(nb, skip_flags=['slow', 'notest'])
    assert ok, f'{nb.name} failed (traceback above)'
