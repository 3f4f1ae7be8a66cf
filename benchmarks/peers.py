"""What a user would pick instead of HSVLT, sized for the bundled 64 px data and trained by the same loop:

- `PooledConvNeXt`: HSVLT-nano's visual stages (the same conv stem and ConvNeXt blocks) with no labels:
  global average pool, LayerNorm, linear head.
- `Query2Label`: a fine 3x3 conv + BatchNorm + GELU + max-pool stem down to 8x8 tokens, a 2-layer pre-norm
  transformer encoder with learned positions, one decoder layer with one learned query per label, a
  class-wise linear head (Liu et al. 2021, in small).
- `MLDecoder`: HSVLT-nano's visual stages under an ML-Decoder head (Ridnik et al. 2023): the last stage's
  tokens are attended by a few learned group queries in one cross-attention-only decoder layer (no
  self-attention), and each query's output is read by its own linear layer into the logits of its group
  of labels ("group decoding").

Open-vocabulary peers, which read each label's text vector and so can score labels they never trained on
(`with_labels`), on the same visual stages:
- `OpenMLDecoder`: ML-Decoder's zero-shot form: one query per label, a shared linear projection of its text vector,
  the same cross-attention decoder layer, and one linear layer shared by all labels.
- `TextDot`: CLIP-style: the pooled image and each label's text vector, each projected into one space; the logit
  is their cosine times a learned scale, plus a bias.
"""
import copy, math, torch, torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from hsvlt_lite.layers import PatchDown, ConvNeXtBlock
from hsvlt_lite.stem import ConvStem
from hsvlt_lite.csa import ClasswiseLinear, SharedLinear
from hsvlt_lite.model import HSVLTConfig
from hsvlt_lite.blocks import Features


def visual_stages(cfg):
    "HSVLT's visual stream without labels: the stem or down-sampling of each stage, then its ConvNeXt blocks."
    layers, c_in = [], 3
    for i, (c, d) in enumerate(zip(cfg.dims, cfg.depths)):
        layers += [ConvStem(3, c) if i == 0 else PatchDown(c_in, c, 2, norm_first=True)]
        layers += [ConvNeXtBlock(c, cfg.layer_scale_init) for _ in range(d)]
        c_in = c
    return nn.Sequential(*layers)


NANO = HSVLTConfig.preset('nano')


class PooledConvNeXt(nn.Module):
    "HSVLT-nano's visual stream without labels: ConvNeXt stages, global average pool, LayerNorm, linear head."
    def __init__(self, k, cfg=NANO):
        super().__init__()
        self.features, self.norm, self.head = visual_stages(cfg), nn.LayerNorm(cfg.dims[-1]), nn.Linear(cfg.dims[-1], k)

    def forward(self, x): return self.head(self.norm(self.features(x).mean((-2, -1))))


class Query2Label(nn.Module):
    "A small Query2Label-style model: conv stem to 8x8 tokens, transformer encoder, label-query decoder, class-wise head."
    def __init__(self, k, d=64, tokens=64):
        super().__init__()
        def down(c_in, c_out): return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.GELU(), nn.MaxPool2d(2)]
        self.stem = nn.Sequential(*down(3, 32), *down(32, d), *down(d, d))
        self.pos = nn.Parameter(torch.randn(tokens, d) * 0.02)
        layer = dict(d_model=d, nhead=4, dim_feedforward=2 * d, dropout=0., batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(**layer), 2, enable_nested_tensor=False)
        self.queries = nn.Parameter(torch.randn(k, d) * 0.02)
        self.decoder = nn.TransformerDecoderLayer(**layer)
        self.head = ClasswiseLinear(k, d)

    def encode(self, x):
        v = self.stem(x)
        return v, self.encoder(rearrange(v, 'b d h w -> b (h w) d') + self.pos[:v.shape[-2] * v.shape[-1]])

    def forward(self, x):
        return self.head(self.decoder(self.queries.expand(len(x), -1, -1), self.encode(x)[1]))

    def forward_features(self, x, need_weights=True):
        "The label decoder as one stage's `Features` (for `hsvlt_lite.localisation`): the token map, the queries entering the cross-attention, the decoder's output and its cross-attention weights `b m k n`."
        v, t = self.encode(x)
        dec, q = self.decoder, self.queries.expand(len(x), -1, -1)
        l = q + dec.self_attn(*(dec.norm1(q),) * 3, need_weights=False)[0]                        # norm_first: self-attention block
        a = dec.multihead_attn(dec.norm2(l), t, t, need_weights=True, average_attn_weights=False)[1]
        return [Features(v, l, dec(q, t), a)]


