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

def built_for(names, like):
    "A model of `like`'s config and weights, built afresh to read the MiniLM vectors of label `names`: the independent reference for `with_labels`."
    from hsvlt_lite.labels import embed_labels
    from hsvlt_lite.model import HSVLT
    m = HSVLT(like.cfg, embed_labels(names)).eval()
    m.load_state_dict(dict(like.state_dict(), label_embeddings=m.label_embeddings))
    return m


def graph_nodes(t):
    "The names of the autograd nodes behind `t`."
    seen, todo = set(), [t.grad_fn]
    while todo:
        f = todo.pop()
        if f is not None and f not in seen: seen.add(f); todo += [g for g, _ in f.next_functions]
    return {type(f).__name__ for f in seen}
