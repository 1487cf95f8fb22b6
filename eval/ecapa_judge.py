"""seed-tts-eval's SIM judge: WavLM-large features into an ECAPA-TDNN speaker head (`wavlm_large_finetune.pth`).

The paper scores TTS SIM with the speaker-verification model seed-tts-eval ships (UniSpeech's
`downstreams/speaker_verification`: `ECAPA_TDNN_SMALL(feat_dim=1024, feat_type='wavlm_large')`, the
fine-tuned checkpoint `wavlm_large_finetune.pth`). This module is our own implementation of that
published structure; it loads the published file as it is:

- Format: `torch.load(file)["model"]` is the state dict of the whole ECAPA model. Its backbone lives
  under `feature_extract.model.` with fairseq/UniSpeech WavLM names (`feature_extractor.conv_layers.
  {i}.0.weight`, `encoder.layers.{i}.self_attn.grep_linear.weight`, `encoder.pos_conv.0.weight_g`, ...);
  the head's names are the reference module's (`feature_weight`, `layer1.conv.weight`,
  `layer2.Res2Conv1dReluBn.convs.0.weight`, `pooling.linear1.weight`, `bn.*`, `linear.*`). Keys
  outside both (a training loss's weights, say) are ignored, as the reference's `strict=False` does,
  and logged; a backbone or head parameter missing from the file is an error (the reference would
  silently keep s3prl's pretrained WavLM, which this offline loader does not have).
- Backbone: `transformers.WavLMModel` (WavLM-large's config: hidden 1024, 24 layers, 16 heads, FFN
  4096, layer-norm conv extractor without conv bias, pre-LN "stable" encoder, 320 relative-position
  buckets, max distance 800, 128-wide conv positional embedding in 16 groups), its parameters
  renamed from the fairseq names by `map_wavlm_key` (no own backbone module was needed). The
  architecture is read from the tensor shapes, so a small random file in the same format loads through
  the same code (the tests' and rehearsals' stand-in; conv strides and the bucket distance, which no
  shape records, are WavLM-large's).
- Features (s3prl's WavLM wrapper): the 16 kHz clip is layer-normalised (zero mean, unit variance; the
  WavLM-large config's `normalize=True`); the 25 hidden states are the input of each of the 24
  transformer layers plus the final layer-normed output (transformers' `output_hidden_states` of the
  stable-layer-norm encoder is exactly that), mixed by `softmax(feature_weight)`, plus 1e-6, then
  instance-normalised over time.
- Head (ECAPA-TDNN, `channels=512`, 256-d embedding): Conv1d(k5) -> ReLU -> BN; three SE-Res2 blocks
  (k3, dilation 2/3/4, scale 8, SE bottleneck 128); concat of the three blocks -> 1x1 conv (1536) -> ReLU
  -> attentive statistics pooling (tanh attention, 128 channels) -> BN -> Linear.
- Score (seed-tts-eval `verification.py`): cosine similarity of the two clips' embeddings, 16 kHz.

Every clip is scored except those the model cannot run on: fewer than two WavLM frames (720 samples,
45 ms; instance norm needs two time steps), where `similarity` returns None and the task counts it.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from typing import Optional

import numpy as np

from pipeline.fileio import exists, join, local_copy

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
CHECKPOINT_NAME = "wavlm_large_finetune.pth"
BACKBONE_PREFIX = "feature_extract.model."
MIN_SAMPLES = 720  # two WavLM frames: receptive field 400 samples, hop 320
WAVLM_LARGE_CONV_STRIDES = (5, 2, 2, 2, 2, 2, 2)
WAVLM_LARGE_MAX_DISTANCE = 800
JUDGE_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "soda", "judges")

# fairseq/UniSpeech WavLM name -> transformers WavLMModel name (regex, replacement), first match wins
_WAVLM_RENAMES = (
    (r"^feature_extractor\.conv_layers\.(\d+)\.0\.weight$", r"feature_extractor.conv_layers.\1.conv.weight"),
    (r"^feature_extractor\.conv_layers\.(\d+)\.2\.1\.(weight|bias)$", r"feature_extractor.conv_layers.\1.layer_norm.\2"),
    (r"^layer_norm\.(weight|bias)$", r"feature_projection.layer_norm.\1"),
    (r"^post_extract_proj\.(weight|bias)$", r"feature_projection.projection.\1"),
    (r"^encoder\.pos_conv\.0\.bias$", "encoder.pos_conv_embed.conv.bias"),
    (r"^encoder\.pos_conv\.0\.weight_g$", "encoder.pos_conv_embed.conv.weight_g"),
    (r"^encoder\.pos_conv\.0\.weight_v$", "encoder.pos_conv_embed.conv.weight_v"),
    (r"^encoder\.layer_norm\.(weight|bias)$", r"encoder.layer_norm.\1"),
    (r"^encoder\.layers\.(\d+)\.self_attn\.(q|k|v|out)_proj\.(weight|bias)$", r"encoder.layers.\1.attention.\2_proj.\3"),
    (r"^encoder\.layers\.(\d+)\.self_attn\.grep_linear\.(weight|bias)$", r"encoder.layers.\1.attention.gru_rel_pos_linear.\2"),
    (r"^encoder\.layers\.(\d+)\.self_attn\.grep_a$", r"encoder.layers.\1.attention.gru_rel_pos_const"),
    (r"^encoder\.layers\.(\d+)\.self_attn\.relative_attention_bias\.weight$", r"encoder.layers.\1.attention.rel_attn_embed.weight"),
    (r"^encoder\.layers\.(\d+)\.self_attn_layer_norm\.(weight|bias)$", r"encoder.layers.\1.layer_norm.\2"),
    (r"^encoder\.layers\.(\d+)\.fc1\.(weight|bias)$", r"encoder.layers.\1.feed_forward.intermediate_dense.\2"),
    (r"^encoder\.layers\.(\d+)\.fc2\.(weight|bias)$", r"encoder.layers.\1.feed_forward.output_dense.\2"),
    (r"^encoder\.layers\.(\d+)\.final_layer_norm\.(weight|bias)$", r"encoder.layers.\1.final_layer_norm.\2"),
)
UNUSED_WAVLM_KEYS = ("mask_emb",)  # the pre-training mask embedding: never used at inference


def map_wavlm_key(name: str) -> Optional[str]:
    """The transformers `WavLMModel` name of a fairseq/UniSpeech WavLM parameter; None if it has none."""
    for pattern, repl in _WAVLM_RENAMES:
        if re.match(pattern, name):
            return re.sub(pattern, repl, name)
    return None


@dataclass(frozen=True)
class EcapaShape:
    """The architecture a checkpoint's tensor shapes describe (WavLM-large + ECAPA_TDNN_SMALL for the real one)."""

    hidden: int
    layers: int
    heads: int
    ffn: int
    conv_dim: tuple
    conv_kernel: tuple
    pos_kernel: int
    pos_groups: int
    buckets: int
    layer_norm_extractor: bool
    feat_num: int
    channels: int
    scale: int
    se_bottleneck: int
    cat_out: int
    attention_channels: int
    emb_dim: int

    @classmethod
    def from_state_dict(cls, sd: dict) -> "EcapaShape":
        p = BACKBONE_PREFIX
        conv_key = re.compile(re.escape(p) + r"feature_extractor\.conv_layers\.(\d+)\.0\.weight$")
        convs = sorted(int(m.group(1)) for k in sd if (m := conv_key.match(k)))
        layers = 1 + max(int(m.group(1)) for k in sd if (m := re.match(re.escape(p) + r"encoder\.layers\.(\d+)\.", k)))
        hidden = sd[p + "post_extract_proj.weight"].shape[0]
        pos_v = sd[p + "encoder.pos_conv.0.weight_v"].shape
        res2 = [k for k in sd if re.match(r"layer2\.Res2Conv1dReluBn\.convs\.\d+\.weight$", k)]
        return cls(
            hidden=hidden, layers=layers, heads=sd[p + "encoder.layers.0.self_attn.grep_a"].shape[1],
            ffn=sd[p + "encoder.layers.0.fc1.weight"].shape[0],
            conv_dim=tuple(sd[f"{p}feature_extractor.conv_layers.{i}.0.weight"].shape[0] for i in convs),
            conv_kernel=tuple(sd[f"{p}feature_extractor.conv_layers.{i}.0.weight"].shape[2] for i in convs),
            pos_kernel=pos_v[2], pos_groups=hidden // pos_v[1],
            buckets=sd[p + "encoder.layers.0.self_attn.relative_attention_bias.weight"].shape[0],
            layer_norm_extractor=p + "feature_extractor.conv_layers.0.2.1.weight" in sd,
            feat_num=sd["feature_weight"].shape[0], channels=sd["layer1.conv.weight"].shape[0],
            scale=len(res2) + 1, se_bottleneck=sd["layer2.SE_Connect.linear1.weight"].shape[0],
            cat_out=sd["conv.weight"].shape[0], attention_channels=sd["pooling.linear1.weight"].shape[0],
            emb_dim=sd["linear.weight"].shape[0])

    def wavlm_config(self):
        from transformers import WavLMConfig

        if not self.layer_norm_extractor:
            raise ValueError("only WavLM's layer-norm conv extractor (WavLM-large's) is supported; this checkpoint "
                             "has a group-norm one (a WavLM-base model)")
        n = len(self.conv_dim)
        return WavLMConfig(
            hidden_size=self.hidden, num_hidden_layers=self.layers, num_attention_heads=self.heads,
            intermediate_size=self.ffn, hidden_act="gelu", feat_extract_norm="layer", feat_extract_activation="gelu",
            conv_dim=self.conv_dim, conv_kernel=self.conv_kernel, conv_stride=WAVLM_LARGE_CONV_STRIDES[:n], conv_bias=False,
            num_conv_pos_embeddings=self.pos_kernel, num_conv_pos_embedding_groups=self.pos_groups,
            do_stable_layer_norm=True, num_buckets=self.buckets, max_bucket_distance=WAVLM_LARGE_MAX_DISTANCE,
            layer_norm_eps=1e-5, hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
            feat_proj_dropout=0.0, layerdrop=0.0, mask_time_prob=0.0, mask_feature_prob=0.0, apply_spec_augment=False)


