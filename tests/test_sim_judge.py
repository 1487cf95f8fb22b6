"""The SIM judge: seed-tts-eval's WavLM-large + ECAPA-TDNN checkpoint format, its loader, and short clips.

The published `wavlm_large_finetune.pth` cannot be fetched here, so: (1) the full-size format is
checked against a table of names and shapes written out below from UniSpeech's reference source
(`downstreams/speaker_verification/models/ecapa_tdnn.py`, `ECAPA_TDNN_SMALL(feat_dim=1024,
feat_type='wavlm_large')`, and s3prl's fairseq WavLM under `feature_extract.model.`), mapped onto a
meta-device transformers `WavLMModel` with microsoft/wavlm-large's config; (2) a small random file in
exactly that format goes through the real loading code and forward pass.
"""

from __future__ import annotations

import os
import re

import numpy as np
import pytest

from eval import ecapa_judge as E
from eval import judges as J

P = "feature_extract.model."

# Derived by hand from the reference source (not from eval.ecapa_judge): one transformer layer stands
# for all 24 ({i}); layer 0 alone carries the relative-position embedding.
BACKBONE_TABLE = {
    "feature_extractor.conv_layers.0.0.weight": (512, 1, 10),
    **{f"feature_extractor.conv_layers.{i}.0.weight": (512, 512, 3) for i in (1, 2, 3, 4)},
    **{f"feature_extractor.conv_layers.{i}.0.weight": (512, 512, 2) for i in (5, 6)},
    **{f"feature_extractor.conv_layers.{i}.2.1.{w}": (512,) for i in range(7) for w in ("weight", "bias")},
    "layer_norm.weight": (512,), "layer_norm.bias": (512,),
    "post_extract_proj.weight": (1024, 512), "post_extract_proj.bias": (1024,),
    "mask_emb": (1024,),
    "encoder.pos_conv.0.weight_g": (1, 1, 128), "encoder.pos_conv.0.weight_v": (1024, 64, 128),
    "encoder.pos_conv.0.bias": (1024,),
    "encoder.layer_norm.weight": (1024,), "encoder.layer_norm.bias": (1024,),
    "encoder.layers.0.self_attn.relative_attention_bias.weight": (320, 16),
}
LAYER_TABLE = {
    **{f"self_attn.{p}_proj.weight": (1024, 1024) for p in "qkv"}, **{f"self_attn.{p}_proj.bias": (1024,) for p in "qkv"},
    "self_attn.out_proj.weight": (1024, 1024), "self_attn.out_proj.bias": (1024,),
    "self_attn.grep_linear.weight": (8, 64), "self_attn.grep_linear.bias": (8,), "self_attn.grep_a": (1, 16, 1, 1),
    "self_attn_layer_norm.weight": (1024,), "self_attn_layer_norm.bias": (1024,),
    "fc1.weight": (4096, 1024), "fc1.bias": (4096,), "fc2.weight": (1024, 4096), "fc2.bias": (1024,),
    "final_layer_norm.weight": (1024,), "final_layer_norm.bias": (1024,),
}


