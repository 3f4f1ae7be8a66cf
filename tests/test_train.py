"The training loop: schedule, optimiser groups, one step, loss wiring, EMA, checkpoints, exact resume, DDP, precision and compile switches, errors."
import dataclasses, hashlib, json, math, os, random, re, shutil, socket, subprocess, sys
import numpy as np, pytest, torch, torch.nn as nn, torch.nn.functional as F
from torch.testing import assert_close
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset
from conftest import ROOT
from hsvlt_lite.model import HSVLT, HSVLTConfig
from hsvlt_lite.losses import AsymmetricLoss
from hsvlt_lite.metrics import mean_average_precision
import hsvlt_lite.train as train_mod
from hsvlt_lite.train import TrainConfig, Schedule, make_optimizer, train_step, make_ema, evaluate, make_loader, set_epoch, rng_state, fit
from hsvlt_lite.checkpoints import save_checkpoint, load_checkpoint, load_model, save_weights, shipped, ASSETS
from hsvlt_lite.recipes import BUNDLED
from hsvlt_lite.scenes import one_thread
from sklearn.metrics import average_precision_score
import ddp_fit

QUIET = dict(progress=False)
CPU = torch.device('cpu')


@pytest.fixture(autouse=True, scope='module')
def single_thread():
    "These models are tiny: one thread is as fast, and does not stall when other work holds the second core."
    with one_thread(): yield


def tiny(seed=0, k=4, **overrides):
    "A nano HSVLT with tiny widths; its label vectors do not depend on `seed`."
    e = torch.randn(k, 16, generator=torch.Generator().manual_seed(99))
    torch.manual_seed(seed)
    return HSVLT(HSVLTConfig.preset('nano', dims=(8, 16, 32, 64), text_dim=16, **overrides), e)


def data(n, k=4, seed=0, ignore=0., size=32):
    "`n` random `size`×`size` images with random 0/1 targets, a fraction `ignore` of them -1."
    g = torch.Generator().manual_seed(seed)
    y = (torch.rand(n, k, generator=g) < 0.5).float()
    y[torch.rand(n, k, generator=g) < ignore] = -1.
    return TensorDataset(torch.randn(n, 3, size, size, generator=g), y)


def assert_same(a, b, path='state'):
    "Nested dicts/lists/tuples of tensors and plain values are exactly equal."
    if isinstance(a, torch.Tensor): assert torch.equal(a, b), path
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a: assert_same(a[k], b[k], f'{path}.{k}')
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)): assert_same(x, y, f'{path}[{i}]')
    else: assert a == b or (a != a and b != b), (path, a, b)


def one_line_error(fn, match):
    with pytest.raises(ValueError, match=match) as e: fn()
    assert '\n' not in str(e.value)


# ---------------------------------------------------------------- schedule

def test_cosine_schedule_at_hand_computed_steps():
    s = Schedule(TrainConfig(lr=1e-3, warmup_images=1000, batch_size=100), total=110)      # W = 10 warm-up steps
    want = {0: 1e-4, 4: 5e-4, 9: 1e-3, 10: 1e-3, 35: 0.8535533905932737e-3, 60: 0.5e-3, 85: 0.1464466094067262e-3,
            109: 2.4671981713420017e-7}
    for t, lr in want.items(): assert math.isclose(s(t), lr, rel_tol=1e-9), (t, s(t), lr)
    after = [s(t) for t in range(10, 110)]
    assert all(a > b for a, b in zip(after, after[1:]))
    # warm-up longer than the run: a ramp that never reaches the peak; no warm-up: the first step at the peak
    s = Schedule(TrainConfig(lr=1e-3, warmup_images=2000, batch_size=100), total=10)
    for t in range(10): assert math.isclose(s(t), 0.05e-3 * (t + 1), rel_tol=1e-12)
    assert Schedule(TrainConfig(lr=1e-3, warmup_images=0), total=10)(0) == 1e-3