def build_head(shape: EcapaShape):
    """The ECAPA-TDNN head (everything but the backbone), parameter names as in the published checkpoint."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    class ConvReluBn(nn.Module):
        def __init__(self, cin, cout, kernel=1, padding=0, dilation=1):
            super().__init__()
            self.conv = nn.Conv1d(cin, cout, kernel, padding=padding, dilation=dilation)
            self.bn = nn.BatchNorm1d(cout)

        def forward(self, x):
            return self.bn(F.relu(self.conv(x)))

    class Res2(nn.Module):  # `scale` channel groups; each but the last convolved after adding the previous output
        def __init__(self, channels, dilation, scale):
            super().__init__()
            self.width = channels // scale
            self.convs = nn.ModuleList(nn.Conv1d(self.width, self.width, 3, padding=dilation, dilation=dilation)
                                       for _ in range(scale - 1))
            self.bns = nn.ModuleList(nn.BatchNorm1d(self.width) for _ in range(scale - 1))

        def forward(self, x):
            parts, outs, carry = torch.split(x, self.width, dim=1), [], None
            for i, (conv, bn) in enumerate(zip(self.convs, self.bns)):
                carry = parts[i] if carry is None else carry + parts[i]
                carry = bn(F.relu(conv(carry)))
                outs.append(carry)
            return torch.cat(outs + [parts[-1]], dim=1)

    class SqueezeExcite(nn.Module):
        def __init__(self, channels, bottleneck):
            super().__init__()
            self.linear1, self.linear2 = nn.Linear(channels, bottleneck), nn.Linear(bottleneck, channels)

        def forward(self, x):
            gate = torch.sigmoid(self.linear2(F.relu(self.linear1(x.mean(dim=2)))))
            return x * gate.unsqueeze(2)

    class SERes2Block(nn.Module):
        def __init__(self, channels, dilation, scale, bottleneck):
            super().__init__()
            self.Conv1dReluBn1 = ConvReluBn(channels, channels)
            self.Res2Conv1dReluBn = Res2(channels, dilation, scale)
            self.Conv1dReluBn2 = ConvReluBn(channels, channels)
            self.SE_Connect = SqueezeExcite(channels, bottleneck)

        def forward(self, x):
            return x + self.SE_Connect(self.Conv1dReluBn2(self.Res2Conv1dReluBn(self.Conv1dReluBn1(x))))

    class AttentiveStats(nn.Module):
        def __init__(self, channels, attention):
            super().__init__()
            self.linear1, self.linear2 = nn.Conv1d(channels, attention, 1), nn.Conv1d(attention, channels, 1)

        def forward(self, x):
            alpha = torch.softmax(self.linear2(torch.tanh(self.linear1(x))), dim=2)
            mean = (alpha * x).sum(dim=2)
            var = (alpha * x * x).sum(dim=2) - mean * mean
            return torch.cat([mean, var.clamp(min=1e-9).sqrt()], dim=1)

    class Head(nn.Module):
        def __init__(self, s: EcapaShape):
            super().__init__()
            c = s.channels
            self.feature_weight = nn.Parameter(torch.zeros(s.feat_num))
            self.instance_norm = nn.InstanceNorm1d(s.hidden)
            self.layer1 = ConvReluBn(s.hidden, c, kernel=5, padding=2)
            self.layer2 = SERes2Block(c, 2, s.scale, s.se_bottleneck)
            self.layer3 = SERes2Block(c, 3, s.scale, s.se_bottleneck)
            self.layer4 = SERes2Block(c, 4, s.scale, s.se_bottleneck)
            self.conv = nn.Conv1d(3 * c, s.cat_out, 1)
            self.pooling = AttentiveStats(s.cat_out, s.attention_channels)
            self.bn = nn.BatchNorm1d(2 * s.cat_out)
            self.linear = nn.Linear(2 * s.cat_out, s.emb_dim)

        def forward(self, hidden_states):  # hidden_states: (feat_num, B, T, hidden)
            weights = torch.softmax(self.feature_weight, dim=-1).view(-1, 1, 1, 1)
            x = (weights * hidden_states).sum(dim=0).transpose(1, 2) + 1e-6
            x = self.instance_norm(x)
            out1 = self.layer1(x)
            out2 = self.layer2(out1)
            out3 = self.layer3(out2)
            out4 = self.layer4(out3)
            x = F.relu(self.conv(torch.cat([out2, out3, out4], dim=1)))
            return self.linear(self.bn(self.pooling(x)))

    return Head(shape)


def read_checkpoint(path: str) -> dict:
    """`torch.load(path)["model"]`, as UniSpeech's `init_model` reads it."""
    import pickle

    import torch

    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # a training-time object beside the weights: the named file is trusted as is
        logger.warning("%s holds more than tensors; loading it with weights_only=False", path)
        blob = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(blob, dict) or not isinstance(blob.get("model"), dict):
        raise ValueError(f"{path} is not a UniSpeech speaker-verification checkpoint: expected a dict with the "
                         f"model's state dict under 'model' (as wavlm_large_finetune.pth), got "
                         f"{type(blob).__name__} with keys {sorted(blob)[:5] if isinstance(blob, dict) else '-'}")
    return blob["model"]