# fairseq name -> transformers WavLMModel name, by hand from both sources (layer names for layer 0)
EXPECTED_RENAMES = {
    "feature_extractor.conv_layers.3.0.weight": "feature_extractor.conv_layers.3.conv.weight",
    "feature_extractor.conv_layers.3.2.1.bias": "feature_extractor.conv_layers.3.layer_norm.bias",
    "layer_norm.weight": "feature_projection.layer_norm.weight",
    "post_extract_proj.weight": "feature_projection.projection.weight",
    "encoder.pos_conv.0.weight_g": "encoder.pos_conv_embed.conv.weight_g",
    "encoder.pos_conv.0.weight_v": "encoder.pos_conv_embed.conv.weight_v",
    "encoder.pos_conv.0.bias": "encoder.pos_conv_embed.conv.bias",
    "encoder.layer_norm.bias": "encoder.layer_norm.bias",
    "encoder.layers.0.self_attn.relative_attention_bias.weight": "encoder.layers.0.attention.rel_attn_embed.weight",
    "encoder.layers.0.self_attn.q_proj.weight": "encoder.layers.0.attention.q_proj.weight",
    "encoder.layers.0.self_attn.k_proj.bias": "encoder.layers.0.attention.k_proj.bias",
    "encoder.layers.0.self_attn.v_proj.weight": "encoder.layers.0.attention.v_proj.weight",
    "encoder.layers.0.self_attn.out_proj.weight": "encoder.layers.0.attention.out_proj.weight",
    "encoder.layers.0.self_attn.grep_linear.weight": "encoder.layers.0.attention.gru_rel_pos_linear.weight",
    "encoder.layers.0.self_attn.grep_a": "encoder.layers.0.attention.gru_rel_pos_const",
    "encoder.layers.0.self_attn_layer_norm.weight": "encoder.layers.0.layer_norm.weight",
    "encoder.layers.0.fc1.weight": "encoder.layers.0.feed_forward.intermediate_dense.weight",
    "encoder.layers.0.fc2.bias": "encoder.layers.0.feed_forward.output_dense.bias",
    "encoder.layers.0.final_layer_norm.weight": "encoder.layers.0.final_layer_norm.weight",
    "mask_emb": None,
}


def _bn(name, n):
    return {f"{name}.weight": (n,), f"{name}.bias": (n,), f"{name}.running_mean": (n,), f"{name}.running_var": (n,),
            f"{name}.num_batches_tracked": ()}


HEAD_TABLE = {
    "feature_weight": (25,),  # 24 layer inputs + the final layer-normed output
    "layer1.conv.weight": (512, 1024, 5), "layer1.conv.bias": (512,), **_bn("layer1.bn", 512),
    **{k: v for layer in ("layer2", "layer3", "layer4") for k, v in {
        f"{layer}.Conv1dReluBn1.conv.weight": (512, 512, 1), f"{layer}.Conv1dReluBn1.conv.bias": (512,),
        **_bn(f"{layer}.Conv1dReluBn1.bn", 512),
        **{f"{layer}.Res2Conv1dReluBn.convs.{j}.weight": (64, 64, 3) for j in range(7)},
        **{f"{layer}.Res2Conv1dReluBn.convs.{j}.bias": (64,) for j in range(7)},
        **{k: v for j in range(7) for k, v in _bn(f"{layer}.Res2Conv1dReluBn.bns.{j}", 64).items()},
        f"{layer}.Conv1dReluBn2.conv.weight": (512, 512, 1), f"{layer}.Conv1dReluBn2.conv.bias": (512,),
        **_bn(f"{layer}.Conv1dReluBn2.bn", 512),
        f"{layer}.SE_Connect.linear1.weight": (128, 512), f"{layer}.SE_Connect.linear1.bias": (128,),
        f"{layer}.SE_Connect.linear2.weight": (512, 128), f"{layer}.SE_Connect.linear2.bias": (512,),
    }.items()},
    "conv.weight": (1536, 1536, 1), "conv.bias": (1536,),
    "pooling.linear1.weight": (128, 1536, 1), "pooling.linear1.bias": (128,),
    "pooling.linear2.weight": (1536, 128, 1), "pooling.linear2.bias": (1536,),
    **_bn("bn", 3072), "linear.weight": (256, 3072), "linear.bias": (256,),
}

# microsoft/wavlm-large's config.json, the fields that shape the model
WAVLM_LARGE_CONFIG = {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
                      "intermediate_size": 4096, "conv_dim": (512,) * 7, "conv_kernel": (10, 3, 3, 3, 3, 2, 2),
                      "conv_stride": (5, 2, 2, 2, 2, 2, 2), "conv_bias": False, "feat_extract_norm": "layer",
                      "do_stable_layer_norm": True, "num_buckets": 320, "max_bucket_distance": 800,
                      "num_conv_pos_embeddings": 128, "num_conv_pos_embedding_groups": 16, "hidden_act": "gelu"}