class MLDecoder(nn.Module):
    "HSVLT-nano's visual stages, then an ML-Decoder head: `groups` learned queries, cross-attention + MLP, a linear layer per group."
    def __init__(self, k, groups=None, d=128, heads=4, cfg=NANO):
        super().__init__()
        groups = groups or k // 2
        self.k, self.per_group = k, -(-k // groups)                           # labels per group, rounded up
        self.features, self.proj = visual_stages(cfg), nn.Linear(cfg.dims[-1], d)
        self.queries = nn.Parameter(torch.randn(groups, d) * 0.02)
        self.norm_q, self.norm_kv, self.norm_mlp = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
        self.group_weight = nn.Parameter(torch.randn(groups, d, self.per_group) * d ** -0.5)
        self.head = nn.Module()                                               # the bias that `set_prior` sets, as `.head.bias`
        self.head.bias = nn.Parameter(torch.zeros(k))

    def decode(self, x, need_weights=False):
        "The visual map, the group queries after the decoder (`b g d`) and, if asked, their cross-attention weights (`b m g n`)."
        v = self.features(x)
        t = self.norm_kv(self.proj(rearrange(v, 'b c h w -> b (h w) c')))
        q = self.queries.expand(len(x), -1, -1)
        attended, a = self.attn(self.norm_q(q), t, t, need_weights=need_weights, average_attn_weights=False)   # cross-attention only
        q = q + attended
        return v, q + self.mlp(self.norm_mlp(q)), a

    def forward(self, x):
        logits = torch.einsum('bgd,gdj->bgj', self.decode(x)[1], self.group_weight)   # each query's own linear layer: its group's labels
        return rearrange(logits, 'b g j -> b (g j)')[:, :self.k] + self.head.bias

    def forward_features(self, x, need_weights=True):
        "The decoder as one stage's `Features` (for `hsvlt_lite.localisation`), each label given its group query's tokens and attention."
        v, q, a = self.decode(x, need_weights=True)
        group = torch.arange(self.k) // self.per_group
        return [Features(v, q[:, group], q[:, group], a[:, :, group])]


PEERS = {'convnext': PooledConvNeXt, 'q2l': Query2Label, 'mldecoder': MLDecoder}


class OpenPeer(nn.Module):
    "A model that reads label vectors `(k, D)` from its buffer `label_embeddings`; `with_labels` swaps them."
    def __init__(self, label_embeddings):
        super().__init__()
        self.register_buffer('label_embeddings', label_embeddings.detach().clone().float())

    def with_labels(self, label_embeddings):
        "A copy of this network reading other label vectors: it scores those labels."
        other = copy.deepcopy(self)
        other.label_embeddings = label_embeddings.detach().clone().to(self.label_embeddings)
        return other


class OpenMLDecoder(OpenPeer):
    "ML-Decoder's zero-shot form on HSVLT-nano's visual stages: label queries projected from the text vectors, cross-attention + MLP, a shared linear layer."
    def __init__(self, label_embeddings, d=128, heads=4, cfg=NANO):
        super().__init__(label_embeddings)
        self.features, self.proj, self.query = visual_stages(cfg), nn.Linear(cfg.dims[-1], d), nn.Linear(label_embeddings.shape[1], d)
        self.norm_q, self.norm_kv, self.norm_mlp = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
        self.head = SharedLinear(d)

    def decode(self, x, need_weights=False):
        "The visual map, the label queries entering the decoder and leaving it (`b k d`), and, if asked, the cross-attention weights (`b m k n`)."
        v = self.features(x)
        t = self.norm_kv(self.proj(rearrange(v, 'b c h w -> b (h w) c')))
        q = self.query(self.label_embeddings).expand(len(x), -1, -1)
        attended, a = self.attn(self.norm_q(q), t, t, need_weights=need_weights, average_attn_weights=False)
        out = q + attended
        return v, q, out + self.mlp(self.norm_mlp(out)), a

    def forward(self, x): return self.head(self.decode(x)[2])

    def forward_features(self, x, need_weights=True):
        "The decoder as one stage's `Features` (for `hsvlt_lite.localisation`)."
        v, q, out, a = self.decode(x, need_weights=True)
        return [Features(v, q, out, a)]


class TextDot(OpenPeer):
    "CLIP-style on HSVLT-nano's visual stages: cosine of the projected pooled image and each projected label vector, times a learned scale, plus a bias."
    def __init__(self, label_embeddings, d=128, cfg=NANO):
        super().__init__(label_embeddings)
        self.features, self.norm = visual_stages(cfg), nn.LayerNorm(cfg.dims[-1])
        self.image, self.text = nn.Linear(cfg.dims[-1], d), nn.Linear(label_embeddings.shape[1], d)
        self.log_scale = nn.Parameter(torch.tensor(math.log(10.)))
        self.head = nn.Module()                                               # the bias that `set_prior` sets, as `.head.bias`
        self.head.bias = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        img = F.normalize(self.image(self.norm(self.features(x).mean((-2, -1)))), dim=-1)
        txt = F.normalize(self.text(self.label_embeddings), dim=-1)
        return self.log_scale.exp() * img @ txt.T + self.head.bias


OPEN_PEERS = {'open_mldecoder': OpenMLDecoder, 'textdot': TextDot}