def split_checkpoint(sd: dict, wavlm_names: set) -> tuple[dict, dict, list[str]]:
    """(transformers WavLM state dict, head state dict, ignored keys) of a published-format state dict.

    `wavlm_names`: the target WavLMModel's parameter names (weight-norm g/v are renamed to the
    parametrization names when the model uses those)."""
    backbone, head, ignored = {}, {}, []
    for key, value in sd.items():
        if key.startswith(BACKBONE_PREFIX):
            short = key[len(BACKBONE_PREFIX):]
            name = map_wavlm_key(short)
            if name is None:
                ignored.append(key)
                continue
            if name not in wavlm_names:  # torch's newer weight norm: a parametrization of the conv
                name = name.replace("conv.weight_g", "conv.parametrizations.weight.original0").replace(
                    "conv.weight_v", "conv.parametrizations.weight.original1")
            backbone[name] = value
        else:
            head[key] = value
    return backbone, head, ignored


class EcapaJudge:
    """Speaker similarity with seed-tts-eval's WavLM-large + ECAPA-TDNN model (see the module docstring)."""

    kind = "wavlm-large-ecapa-tdnn"
    min_samples = MIN_SAMPLES

    def __init__(self, path: str, device: Optional[str] = None):
        import torch
        from transformers import WavLMModel

        self.path = path
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        local = resolve_checkpoint(path)
        sd = read_checkpoint(local)
        try:
            self.shape = EcapaShape.from_state_dict(sd)
        except (KeyError, ValueError, IndexError) as exc:
            raise ValueError(f"{local} lacks a WavLM + ECAPA-TDNN parameter ({exc}); is it UniSpeech's "
                             f"wavlm_large_finetune.pth (backbone under {BACKBONE_PREFIX!r})?") from exc
        self.wavlm = WavLMModel(self.shape.wavlm_config())
        names = set(self.wavlm.state_dict())
        backbone, head_sd, ignored = split_checkpoint(sd, names)
        self.head = build_head(self.shape)
        head_names = set(self.head.state_dict())
        extra_head = [k for k in head_sd if k not in head_names]
        ignored += extra_head
        for k in extra_head:
            head_sd.pop(k)
        missing = sorted((names - set(backbone)) | (head_names - set(head_sd)))
        if missing:
            raise ValueError(f"{local} misses {len(missing)} parameters of the WavLM + ECAPA-TDNN judge "
                             f"(first: {missing[:4]}); the file must hold the fine-tuned backbone too")
        unused = [k for k in ignored if k[len(BACKBONE_PREFIX):] not in UNUSED_WAVLM_KEYS]
        if unused:
            logger.info("speaker judge %s: %d checkpoint entries unused (as the reference's strict=False): %s",
                        path, len(unused), unused[:6])
        self.wavlm.load_state_dict(backbone, strict=True)
        self.head.load_state_dict(head_sd, strict=True)
        self.wavlm.eval().to(self.device)
        self.head.eval().to(self.device)

    def embed(self, wave16k: np.ndarray) -> np.ndarray:
        """The speaker embedding of one 16 kHz clip (at least `min_samples` long), unnormalised."""
        import torch
        from torch.nn import functional as F

        if len(wave16k) < self.min_samples:
            raise ValueError(f"a clip of {len(wave16k)} samples is shorter than the judge's {self.min_samples}")
        wav = torch.as_tensor(np.asarray(wave16k, dtype=np.float32), device=self.device)
        wav = F.layer_norm(wav, wav.shape).unsqueeze(0)  # s3prl: WavLM-large's normalize=True
        with torch.no_grad():
            hidden = self.wavlm(wav, output_hidden_states=True).hidden_states
            emb = self.head(torch.stack(hidden, dim=0))[0]
        return emb.float().cpu().numpy()

    def similarity(self, a16k: np.ndarray, b16k: np.ndarray) -> Optional[float]:
        """Cosine similarity of the two clips' embeddings; None if either is under `min_samples` (45 ms)."""
        if len(a16k) < self.min_samples or len(b16k) < self.min_samples:
            return None
        a, b = self.embed(a16k), self.embed(b16k)
        return float(np.dot(a, b) / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-8))

    @property
    def name(self) -> str:
        return f"{self.kind} ({self.path})"