@pytest.mark.parametrize('patience,metrics', [(0, [.3, .5, .4, .6, .6, .7]), (2, [.3, .5, .5, .49, .5, .6, .6, .6, .60001, .6, .7])])
def test_plateau_cuts_like_torch_reduce_lr_on_plateau(patience, metrics):
    cfg = TrainConfig(lr=1e-3, warmup_images=800, batch_size=100, schedule='plateau', plateau_patience=patience, plateau_factor=0.5)
    ours = Schedule(cfg, total=1000)
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1e-3)
    theirs = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode='max', factor=0.5, patience=patience)
    assert math.isclose(ours(3), 0.5e-3)                                        # warm-up: 4 of 8 steps
    for m in metrics:
        ours.epoch_end(m); theirs.step(m)
        assert math.isclose(ours(500), opt.param_groups[0]['lr'], rel_tol=1e-12), (m, ours(500), opt.param_groups[0]['lr'])
        assert math.isclose(ours(3), 0.5 * opt.param_groups[0]['lr'], rel_tol=1e-12)
    assert opt.param_groups[0]['lr'] < 1e-3                                     # the sequence did cut


# ---------------------------------------------------------------- optimiser and one step

@pytest.mark.parametrize('stem', ['patch', 'conv'])
def test_weight_decay_only_on_weights_by_name(stem):
    model = tiny(stem=stem, visual_feedback=True, aggregation='topdown')
    decay, rest = make_optimizer(model, TrainConfig(weight_decay=0.07)).param_groups
    exempt = {n for n, _ in model.named_parameters() if re.search(r'(\.bias|\.gamma|norm\d*\.weight)$', n)}
    named = dict(model.named_parameters())
    assert {id(p) for p in rest['params']} == {id(named[n]) for n in exempt}
    assert {id(p) for p in decay['params']} == {id(p) for n, p in named.items() if n not in exempt}
    assert (decay['weight_decay'], rest['weight_decay'], decay['lr']) == (0.07, 0., 5e-3)


@pytest.mark.parametrize('clip', [0.05, None])
def test_train_step_is_a_hand_written_clipped_sgd_step(clip):
    model = tiny()
    ref = tiny()
    x, y = data(8).tensors
    loss = train_step(model, (x, y), torch.optim.SGD(model.parameters(), lr=0.1), nn.BCEWithLogitsLoss(),
                      torch.amp.GradScaler('cpu', enabled=False), TrainConfig(clip=clip), CPU)
    ref_loss = F.binary_cross_entropy_with_logits(ref(x), y)
    grads = torch.autograd.grad(ref_loss, list(ref.parameters()))
    norm = torch.cat([g.flatten() for g in grads]).norm()
    scale = min(1., clip / norm) if clip else 1.
    assert not clip or norm > clip                                              # clipping is active
    assert_close(loss, ref_loss.detach())
    for (name, p), p0, g in zip(model.named_parameters(), ref.parameters(), grads): assert_close(p, p0 - 0.1 * scale * g, msg=name)


