import pytest, torch
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / 'tests' / 'fixtures' / 'official_hsvlt_tiny.pt'

@pytest.fixture(scope='session')
def golden():
    return torch.load(FIXTURE)

@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