def is_ecapa_path(path: str) -> bool:
    """Whether a judge setting names an ECAPA checkpoint: a `.pth` file, or a directory holding CHECKPOINT_NAME."""
    if path.endswith(".pth"):
        return True
    if "://" not in path and not os.path.isdir(path):
        return False
    return exists(join(path, CHECKPOINT_NAME))


def resolve_checkpoint(path: str) -> str:
    """A local file for a judge setting: a file, a directory holding CHECKPOINT_NAME, an object-store URL of
    either, or a bare file name looked up in JUDGE_CACHE (~/.cache/soda/judges)."""
    if "://" in path:
        if path.endswith(".pth"):
            parent, base = path.rstrip("/").rsplit("/", 1)
            return os.path.join(local_copy(parent), base)
        return os.path.join(local_copy(path), CHECKPOINT_NAME)
    if os.path.isdir(path):
        path = os.path.join(path, CHECKPOINT_NAME)
    if os.path.isfile(path):
        return path
    cached = os.path.join(JUDGE_CACHE, os.path.basename(path))
    if os.sep not in path and os.path.isfile(cached):
        return cached
    raise FileNotFoundError(
        f"speaker judge checkpoint {path!r} not found (nor {cached}); download seed-tts-eval's "
        f"{CHECKPOINT_NAME} (UniSpeech downstreams/speaker_verification README: 'WavLM large', not fixed "
        f"pre-train) to {JUDGE_CACHE}/ or set EvalConfig.tts_sim_judge to its path")