def test_fit_is_hand_written_adamw_with_the_schedule():
    """Four steps of fit against AdamW written out: decay by name, bias correction, lr from warm-up then cosine.
    (64×64 images: at 32×32 stage 4 has a single patch, its attention is constant, and the zero gradients of its
    query and key weights are rounding noise that Adam's normalisation turns into arbitrary steps.) In float64:
    in float32, Adam's division by sqrt(v) lifts rounding noise of the gradients to ~3e-5 in the weights after
    four steps, for the hand-written loop as much as for fit."""
    cfg = TrainConfig(epochs=1, batch_size=8, lr=1e-2, weight_decay=0.1, warmup_images=16, clip=None, **QUIET)
    ds = TensorDataset(*(t.double() for t in data(32, size=64).tensors))
    model, ref = tiny().double(), tiny().double()
    fit(model, ds, None, cfg)
    lrs = [5e-3, 1e-2, 1e-2, 5e-3]                        # W = 2: ramp 1/2, 1; then cosine over T - W = 2 steps: 1, 1/2
    b1, b2, eps = 0.9, 0.999, 1e-8
    names = [n for n, _ in ref.named_parameters()]
    decayed = [not re.search(r'(\.bias|\.gamma|norm\d*\.weight)$', n) for n in names]
    params = [p.detach().clone().requires_grad_() for p in ref.parameters()]
    m, v = [torch.zeros_like(p) for p in params], [torch.zeros_like(p) for p in params]
    loader = make_loader(ds, cfg)
    set_epoch(loader, 0)
    for t, (x, y) in enumerate(loader, 1):
        logits = torch.func.functional_call(ref, dict(zip(names, params)), (x,))
        grads = torch.autograd.grad(F.binary_cross_entropy_with_logits(logits, y), params)
        lr = lrs[t - 1]
        with torch.no_grad():
            for i, (p, g) in enumerate(zip(params, grads)):
                m[i] = b1 * m[i] + (1 - b1) * g
                v[i] = b2 * v[i] + (1 - b2) * g * g
                if decayed[i]: p -= lr * 0.1 * p
                p -= lr * (m[i] / (1 - b1 ** t)) / ((v[i] / (1 - b2 ** t)).sqrt() + eps)
    assert t == 4
    moved = max((p - p0).abs().max() for p, p0 in zip(model.parameters(), tiny().double().parameters()))
    assert moved > 1e-2                                    # the steps are of the size of lr
    for name, p, q in zip(names, model.parameters(), params): assert_close(p, q, rtol=1e-10, atol=1e-10, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize('loss', ['bce', 'asl'])
def test_fit_uses_the_chosen_loss_and_skips_unknown_labels(loss):
    ds = data(16, ignore=0.25)
    model = tiny()
    with torch.no_grad(): z = model(ds.tensors[0])
    y = ds.tensors[1]
    known = y >= 0
    want = (F.binary_cross_entropy_with_logits(z[known], y[known]) if loss == 'bce' else AsymmetricLoss()(z, y)).item()
    history = fit(model, ds, None, TrainConfig(epochs=1, batch_size=16, loss=loss, **QUIET))
    assert math.isclose(history[0]['losses'][0], want, rel_tol=1e-5)
    assert not math.isclose(want, F.binary_cross_entropy_with_logits(z, y.clamp(min=0)).item(), rel_tol=1e-3)


def test_progress_to_a_file_is_plain_lines(capsys):
    "Captured stdout is not a terminal: a line per quarter epoch, then the epoch's record, no carriage-return bars."
    history = fit(tiny(), data(32), data(8, seed=1), TrainConfig(epochs=2, batch_size=8, ema=0.9))
    out = capsys.readouterr().out
    assert '\r' not in out
    lines = out.splitlines()
    assert [l.split('  ')[:2] for l in lines[:5]] == [['epoch 1/2', f'step {s}/4'] for s in (1, 2, 3, 4)] + [['epoch 1', 'step 4']]
    records = [line for line in lines if line.startswith('epoch ') and '/' not in line.split()[1]]
    assert len(lines) == 10 and len(records) == 2
    for line, h in zip(records, history):
        logged = dict(zip(line.split()[::2], line.split()[1::2]))
        assert list(logged) == ['epoch', 'step', 'lr', 'train_loss', 'seconds', 'images_per_s', 'mAP', 'mAP_ema']
        for key in ('train_loss', 'mAP', 'mAP_ema', 'lr'): assert math.isclose(float(logged[key]), h[key], rel_tol=1e-3)
    assert fit(tiny(), data(16), None, TrainConfig(epochs=1, batch_size=8, **QUIET)) and capsys.readouterr().out == ''


def test_on_epoch_reports_join_the_records_and_leave_training_alone():
    "A per-epoch hook sees the model after each epoch's scoring; its dict joins the record; the weights are those of a run without it."
    seen = []
    def hook(model):
        seen.append({k: v.clone() for k, v in model.state_dict().items()})
        model.eval()                                                       # a report runs the model in evaluation mode, as 08's does
        with torch.no_grad(): model(torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(len(seen))))
        model.train()
        return dict(probe=len(seen))
    cfg = TrainConfig(epochs=2, batch_size=8, **QUIET)
    plain, hooked = tiny(), tiny()
    h0, h1 = fit(plain, data(16), data(8, seed=1), cfg), fit(hooked, data(16), data(8, seed=1), cfg, on_epoch=hook)
    assert [h['probe'] for h in h1] == [1, 2] and 'probe' not in h0[0]
    assert [h['mAP'] for h in h0] == [h['mAP'] for h in h1]
    assert_same(seen[-1], hooked.state_dict()); assert_same(plain.state_dict(), hooked.state_dict())


