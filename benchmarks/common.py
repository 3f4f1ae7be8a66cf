"Shared by the benchmark scripts: models of matching sizes, FLOP counting that sees CPU attention, timing."
import statistics, time, torch, torchvision
from torch.utils.flop_counter import FlopCounterMode, register_flop_formula, sdpa_flop_count, sdpa_backward_flop_count
from torchvision.models.convnext import ConvNeXt, CNBlockConfig
from hsvlt_lite.model import HSVLT, HSVLTConfig

aten = torch.ops.aten

# torch's FLOP counter has formulas for the CUDA attention kernels but not for the CPU one, which it would
# count as 0. Register the same formula for it so that the folded IVLA's attention is counted.
@register_flop_formula(aten._scaled_dot_product_flash_attention_for_cpu)
def _cpu_sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
    return sdpa_flop_count(query_shape, key_shape, value_shape)

@register_flop_formula(aten._scaled_dot_product_flash_attention_for_cpu_backward)
def _cpu_sdpa_backward_flop(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


def convnext_like(preset):
    "torchvision's ConvNeXt with the preset's sizes (the torchvision builders for tiny/small/base)."
    if preset in ('tiny', 'small', 'base'): return getattr(torchvision.models, f'convnext_{preset}')(weights=None)
    cfg = HSVLTConfig.preset(preset)
    c = list(cfg.dims) + [None]
    return ConvNeXt([CNBlockConfig(c[i], c[i + 1], cfg.depths[i]) for i in range(4)])


def hsvlt(preset, k=80, d=768, **overrides):
    return HSVLT(HSVLTConfig.preset(preset, text_dim=d, **overrides), torch.randn(k, d) / d ** 0.5)


def flops(fn):
    with FlopCounterMode(display=False) as fc: fn()
    return fc.get_total_flops()


def params(m): return sum(p.numel() for p in m.parameters())


def train_step(model, x):
    "One forward + backward pass (no optimiser: it costs the same for both models per parameter)."
    model.zero_grad(set_to_none=True)
    out = model(x)
    out.float().square().mean().backward()


def interleaved_medians(fns, repeats, warmup=2):
    "Run the callables in turn `repeats` times (after `warmup` rounds) and return each one's median seconds."
    for _ in range(warmup):
        for f in fns.values(): f()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, f in fns.items():
            t = time.perf_counter(); f(); times[name].append(time.perf_counter() - t)
    return {name: statistics.median(ts) for name, ts in times.items()}, times