def published_parameter_shapes(shape: EcapaShape) -> dict[str, tuple]:
    """Names and shapes of a published-format state dict for `shape` (fairseq WavLM names under
    BACKBONE_PREFIX, the reference head's names), derived from the reference's module structure."""
    p, d = BACKBONE_PREFIX, shape.hidden
    out: dict[str, tuple] = {}
    cin = 1
    for i, (dim, k) in enumerate(zip(shape.conv_dim, shape.conv_kernel)):
        out[f"{p}feature_extractor.conv_layers.{i}.0.weight"] = (dim, cin, k)
        out[f"{p}feature_extractor.conv_layers.{i}.2.1.weight"] = (dim,)
        out[f"{p}feature_extractor.conv_layers.{i}.2.1.bias"] = (dim,)
        cin = dim
    out[p + "post_extract_proj.weight"], out[p + "post_extract_proj.bias"] = (d, cin), (d,)
    out[p + "mask_emb"] = (d,)
    out[p + "layer_norm.weight"], out[p + "layer_norm.bias"] = (cin,), (cin,)
    out[p + "encoder.pos_conv.0.bias"] = (d,)
    out[p + "encoder.pos_conv.0.weight_g"] = (1, 1, shape.pos_kernel)
    out[p + "encoder.pos_conv.0.weight_v"] = (d, d // shape.pos_groups, shape.pos_kernel)
    for i in range(shape.layers):
        a = f"{p}encoder.layers.{i}."
        if i == 0:
            out[a + "self_attn.relative_attention_bias.weight"] = (shape.buckets, shape.heads)
        for proj in ("k", "v", "q", "out"):
            out[a + f"self_attn.{proj}_proj.weight"], out[a + f"self_attn.{proj}_proj.bias"] = (d, d), (d,)
        out[a + "self_attn.grep_linear.weight"], out[a + "self_attn.grep_linear.bias"] = (8, d // shape.heads), (8,)
        out[a + "self_attn.grep_a"] = (1, shape.heads, 1, 1)
        for ln in ("self_attn_layer_norm", "final_layer_norm"):
            out[a + f"{ln}.weight"], out[a + f"{ln}.bias"] = (d,), (d,)
        out[a + "fc1.weight"], out[a + "fc1.bias"] = (shape.ffn, d), (shape.ffn,)
        out[a + "fc2.weight"], out[a + "fc2.bias"] = (d, shape.ffn), (d,)
    out[p + "encoder.layer_norm.weight"], out[p + "encoder.layer_norm.bias"] = (d,), (d,)

    def bn(name, n):
        out[f"{name}.weight"], out[f"{name}.bias"] = (n,), (n,)
        out[f"{name}.running_mean"], out[f"{name}.running_var"], out[f"{name}.num_batches_tracked"] = (n,), (n,), ()

    c, w = shape.channels, shape.channels // shape.scale
    out["feature_weight"] = (shape.feat_num,)
    out["layer1.conv.weight"], out["layer1.conv.bias"] = (c, d, 5), (c,)
    bn("layer1.bn", c)
    for layer in ("layer2", "layer3", "layer4"):
        for sub in ("Conv1dReluBn1", "Conv1dReluBn2"):
            out[f"{layer}.{sub}.conv.weight"], out[f"{layer}.{sub}.conv.bias"] = (c, c, 1), (c,)
            bn(f"{layer}.{sub}.bn", c)
        for j in range(shape.scale - 1):
            out[f"{layer}.Res2Conv1dReluBn.convs.{j}.weight"] = (w, w, 3)
            out[f"{layer}.Res2Conv1dReluBn.convs.{j}.bias"] = (w,)
            bn(f"{layer}.Res2Conv1dReluBn.bns.{j}", w)
        out[f"{layer}.SE_Connect.linear1.weight"] = (shape.se_bottleneck, c)
        out[f"{layer}.SE_Connect.linear1.bias"] = (shape.se_bottleneck,)
        out[f"{layer}.SE_Connect.linear2.weight"] = (c, shape.se_bottleneck)
        out[f"{layer}.SE_Connect.linear2.bias"] = (c,)
    out["conv.weight"], out["conv.bias"] = (shape.cat_out, 3 * c, 1), (shape.cat_out,)
    out["pooling.linear1.weight"] = (shape.attention_channels, shape.cat_out, 1)
    out["pooling.linear1.bias"] = (shape.attention_channels,)
    out["pooling.linear2.weight"] = (shape.cat_out, shape.attention_channels, 1)
    out["pooling.linear2.bias"] = (shape.cat_out,)
    bn("bn", 2 * shape.cat_out)
    out["linear.weight"], out["linear.bias"] = (shape.emb_dim, 2 * shape.cat_out), (shape.emb_dim,)
    return out


WAVLM_LARGE_ECAPA = EcapaShape(
    hidden=1024, layers=24, heads=16, ffn=4096, conv_dim=(512,) * 7, conv_kernel=(10, 3, 3, 3, 3, 2, 2),
    pos_kernel=128, pos_groups=16, buckets=320, layer_norm_extractor=True, feat_num=25, channels=512, scale=8,
    se_bottleneck=128, cat_out=1536, attention_channels=128, emb_dim=256)
SMALL_ECAPA = EcapaShape(  # the random stand-in: same format and conv geometry, tiny widths
    hidden=32, layers=2, heads=2, ffn=64, conv_dim=(32,) * 7, conv_kernel=(10, 3, 3, 3, 3, 2, 2),
    pos_kernel=16, pos_groups=2, buckets=32, layer_norm_extractor=True, feat_num=3, channels=32, scale=8,
    se_bottleneck=16, cat_out=48, attention_channels=16, emb_dim=16)


def write_random_checkpoint(path: str, shape: EcapaShape = SMALL_ECAPA, seed: int = 0) -> str:
    """A random-valued checkpoint in the published format (`{"model": state_dict}`) for `shape`, at `path`."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for name, dims in published_parameter_shapes(shape).items():
        if name.endswith("num_batches_tracked"):
            sd[name] = torch.tensor(100, dtype=torch.long)
        elif name.endswith("running_var") or name.endswith("weight_g"):
            sd[name] = 0.5 + torch.rand(dims, generator=gen)
        elif re.search(r"(norm|bn|bns\.\d+)\.weight$|\.2\.1\.weight$", name):
            sd[name] = 1.0 + 0.1 * torch.randn(dims, generator=gen)
        else:
            fan_in = int(np.prod(dims[1:])) if len(dims) > 1 else 1
            sd[name] = torch.randn(dims, generator=gen) / max(fan_in, 1) ** 0.5
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    torch.save({"model": sd}, path)
    return path