@pytest.mark.parametrize('stage_loss', [0., 0.5])
def test_train_step_with_a_per_stage_loss_is_the_hand_written_objective(stage_loss):
    model = tiny(stage_heads='features')
    ref = tiny(stage_heads='features')
    x, y = data(8).tensors
    cfg = TrainConfig(clip=None, stage_loss=stage_loss)
    loss = train_step(model, (x, y), torch.optim.SGD(model.parameters(), lr=0.1), train_mod.make_loss('bce'), torch.amp.GradScaler('cpu', enabled=False), cfg, CPU)
    z, zs = ref(x, stages=True)
    want = F.binary_cross_entropy_with_logits(z, y) + stage_loss * torch.stack([F.binary_cross_entropy_with_logits(zs[:, i], y) for i in range(4)]).mean()
    grads = torch.autograd.grad(want, list(ref.parameters()), allow_unused=True)
    assert_close(loss, want.detach())
    for (name, p), p0, g in zip(model.named_parameters(), ref.parameters(), grads):
        assert_close(p, p0 - 0.1 * (torch.zeros_like(p0) if g is None else g), msg=name)
    moved = [not torch.equal(p, p0) for (n, p), p0 in zip(model.named_parameters(), ref.parameters()) if n.startswith('stage_heads')]
    assert all(moved) if stage_loss else not any(moved)


# ---------------------------------------------------------------- evaluation and EMA

def test_evaluate_gives_sigmoid_scores_in_order_and_keeps_the_mode():
    model = tiny().train()
    ds = data(20)
    scores, targets = evaluate(model, DataLoader(ds, batch_size=6))
    assert model.training and torch.equal(targets, ds.tensors[1])
    with torch.no_grad(): assert_close(scores, torch.sigmoid(model.eval()(ds.tensors[0])))
    low, _ = evaluate(model, ds, amp='bf16', channels_last=True)
    assert_close(low, scores, rtol=0, atol=0.02)


def test_ema_in_fit_is_the_hand_computed_average(tmp_path):
    "One step per epoch, constant lr (plateau schedule): the weights after t steps are those of a t-epoch run."
    d, train, test = 0.8, data(8), data(8, seed=1)
    cfg = TrainConfig(epochs=3, batch_size=8, schedule='plateau', warmup_images=0, plateau_patience=10, ema=d, **QUIET)
    ws = [list(tiny().parameters())]
    for epochs in (1, 2):
        model = tiny()
        fit(model, train, test, dataclasses.replace(cfg, epochs=epochs))
        ws.append(list(model.parameters()))
    model = tiny()
    history = fit(model, train, test, cfg, out_dir=tmp_path)
    ws.append(list(model.parameters()))
    ema, _ = load_model(tmp_path / 'model.pt', weights='ema')
    for p, w0, w1, w2, w3 in zip(ema.parameters(), *ws):
        assert_close(p, d ** 3 * w0 + d ** 2 * (1 - d) * w1 + d * (1 - d) * w2 + (1 - d) * w3)
    assert not torch.allclose(next(ema.parameters()), ws[-1][0])
    assert math.isclose(history[-1]['mAP_ema'], mean_average_precision(*evaluate(ema, test)), rel_tol=1e-9)
    assert math.isclose(history[-1]['mAP'], mean_average_precision(*evaluate(model, test)), rel_tol=1e-9)


# ---------------------------------------------------------------- checkpoints