def full_table() -> dict:
    out = {P + k: v for k, v in BACKBONE_TABLE.items()}
    out.update({f"{P}encoder.layers.{i}.{k}": v for i in range(24) for k, v in LAYER_TABLE.items()})
    out.update(HEAD_TABLE)
    return out


def test_full_size_format_matches_the_reference_table_and_maps_onto_transformers_wavlm_large():
    import torch
    from transformers import WavLMModel

    table = full_table()
    assert E.published_parameter_shapes(E.WAVLM_LARGE_ECAPA) == table
    with torch.device("meta"):
        sd = {k: torch.empty(v) for k, v in table.items()}
        shape = E.EcapaShape.from_state_dict(sd)
        assert shape == E.WAVLM_LARGE_ECAPA
        cfg = shape.wavlm_config()
        for key, value in WAVLM_LARGE_CONFIG.items():
            got = getattr(cfg, key)
            assert (tuple(got) if isinstance(got, list) else got) == value, key
        wavlm, head = WavLMModel(cfg), E.build_head(shape)
    target = {k: tuple(v.shape) for k, v in wavlm.state_dict().items()}
    backbone, head_sd, ignored = E.split_checkpoint(sd, set(target))
    assert ignored == [P + "mask_emb"]  # the only backbone entry transformers has no use for at inference
    assert {k: tuple(v.shape) for k, v in backbone.items()} == target  # every parameter, same shapes
    assert {k: tuple(v.shape) for k, v in head_sd.items()} == {k: tuple(v.shape) for k, v in head.state_dict().items()}
    for fairseq, hf in EXPECTED_RENAMES.items():
        assert E.map_wavlm_key(fairseq) == hf, fairseq
    # the mapping is name for name, never two sources onto one target
    assert len({E.map_wavlm_key(k[len(P):]) for k in table if k.startswith(P)} - {None}) == len(backbone)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("ecapa")
    path = E.write_random_checkpoint(str(root / "a" / E.CHECKPOINT_NAME), seed=0)
    return {"root": root, "path": path, "judge": E.EcapaJudge(path, device="cpu")}


