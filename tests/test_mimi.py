"""Mimi loading, encoding with padding, decoding, and the encode/decode CLIs (offline)."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from steps import codec_cli
from tokenizer import mimi as mimi_mod
from tokenizer.mimi import decode, encode, frames_for_samples, is_random_mimi, load_mimi

SMALL = dict(hidden_size=64, num_filters=8, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
             head_dim=32, intermediate_size=128, codebook_dim=32, vector_quantization_hidden_dimension=32,
             num_quantizers=8, upsample_groups=64)


def _speechy(seconds, seed=0, sr=24_000):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 110 + 40 * np.sin(2 * np.pi * (0.5 + seed) * t)
    x = np.sin(2 * np.pi * np.cumsum(f0) / sr) * (0.5 + 0.5 * np.sin(2 * np.pi * 2 * t))
    return (0.2 * x + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.fixture(scope="module")
def small():
    return load_mimi("random", seed=0, device="cpu", config_overrides=SMALL)


def test_plain_random_init_gives_all_zero_codes_but_ours_does_not(small):
    from transformers import MimiConfig, MimiModel

    torch.manual_seed(0)
    plain = MimiModel(MimiConfig(**SMALL)).eval()
    (plain_codes,) = encode(plain, [_speechy(2.0)])
    assert not plain_codes.any()  # why load_mimi('random') must randomise the codebooks
    (codes,) = encode(small, [_speechy(2.0)])
    assert codes.shape == (8, 25)
    assert codes.min() >= 0 and codes.max() < 2048
    for k in range(8):  # every codebook is used non-trivially
        assert len(np.unique(codes[k])) >= 5, k
    assert is_random_mimi(small)


def test_random_mimi_is_seeded():
    a = load_mimi("random", seed=3, device="cpu", config_overrides=SMALL)
    b = load_mimi("random", seed=3, device="cpu", config_overrides=SMALL)
    c = load_mimi("random", seed=4, device="cpu", config_overrides=SMALL)
    x = [_speechy(1.0)]
    assert np.array_equal(encode(a, x)[0], encode(b, x)[0])
    assert not np.array_equal(encode(a, x)[0], encode(c, x)[0])


def test_batch_padding_is_trimmed_and_does_not_change_codes(small):
    lengths = [1, 1919, 1921, 24_007, 36_000]
    waves = [_speechy(n / 24_000 + 1e-9, seed=i)[:n] for i, n in enumerate(lengths)]
    batched = encode(small, waves)
    for wave, n, codes in zip(waves, lengths, batched):
        assert codes.shape == (8, math.ceil(n / 1920)) == (8, frames_for_samples(n))
        (alone,) = encode(small, [wave])
        assert np.array_equal(alone, codes)


def test_bad_waveforms_are_rejected(small):
    with pytest.raises(ValueError, match="empty"):
        encode(small, [np.zeros(0, np.float32)])
    with pytest.raises(ValueError, match="1-D"):
        encode(small, [np.zeros((2, 100), np.float32)])
    with pytest.raises(ValueError, match=r"\[0, 2048\)"):
        decode(small, np.full((8, 3), 2048))


def test_decode_round_trip_shapes(small):
    (codes,) = encode(small, [_speechy(1.5)])
    audio = decode(small, codes)
    assert audio.shape == (codes.shape[1] * 1920,) and np.isfinite(audio).all()
    batch = decode(small, np.stack([codes, codes]))
    assert batch.shape == (2, codes.shape[1] * 1920)
    assert np.allclose(batch[0], audio, rtol=1e-4, atol=1e-5 * np.abs(audio).max())


def test_local_directory_loads_with_from_pretrained(small, tmp_path):
    small.save_pretrained(tmp_path / "mimi")
    loaded = load_mimi(str(tmp_path / "mimi"), device="cpu")
    assert not is_random_mimi(loaded)
    x = [_speechy(1.0, seed=2)]
    assert np.array_equal(encode(loaded, x)[0], encode(small, x)[0])


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(OSError, match="model='random'"):
        load_mimi(str(tmp_path / "does-not-exist"), device="cpu")


def test_full_size_architecture_random():
    model = load_mimi("random", seed=0, device="cpu")
    n_params = sum(p.numel() for p in model.parameters())
    assert 75e6 < n_params < 85e6  # kyutai/mimi's architecture (MimiConfig defaults, ~79M)
    assert model.config.num_quantizers == 32 and model.config.codebook_size == 2048
    (codes,) = encode(model, [_speechy(1.0)])
    assert codes.shape == (8, 13)
    assert all(len(np.unique(codes[k])) >= 3 for k in range(8))
    audio = decode(model, codes)
    assert audio.shape == (13 * 1920,) and np.isfinite(audio).all()


def test_encode_and_decode_cli(tmp_path, monkeypatch, capsys):
    import soundfile as sf

    from tokenizer.audio import chars_to_codes

    real_load = mimi_mod.load_mimi
    monkeypatch.setattr(mimi_mod, "load_mimi",
                        lambda model, device=None, **kw: real_load(model, device="cpu", config_overrides=SMALL))
    wav = tmp_path / "in.wav"
    sf.write(wav, np.stack([_speechy(1.0, sr=44_100)] * 2, axis=1), 44_100)  # stereo 44.1 kHz
    txt = tmp_path / "codes.txt"
    assert codec_cli.encode_cli([str(wav), "--out", str(txt), "--model", "random"]) == 0
    text = txt.read_text(encoding="utf-8")
    assert chars_to_codes(text).shape == (8, 13)
    out = tmp_path / "out.wav"
    assert codec_cli.decode_cli([str(txt), "--out", str(out), "--model", "random"]) == 0
    audio, sr = sf.read(out)
    assert sr == 24_000 and len(audio) == 13 * 1920
    assert "plumbing" in capsys.readouterr().err
    bad = tmp_path / "bad.txt"
    bad.write_text("abc", encoding="utf-8")
    assert codec_cli.decode_cli([str(bad), "--out", str(out)]) == 1