def test_checkpoint_round_trip(tmp_path):
    cfg = TrainConfig(schedule='plateau', ema=0.9)
    model = tiny()
    opt, sched, ema, scaler = make_optimizer(model, cfg), Schedule(cfg, 10), make_ema(model, 0.9), torch.amp.GradScaler('cpu', enabled=False)
    for i in range(2):
        train_step(model, data(8, seed=i).tensors, opt, nn.BCEWithLogitsLoss(), scaler, cfg, CPU)
        ema.update_parameters(model)
    sched.epoch_end(0.5)
    history = [dict(epoch=1, mAP=0.5, losses=[0.7, 0.6])]
    save_checkpoint(tmp_path / 'model.pt', model, opt, sched, scaler, ema, epoch=1, cfg=cfg, label_names='abcd', history=history, rng=[rng_state()])
    raw = torch.load(tmp_path / 'model.pt', weights_only=True)                  # plain data: no pickled code
    assert (raw['epoch'], raw['label_names'], raw['history'], raw['train_config']) == (1, list('abcd'), history, dataclasses.asdict(cfg))
    assert HSVLTConfig(**raw['model_config']) == model.cfg and torch.equal(raw['label_embeddings'], model.label_embeddings)

    other = tiny(seed=3)
    opt2, sched2, ema2 = make_optimizer(other, cfg), Schedule(cfg, 10), make_ema(other, 0.9)
    load_checkpoint(tmp_path / 'model.pt', other, opt2, sched2, scaler, ema2, label_names=list('abcd'))
    assert_same(other.state_dict(), model.state_dict())
    assert_same(opt2.state_dict(), opt.state_dict())
    assert_same(ema2.state_dict(), ema.state_dict())
    assert sched2.state_dict() == sched.state_dict() == dict(scale=1., best=0.5, bad=0)

    again, names = load_model(tmp_path / 'model.pt')
    x = data(4).tensors[0]
    with torch.no_grad(): assert torch.equal(again(x), model.eval()(x))
    assert names == list('abcd')


def test_load_model_returns_the_model_ready_to_predict(tmp_path):
    "With BatchNorm in the conv stem, a loaded model must use the saved running statistics, as the saved model in eval mode does."
    model = tiny(stem='conv')
    x, y = data(8).tensors
    train_step(model, (x, y), torch.optim.SGD(model.parameters(), lr=0.1), nn.BCEWithLogitsLoss(),
               torch.amp.GradScaler('cpu', enabled=False), TrainConfig(), CPU)
    save_checkpoint(tmp_path / 'model.pt', model, label_names=list('abcd'))
    again, _ = load_model(tmp_path / 'model.pt')
    assert not again.training
    with torch.no_grad():
        assert torch.equal(again(x), model.eval()(x))
        assert not torch.allclose(again(x), model.train()(x))


def test_save_weights_keeps_the_model_and_drops_the_training_state(tmp_path):
    fit(tiny(), data(32), None, TrainConfig(epochs=1, batch_size=16, ema=0.9, **QUIET), out_dir=tmp_path, label_names=list('abcd'))
    save_weights(tmp_path / 'model.pt', tmp_path / 'weights.pt')
    full, slim = (torch.load(tmp_path / f, weights_only=True) for f in ('model.pt', 'weights.pt'))
    assert full['optimizer'] is not None and full['ema'] is not None
    assert all(slim[k] is None for k in ('optimizer', 'schedule', 'scaler', 'ema', 'rng'))
    for k in ('model_config', 'label_names', 'train_config', 'history', 'epoch'): assert slim[k] == full[k], k
    assert_same(slim['model'], full['model']); assert torch.equal(slim['label_embeddings'], full['label_embeddings'])
    assert (tmp_path / 'weights.pt').stat().st_size < (tmp_path / 'model.pt').stat().st_size / 2


@pytest.mark.parametrize('name', sorted(shipped()))
def test_shipped_checkpoints_are_intact_and_score_their_recorded_map(name):
    "Re-scored from scratch: the bundled test set, the model in batches, scikit-learn's AP per class."
    entry = shipped()[name]
    assert hashlib.sha256((ASSETS / entry['file']).read_bytes()).hexdigest() == entry['sha256']
    model, names = load_model(name)
    test = BUNDLED[entry['data']][0]('test', n=2000)
    assert names == list(test.label_names) and entry['command'].startswith(f"hsvlt train --data {entry['data']}")
    with torch.no_grad(): scores = torch.cat([model(x) for x, _ in DataLoader(test, batch_size=250)])
    ap = average_precision_score(test.targets.numpy(), scores.numpy(), average=None)
    assert abs(ap.mean() - entry['mAP']) < 1e-4, (ap.mean(), entry['mAP'])
    if 'unseen' in entry:                                                     # trained without these labels: their zero-shot mAP
        unseen = [names.index(n) for n in entry['unseen']]
        assert abs(ap[unseen].mean() - entry['unseen_mAP']) < 1e-4 and list(load_checkpoint(name)['meta']['unseen']) == entry['unseen']