def _clip(seed: int, seconds: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16_000)) / 16_000
    return (0.3 * np.sin(2 * np.pi * (120 + 80 * seed) * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


def test_random_checkpoint_has_the_published_format_and_loads_every_tensor(small):
    import torch

    blob = torch.load(small["path"], map_location="cpu", weights_only=True)
    assert set(blob) == {"model"}
    sd = blob["model"]
    assert {k: tuple(v.shape) for k, v in sd.items()} == E.published_parameter_shapes(E.SMALL_ECAPA)
    judge = small["judge"]
    assert judge.shape == E.SMALL_ECAPA
    loaded = {**{P + k: v for k, v in judge.wavlm.state_dict().items()}, **judge.head.state_dict()}
    renamed = {P + (E.map_wavlm_key(k[len(P):]) or "") if k.startswith(P) else k: k for k in sd}
    for name, value in loaded.items():
        name = name.replace("parametrizations.weight.original0", "weight_g").replace(
            "parametrizations.weight.original1", "weight_v")
        assert torch.equal(value, sd[renamed[name]]), name  # the file's value, not an initialisation
    assert len(loaded) == len(sd) - 1  # everything but mask_emb


def test_similarity_is_a_cosine_and_depends_on_the_weights(small, tmp_path):
    import torch

    judge, a, b = small["judge"], _clip(0), _clip(1, 1.3)
    assert judge.similarity(a, a) == pytest.approx(1.0, abs=1e-5)
    ab = judge.similarity(a, b)
    assert -1.0 <= ab < 0.99999 and ab == pytest.approx(judge.similarity(b, a), abs=1e-5)
    ea, eb = judge.embed(a), judge.embed(b)
    assert ea.shape == (E.SMALL_ECAPA.emb_dim,)
    assert ab == pytest.approx(float(ea @ eb / np.linalg.norm(ea) / np.linalg.norm(eb)), abs=1e-6)
    # another file: other embeddings
    other = E.EcapaJudge(E.write_random_checkpoint(str(tmp_path / "b.pth"), seed=1), device="cpu")
    assert not np.allclose(other.embed(a), ea, atol=1e-4)
    # each part of the file is used: a transformer weight, the layer mix, a head weight
    sd = torch.load(small["path"], weights_only=True)["model"]
    for key, change in ((P + "encoder.layers.1.fc1.weight", lambda t: t * 3.0),
                        ("feature_weight", lambda t: torch.tensor([8.0, -8.0, 0.0])),
                        ("layer3.SE_Connect.linear2.bias", lambda t: t - 2.0)):
        edited = dict(sd, **{key: change(sd[key])})
        path = str(tmp_path / f"edit-{key}.pth")
        torch.save({"model": edited}, path)
        assert not np.allclose(E.EcapaJudge(path, device="cpu").embed(a), ea, atol=1e-4), key


def _reference_head(sd: dict, hidden):
    """The ECAPA head written out with torch.nn.functional from the reference's forward, reading the state dict."""
    import torch
    from torch.nn import functional as F

    def bn(x, n):
        return F.batch_norm(x, sd[n + ".running_mean"], sd[n + ".running_var"], sd[n + ".weight"], sd[n + ".bias"],
                            training=False, eps=1e-5)

    def conv_relu_bn(x, n, **kw):
        return bn(F.relu(F.conv1d(x, sd[n + ".conv.weight"], sd[n + ".conv.bias"], **kw)), n + ".bn")

    def block(x, n, dilation):
        y = conv_relu_bn(x, n + ".Conv1dReluBn1")
        width = y.shape[1] // 8
        chunks, outs, sp = torch.split(y, width, 1), [], None
        for i in range(7):
            sp = chunks[i] if i == 0 else sp + chunks[i]
            c = f"{n}.Res2Conv1dReluBn"
            sp = bn(F.relu(F.conv1d(sp, sd[f"{c}.convs.{i}.weight"], sd[f"{c}.convs.{i}.bias"], padding=dilation,
                                    dilation=dilation)), f"{c}.bns.{i}")
            outs.append(sp)
        y = conv_relu_bn(torch.cat(outs + [chunks[7]], 1), n + ".Conv1dReluBn2")
        s = F.relu(F.linear(y.mean(2), sd[n + ".SE_Connect.linear1.weight"], sd[n + ".SE_Connect.linear1.bias"]))
        s = torch.sigmoid(F.linear(s, sd[n + ".SE_Connect.linear2.weight"], sd[n + ".SE_Connect.linear2.bias"]))
        return y * s.unsqueeze(2) + x

    w = F.softmax(sd["feature_weight"], -1)
    x = sum(w[i] * h for i, h in enumerate(hidden)).transpose(1, 2) + 1e-6
    x = F.instance_norm(x)
    o1 = conv_relu_bn(x, "layer1", padding=2)
    o2 = block(o1, "layer2", 2)
    o3 = block(o2, "layer3", 3)
    o4 = block(o3, "layer4", 4)
    x = F.relu(F.conv1d(torch.cat([o2, o3, o4], 1), sd["conv.weight"], sd["conv.bias"]))
    alpha = F.softmax(F.conv1d(torch.tanh(F.conv1d(x, sd["pooling.linear1.weight"], sd["pooling.linear1.bias"])),
                               sd["pooling.linear2.weight"], sd["pooling.linear2.bias"]), dim=2)
    mean = torch.sum(alpha * x, 2)
    std = torch.sqrt((torch.sum(alpha * x ** 2, 2) - mean ** 2).clamp(min=1e-9))
    return F.linear(bn(torch.cat([mean, std], 1), "bn"), sd["linear.weight"], sd["linear.bias"])


def test_head_and_features_follow_the_reference_forward(small):
    import torch
    from torch.nn import functional as F

    judge, a = small["judge"], _clip(3, 0.8)
    sd = torch.load(small["path"], weights_only=True)["model"]
    wav = torch.from_numpy(a)
    with torch.no_grad():
        hidden = judge.wavlm(F.layer_norm(wav, wav.shape)[None], output_hidden_states=True).hidden_states
        assert len(hidden) == E.SMALL_ECAPA.layers + 1  # every layer's input and the final normed output
        expected = _reference_head(sd, hidden)[0].numpy()
    np.testing.assert_allclose(judge.embed(a), expected, rtol=1e-4, atol=1e-5)
    # the clip is layer-normalised first (s3prl, normalize=True): gain and offset do not matter
    np.testing.assert_allclose(judge.embed(3.0 * a + 0.1), judge.embed(a), rtol=1e-3, atol=1e-4)


def test_checkpoint_faults_are_named(small, tmp_path):
    import torch

    sd = torch.load(small["path"], weights_only=True)["model"]
    extra = dict(sd, **{"projection.weight": torch.zeros(3, 16)})  # a training loss's weights: ignored
    torch.save({"model": extra}, tmp_path / "extra.pth")
    assert E.EcapaJudge(str(tmp_path / "extra.pth"), device="cpu").similarity(_clip(0), _clip(0)) == pytest.approx(1.0, abs=1e-5)
    torch.save({"model": {k: v for k, v in sd.items() if k != P + "encoder.layers.1.fc2.bias"}}, tmp_path / "hole.pth")
    with pytest.raises(ValueError, match="misses 1 parameters"):
        E.EcapaJudge(str(tmp_path / "hole.pth"), device="cpu")
    torch.save({"model": {k: v for k, v in sd.items() if not k.startswith(P)}}, tmp_path / "head-only.pth")
    with pytest.raises(ValueError, match="lacks a WavLM"):
        E.EcapaJudge(str(tmp_path / "head-only.pth"), device="cpu")
    torch.save(sd, tmp_path / "bare.pth")  # a state dict not under "model"
    with pytest.raises(ValueError, match="under 'model'"):
        E.EcapaJudge(str(tmp_path / "bare.pth"), device="cpu")
    with pytest.raises(FileNotFoundError, match="wavlm_large_finetune.pth"):
        E.EcapaJudge(str(tmp_path / "absent" / E.CHECKPOINT_NAME), device="cpu")


def test_short_clips_are_scored_down_to_two_wavlm_frames(small):
    judge, a = small["judge"], _clip(0)
    assert judge.min_samples == 720
    assert isinstance(judge.similarity(a, a[:720]), float)  # 45 ms: scored (the x-vector judge needed 0.5 s)
    assert isinstance(judge.similarity(a[:4000], a), float)
    assert judge.similarity(a, a[:719]) is None and judge.similarity(a[:0], a) is None
    assert J.unscored_sim_reason(judge, a[:0], a) == "no generated audio"
    assert J.unscored_sim_reason(judge, a[:100], a) == "generated clip under 0.045 s"
    assert J.unscored_sim_reason(judge, a, a[:100]) == "reference clip under 0.045 s"
    assert J.unscored_sim_reason(judge, a[:720], a) is None


class _Gen:
    def __init__(self, n):
        self.ids, self.terminated = list(range(n)), True


class _Ctx:
    """Just what eval.tasks.tts._chunk_fn uses: generations of a set length, decoded to that many 24 kHz samples."""

    def __init__(self, lengths):
        from types import SimpleNamespace

        self.lengths = lengths
        self.config = SimpleNamespace(tts_temperature=0.9, tts_top_p=0.8, tts_max_new_tokens=10, save_audio=False)
        self.audio_end = -1

    def audio_strings(self, clips):
        return ["" for _ in clips]

    def encode(self, text):
        return [0]

    def generate(self, prompts, **kw):
        return [_Gen(n) for n in self.lengths[kw["offset"]:kw["offset"] + len(prompts)]]

    def decode_audio_ids(self, ids):
        return _clip(2, len(ids) / 24_000)[: len(ids)] if ids else np.zeros(0, np.float32), {"frames": len(ids)}


def test_tts_rows_count_every_unscored_clip_by_reason(small):
    from eval.tasks import tts as T

    class Asr:
        def transcribe(self, waves):
            return ["" for _ in waves]

    # generated lengths in 24 kHz samples: none, 30 ms (under 45 ms), 0.3 s (under the old 0.5 s cut: scored), 1 s
    lengths = [0, 720, 7200, 24_000]
    prompt = _clip(0, 1.0)
    chunk = [{"id": f"u{i}", "prompt_audio": prompt, "prompt_text": "a", "target_text": "b"} for i in range(4)]
    rows = T._chunk_fn(_Ctx(lengths), Asr(), small["judge"])(chunk)
    assert [r["sim"] is None for r in rows] == [True, True, False, False]
    assert [r["sim_unscored"] for r in rows] == ["no generated audio", "generated clip under 0.045 s", None, None]
    metric, extra = T.sim_summary(rows, small["judge"])
    assert metric == pytest.approx(np.mean([rows[2]["sim"], rows[3]["sim"]]))
    assert extra["sim_scored"] == 2 and extra["sim_unscored"] == 2
    assert extra["sim_unscored_reasons"] == {"no generated audio": 1, "generated clip under 0.045 s": 1}
    assert extra["sim_judge"].startswith("wavlm-large-ecapa-tdnn (")
    none, extra = T.sim_summary(rows[:2], small["judge"])
    assert none is None and extra["sim_scored"] == 0 and extra["sim_unscored"] == 2


def test_random_judges_default_to_the_ecapa_kind_and_are_named(tmp_path):
    from tokenizer.testing import make_tiny_qwen_style_tokenizer_dir

    tok = make_tiny_qwen_style_tokenizer_dir(str(tmp_path / "tok"))
    asr, sim = J.make_random_judges(str(tmp_path), tok)
    assert os.path.basename(sim) == "random-wavlm-ecapa" and os.path.isfile(os.path.join(sim, E.CHECKPOINT_NAME))
    assert J.make_random_judges(str(tmp_path), tok, sim="xvector")[1] == str(tmp_path / "random-wavlm-sv")
    with pytest.raises(ValueError, match="sim='fbank'"):
        J.make_random_judges(str(tmp_path), tok, sim="fbank")
    pth = os.path.join(sim, E.CHECKPOINT_NAME)
    assert J.is_random_judge(sim) and J.is_random_judge(pth) and not J.is_random_judge(J.DEFAULT_SIM_JUDGE)
    assert isinstance(J.load_speaker_judge(sim, device="cpu"), E.EcapaJudge)
    assert isinstance(J.SpeakerJudge(pth, device="cpu"), E.EcapaJudge)
    xv = J.load_speaker_judge(str(tmp_path / "random-wavlm-sv"), device="cpu")
    assert isinstance(xv, J.XVectorJudge) and xv.min_samples == 8000
    assert J.describe_sim_judge(sim) == f"wavlm-large-ecapa-tdnn, random-init ({sim})"
    assert J.describe_sim_judge(J.XVECTOR_SIM_JUDGE) == "wavlm-xvector (microsoft/wavlm-base-plus-sv)"
    assert J.describe_sim_judge(J.DEFAULT_SIM_JUDGE).startswith("wavlm-large-ecapa-tdnn (")
    assert re.fullmatch(r"wavlm_large_finetune\.pth", J.DEFAULT_SIM_JUDGE)


def test_the_eval_default_is_the_seed_tts_eval_judge():
    from steps.evaluate import EvalConfig

    assert EvalConfig.tts_sim_judge == J.DEFAULT_SIM_JUDGE == E.CHECKPOINT_NAME
    with pytest.raises(FileNotFoundError, match=r"\.cache/soda/judges"):
        E.resolve_checkpoint(os.path.join("no-such-dir", E.CHECKPOINT_NAME))
