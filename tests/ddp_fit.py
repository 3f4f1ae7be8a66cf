"""A small training run for the DDP test. `torchrun --nproc_per_node N tests/ddp_fit.py OUT_DIR` trains on the
same data and global batch in every case; rank 0 writes OUT_DIR/history.json and OUT_DIR/model.pt."""
import json, os, sys, torch
from torch.utils.data import TensorDataset
from hsvlt_lite.model import HSVLT, HSVLTConfig
from hsvlt_lite.train import TrainConfig, fit

CFG = TrainConfig(epochs=2, batch_size=16, lr=2e-3, warmup_images=32)

def setup():
    "The model, training and test data of the run, the same in every process."
    g = torch.Generator().manual_seed(0)
    train = TensorDataset(torch.randn(64, 3, 64, 64, generator=g), (torch.rand(64, 4, generator=g) < 0.5).float())
    test = TensorDataset(torch.randn(32, 3, 64, 64, generator=g), (torch.rand(32, 4, generator=g) < 0.5).float())
    torch.manual_seed(0)
    # the patch stem: the conv stem's BatchNorms normalise each process's share of the batch on its own (as under any
    # DDP without SyncBatchNorm), so with them the two runs differ by design, not by a fault of the loop
    model = HSVLT(HSVLTConfig.preset('nano', dims=(8, 16, 32, 64), text_dim=16, stem='patch'), torch.randn(4, 16))
    return model, train, test

if __name__ == '__main__':
    model, train, test = setup()
    history = fit(model, train, test, CFG, out_dir=sys.argv[1], label_names=list('abcd'))
    if int(os.environ.get('RANK', 0)) == 0:
        with open(os.path.join(sys.argv[1], 'history.json'), 'w') as f: json.dump(history, f)