def test_a_checkpoint_is_a_file_or_a_shipped_name(tmp_path, monkeypatch):
    assert set(shipped()) == {'digits-nano', 'emoji-nano', 'emoji-nano-open'}  # the three the README names
    one_line_error(lambda: load_model('emoji-tiny'), r"'emoji-tiny' does not exist \(nor is it one of the shipped .*emoji-nano")
    save_checkpoint(tmp_path / 'emoji-nano', tiny(), label_names=list('abcd'))     # a file of that name wins
    monkeypatch.chdir(tmp_path)
    assert load_model('emoji-nano')[1] == list('abcd')


def test_a_crash_while_writing_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / 'model.pt'
    save_checkpoint(path, tiny())
    good = path.read_bytes()
    def half_write(obj, f):
        f.write(good[:100])
        raise KeyboardInterrupt
    monkeypatch.setattr(torch, 'save', half_write)
    with pytest.raises(KeyboardInterrupt): save_checkpoint(path, tiny(seed=1))
    assert path.read_bytes() == good and os.listdir(tmp_path) == ['model.pt']


class Crash(Dataset):
    "`data` that raises `KeyboardInterrupt` once `n` items have been read: a run killed in the middle of an epoch."
    def __init__(self, data, n): self.data, self.n = data, n
    def __len__(self): return len(self.data)
    def __getitem__(self, i):
        self.n -= 1
        if self.n < 0: raise KeyboardInterrupt('crash')
        return self.data[i]


@pytest.mark.parametrize('schedule', ['cosine', 'plateau'])
def test_an_interrupted_run_resumes_to_the_same_weights(tmp_path, monkeypatch, schedule):
    kw = dict(dropout=0.1, drop_path_rate=0.2)                                  # the generators' states matter
    train, test = data(48), data(16, seed=1)
    cfg = TrainConfig(epochs=4, batch_size=16, warmup_images=32, schedule=schedule, plateau_patience=0, ema=0.9, **QUIET)
    straight = tiny(**kw)
    h_straight = fit(straight, train, test, cfg, out_dir=tmp_path / 'straight')

    with pytest.raises(KeyboardInterrupt): fit(tiny(**kw), Crash(train, 2 * 48 + 20), test, cfg, out_dir=tmp_path / 'crashed')
    assert load_checkpoint(tmp_path / 'crashed' / 'model.pt')['epoch'] == 2
    shutil.copy(tmp_path / 'crashed' / 'model.pt', tmp_path / 'epoch2.pt')
    torch.manual_seed(1234); np.random.seed(1234); random.seed(1234)
    resumed = tiny(seed=7, **kw)                                                # a new model object with other weights
    h_resumed = fit(resumed, train, test, cfg, out_dir=tmp_path / 'crashed', resume=tmp_path / 'epoch2.pt', overwrite=True)   # another folder's checkpoint

    for (name, p), q in zip(straight.named_parameters(), resumed.parameters()): assert_close(q, p, rtol=0, atol=0, msg=name)
    a, b = (torch.load(tmp_path / run / 'model.pt', weights_only=True) for run in ('straight', 'crashed'))
    for key in ('model', 'optimizer', 'ema', 'schedule', 'epoch'): assert_same(b[key], a[key], key)
    for ha, hb in zip(h_straight, h_resumed): assert (ha['losses'], ha['mAP'], ha['mAP_ema']) == (hb['losses'], hb['mAP'], hb['mAP_ema'])
    if schedule == 'plateau': assert a['schedule']['scale'] < 1                 # the plateau state was used
    # control: without restoring the generators, the same resume ends elsewhere
    monkeypatch.setattr(train_mod, 'set_rng_state', lambda state: None)
    other = tiny(**kw)
    fit(other, train, test, cfg, resume=tmp_path / 'epoch2.pt')
    assert not all(torch.equal(p, q) for p, q in zip(straight.parameters(), other.parameters()))


def test_bad_checkpoints_and_resumes_fail_in_one_line(tmp_path):
    train, cfg = data(16), TrainConfig(epochs=1, batch_size=16, **QUIET)
    fit(tiny(), train, None, cfg, out_dir=tmp_path, label_names=list('abcd'))
    path = tmp_path / 'model.pt'
    one_line_error(lambda: fit(tiny(), train, None, cfg, resume=tmp_path / 'missing.pt'), "missing.pt' does not exist")
    one_line_error(lambda: fit(tiny(), train, None, cfg, resume=path, label_names=list('abce')), r"has labels \['a', 'b', 'c', 'd'\], not \['a', 'b', 'c', 'e'\]")
    one_line_error(lambda: fit(tiny(num_heads=2), train, None, cfg, resume=path), 'num_heads=1, the model has 2')
    one_line_error(lambda: fit(tiny(k=5), train, None, cfg, resume=path), r'label vectors of shape \(4, 16\), the model \(5, 16\)')
    moved = tiny()
    moved.label_embeddings.add_(1)
    one_line_error(lambda: fit(moved, train, None, cfg, resume=path), 'other label vectors')
    save_checkpoint(tmp_path / 'weights.pt', tiny())
    one_line_error(lambda: fit(tiny(), train, None, cfg, resume=tmp_path / 'weights.pt'), "weights.pt' holds no optimizer state")
    (tmp_path / 'junk.pt').write_bytes(b'not a checkpoint')
    one_line_error(lambda: load_checkpoint(tmp_path / 'junk.pt'), "junk.pt' is not a readable checkpoint")
    one_line_error(lambda: load_model(path, weights='ema'), "weights='ema'")


def test_bad_config_fails_in_one_line():
    one_line_error(lambda: TrainConfig(loss='focal'), "loss='focal'")
    one_line_error(lambda: TrainConfig(schedule='step'), "schedule='step'")
    one_line_error(lambda: TrainConfig(amp='fp8'), "amp='fp8'")
    one_line_error(lambda: TrainConfig(amp='fp16'), "amp='fp16' needs device='cuda'")
    one_line_error(lambda: TrainConfig(device='gpu'), "device='gpu'")
    one_line_error(lambda: TrainConfig(ema=1.0), 'ema=1.0')
    one_line_error(lambda: TrainConfig(batch_size=0), 'batch_size=0')
    one_line_error(lambda: TrainConfig(warmup_images=-1), 'warmup_images=-1')
    one_line_error(lambda: TrainConfig(clip=-1.), 'clip=-1.0')
    one_line_error(lambda: TrainConfig(steps_per_epoch=0), 'steps_per_epoch=0')
    one_line_error(lambda: fit(tiny(), data(12), None, TrainConfig(batch_size=16)), 'batch_size=16 is more than the 12 training images')
    one_line_error(lambda: fit(tiny(), data(16), None, TrainConfig(schedule='plateau')), "schedule='plateau' needs a test set")
    class Stream(IterableDataset):
        def __iter__(self): yield from data(16)
    one_line_error(lambda: fit(tiny(), Stream(), None, TrainConfig(batch_size=16, **QUIET)), r'\(Stream\) has no length: give steps_per_epoch')
    one_line_error(lambda: make_loader(data(16), TrainConfig(batch_size=15), 0, 2), 'batch_size=15 is not divisible by the 2 processes')
    if not torch.cuda.is_available(): one_line_error(lambda: fit(tiny(), data(16), None, TrainConfig(device='cuda')), "device='cuda' but")


# ---------------------------------------------------------------- data, processes, precision, compile

def test_process_shares_of_a_step_make_the_global_batch():
    cfg = TrainConfig(batch_size=12, seed=3)
    ds = TensorDataset(torch.arange(50.))
    one, two = make_loader(ds, cfg), [make_loader(ds, cfg, r, 2) for r in range(2)]
    orders = []
    for epoch in (0, 1):
        for loader in (one, *two): set_epoch(loader, epoch)
        steps = list(zip(one, *two))
        assert len(steps) == 4
        for (x,), (x0,), (x1,) in steps: assert len(x0) == len(x1) == 6 and torch.equal(x.sort().values, torch.cat([x0, x1]).sort().values)
        orders.append(torch.cat([x for (x,), *_ in steps]))
    assert not torch.equal(orders[0], orders[1]) and len(set(torch.cat(orders).tolist())) > 48 - 1


def test_iterable_datasets_and_loaders():
    class Stream(IterableDataset):
        def __iter__(self): return iter([(torch.full((3, 32, 32), float(i)), torch.ones(4)) for i in range(10)])
    loader = make_loader(Stream(), TrainConfig(batch_size=4))
    assert [x[:, 0, 0, 0].tolist() for x, _ in loader] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    mine = DataLoader(data(8), batch_size=2)
    assert make_loader(mine, TrainConfig(batch_size=2)) is mine
    history = fit(tiny(), Stream(), None, TrainConfig(epochs=2, batch_size=4, steps_per_epoch=1, **QUIET))
    assert [h['step'] for h in history] == [1, 2] and len(history[1]['losses']) == 1


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_ddp_two_processes_follow_the_single_process_trajectory(tmp_path):
    "torchrun, 2 CPU processes over gloo, 8 images each per step, against 1 process with the global batch of 16."
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_addr', '127.0.0.1',
           '--master_port', str(free_port()), str(ROOT / 'tests' / 'ddp_fit.py'), str(tmp_path)]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert [line.split()[:2] for line in run.stdout.splitlines() if 'train_loss' in line] == [['epoch', '1'], ['epoch', '2']]   # rank 0 alone logs
    two = json.loads((tmp_path / 'history.json').read_text())
    ckpt = torch.load(tmp_path / 'model.pt', weights_only=True)
    assert len(ckpt['rng']) == 2 and not torch.equal(ckpt['rng'][0]['torch'], ckpt['rng'][1]['torch'])   # two processes saved their generators

    model, train, test = ddp_fit.setup()
    one = fit(model, train, test, ddp_fit.CFG)
    assert_close(torch.tensor([h['losses'] for h in two]), torch.tensor([h['losses'] for h in one]), rtol=1e-5, atol=1e-6)
    assert_close(torch.tensor([h['mAP'] for h in two]), torch.tensor([h['mAP'] for h in one]), rtol=0, atol=1e-3)
    for name, p in model.named_parameters(): assert_close(ckpt['model'][name], p.detach(), rtol=1e-4, atol=1e-5, msg=name)


def test_channels_last_and_bf16_autocast():
    ds, cfg = data(32), TrainConfig(epochs=1, batch_size=8, **QUIET)
    base = fit(tiny(), ds, None, cfg)[0]['losses']
    cl = fit(tiny(), ds, None, dataclasses.replace(cfg, channels_last=True))[0]['losses']
    bf = fit(tiny(), ds, None, dataclasses.replace(cfg, amp='bf16'))[0]['losses']
    assert_close(cl, base, rtol=1e-5, atol=1e-6)
    assert_close(bf, base, rtol=0, atol=0.02)
    assert bf != base


def test_compile_compiles_the_training_model(monkeypatch):
    "The wiring of `compile=True`, with a backend that traces (forward and backward) but does not generate code."
    real, compiled = torch.compile, []
    def compile_(model, **kw):
        compiled.append(model)
        return real(model, backend='aot_eager')
    monkeypatch.setattr(torch, 'compile', compile_)
    ds, cfg = data(16), TrainConfig(epochs=1, batch_size=8, **QUIET)
    model = tiny()
    losses = fit(model, ds, None, dataclasses.replace(cfg, compile=True))[0]['losses']
    assert compiled == [model]
    assert_close(losses, fit(tiny(), ds, None, cfg)[0]['losses'], rtol=1e-5, atol=1e-6)

