"""The data mirror (steps.mirror), Nemotron-CC over a paths listing, .jsonl.zstd text, and
`soda make-mirror` (steps.mirror_fixtures): every production download found in the mirror and
read by its consumer. No network."""

import gzip
import json
import os
import re
import subprocess
import sys
from collections import Counter

import pytest

from steps.download import DownloadConfig, download_dataset
from steps.mirror import MIRROR_ENV, mirrored_url

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHA = "0123456789abcdef0123456789abcdef01234567"
PRODUCTION = ("exp1699_soda_all", "exp7_isoflop_sweep", "exp8_soda_prelim", "exp8_source_annealing",
              "exp8_text_ratio", "exp8_token_composition", "exp8_warm_start", "exp10_s2st_finetune")


# ---- the mapping --------------------------------------------------------------------------------


@pytest.mark.parametrize("url,mirror,want", [
    (f"hf://datasets/speed/sBLIMP@{SHA}", "/m", f"/m/hf/datasets/speed/sBLIMP/{SHA}"),
    (f"hf://datasets/speed/sBLIMP@{SHA}/data/x.parquet", "gs://b/m/", f"gs://b/m/hf/datasets/speed/sBLIMP/{SHA}/data/x.parquet"),
    ("hf://datasets/a/b@refs%2Fconvert%2Fparquet/c.parquet", "file:///m", "file:///m/hf/datasets/a/b/refs%2Fconvert%2Fparquet/c.parquet"),
    ("https://data.commoncrawl.org/contrib/Nemotron/x.zstd", "/m", "/m/commoncrawl/contrib/Nemotron/x.zstd"),
    ("https://data.commoncrawl.org", "/m", "/m/commoncrawl"),
    ("s3://commoncrawl/contrib/Nemotron/x", "/m", "/m/commoncrawl/contrib/Nemotron/x"),
    ("gs://cvss/cvss_t_v1.0/a.tar.gz", "/m", "/m/gs/cvss/cvss_t_v1.0/a.tar.gz"),
    ("gcs://cvss", "memory://m", "memory://m/gs/cvss"),
    ("s3://other-bucket/k", "/m", "/m/s3/other-bucket/k"),
])
def test_mirrored_url_maps_each_source_kind(url, mirror, want):
    assert mirrored_url(url, mirror) == want


@pytest.mark.parametrize("url", ["hf://datasets/speed/sBLIMP", "hf://models/kyutai/mimi@main",
                                 "https://example.org/data.tar", "file:///local/corpus"])
def test_unmappable_source_is_an_error_naming_it(url):
    with pytest.raises(ValueError, match=re.escape(f"cannot mirror {url!r}")):
        mirrored_url(url, "/m")


# ---- the download step through a mirror ------------------------------------------------------


def _put(root, rel, data=b"x"):
    path = os.path.join(root, *rel.split("/"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def _hub_config(tmp_path, **kw):
    return DownloadConfig(hf_dataset_id="speed/sBLIMP", revision=SHA, output_path=str(tmp_path / "out"),
                          include=("data/*.parquet",), **kw)


def test_download_reads_the_mirror_and_records_where(tmp_path, monkeypatch):
    mirror = str(tmp_path / "mirror")
    base = f"hf/datasets/speed/sBLIMP/{SHA}"
    _put(mirror, f"{base}/data/train-0.parquet", b"a" * 10)
    _put(mirror, f"{base}/data/test-0.parquet", b"b" * 7)
    _put(mirror, f"{base}/README.md", b"card")
    monkeypatch.setenv(MIRROR_ENV, mirror)
    summary = download_dataset(_hub_config(tmp_path))
    out = tmp_path / "out"
    assert sorted(p.name for p in (out / "data").iterdir()) == ["test-0.parquet", "train-0.parquet"]
    assert (out / "data" / "train-0.parquet").read_bytes() == b"a" * 10
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["source"] == f"hf://datasets/speed/sBLIMP@{SHA}"
    assert on_disk["mirror"] == mirror and on_disk["read_from"] == f"{mirror}/{base}"
    assert (summary["files"], summary["bytes"]) == (2, 17)


def test_without_the_mirror_the_summary_says_so(tmp_path, monkeypatch):
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    src = tmp_path / "src"
    _put(str(src), "data/a.parquet")
    config = DownloadConfig(hf_dataset_id=None, revision="v1", output_path=str(tmp_path / "out"),
                            include=("data/*.parquet",), source_url=f"file://{src}")
    summary = download_dataset(config)
    assert summary["mirror"] is None and summary["read_from"] == summary["source"] == f"file://{src}"
    # a local source is read in place even with a mirror set
    monkeypatch.setenv(MIRROR_ENV, str(tmp_path / "mirror"))
    assert download_dataset(config)["mirror"] is None


def test_a_mirror_without_the_files_names_the_path_and_make_mirror(tmp_path, monkeypatch):
    mirror = str(tmp_path / "empty-mirror")
    os.makedirs(mirror)
    monkeypatch.setenv(MIRROR_ENV, mirror)
    with pytest.raises(FileNotFoundError) as err:
        download_dataset(_hub_config(tmp_path))
    msg = str(err.value)
    assert f"{mirror}/hf/datasets/speed/sBLIMP/{SHA}" in msg
    assert "soda make-mirror" in msg and "SODA_DATASETS_LOCK" in msg


def test_source_storage_options_are_not_given_to_the_mirror(tmp_path, monkeypatch):
    import fsspec

    mirror = str(tmp_path / "mirror")
    _put(mirror, "gs/cvss/cvss_t_v1.0/cvss_t_fr_en_v1.0.tar.gz", b"tgz")
    calls = []
    real = fsspec.core.url_to_fs

    def spy(url, **kw):
        calls.append((url, kw))
        return real(url, **kw)

    monkeypatch.setattr(fsspec.core, "url_to_fs", spy)
    monkeypatch.setenv(MIRROR_ENV, mirror)
    config = DownloadConfig(hf_dataset_id=None, revision="cvss-v1.0", output_path=str(tmp_path / "out"),
                            include=("cvss_t_v1.0/*.tar.gz",), source_url="gs://cvss",
                            source_storage_options={"token": "anon"})
    assert download_dataset(config)["files"] == 1
    assert calls[0] == (f"{mirror}/gs/cvss", {})


def test_the_mirror_never_changes_a_step_hash(tmp_path, monkeypatch):
    from experiments.defaults import download
    from pipeline.plan import build_plan
    from steps import download_presets as presets

    def names():
        steps = [download("salmon", presets.salmon()), download("nemotron", presets.nemotron_cc_hq_actual())]
        plan = build_plan(steps, str(tmp_path / "prefix"))
        return [plan.of(s).versioned_name for s in steps]

    monkeypatch.delenv(MIRROR_ENV, raising=False)
    plain = names()
    monkeypatch.setenv(MIRROR_ENV, "gs://some-bucket/mirror")
    assert names() == plain


# ---- Nemotron-CC: a paths listing over HTTPS, through the mirror ---------------------------------

LISTED = [
    "contrib/Nemotron/Nemotron-CC/data-jsonl/quality=high/kind=actual/kind2=actual/CC-MAIN-2013-20-part-00000.jsonl.zstd",
    "contrib/Nemotron/Nemotron-CC/data-jsonl/quality=high/kind=actual/kind2=actual/CC-MAIN-2024-30-part-00007.jsonl.zstd",
    "contrib/Nemotron/Nemotron-CC/data-jsonl/quality=high/kind=synthetic/kind2=distill/CC-MAIN-2013-20-part-00000.jsonl.zstd",
    "contrib/Nemotron/Nemotron-CC/data-jsonl/quality=medium/kind=actual/kind2=actual/CC-MAIN-2013-20-part-00000.jsonl.zstd",
]


def _zstd_jsonl(texts, frames=1):
    import zstandard

    lines = [json.dumps({"warc_record_id": f"<urn:uuid:{i}>", "text": t}) + "\n" for i, t in enumerate(texts)]
    step = max(1, len(lines) // frames)
    return b"".join(zstandard.ZstdCompressor().compress("".join(lines[i:i + step]).encode())
                    for i in range(0, len(lines), step))


@pytest.mark.parametrize("gzipped", [True, False])
def test_nemotron_preset_copies_the_listed_hq_actual_files_from_the_mirror(tmp_path, monkeypatch, gzipped):
    from steps.download_presets import NEMOTRON_CC_PATHS_LISTING, nemotron_cc_hq_actual

    mirror = str(tmp_path / "mirror")
    for k, rel in enumerate(LISTED):
        _put(mirror, f"commoncrawl/{rel}", _zstd_jsonl([f"document {k}"]))
    _put(mirror, "commoncrawl/contrib/Nemotron/Nemotron-CC/data-jsonl/quality=high/kind=actual/kind2=actual/"
                 "CC-MAIN-2099-01-part-00000.jsonl.zstd", b"not listed")
    listing = ("\n".join(LISTED) + "\n").encode()
    _put(mirror, f"commoncrawl/{NEMOTRON_CC_PATHS_LISTING}", gzip.compress(listing) if gzipped else listing)
    monkeypatch.setenv(MIRROR_ENV, mirror)
    preset = nemotron_cc_hq_actual()
    assert preset.source_url == "https://data.commoncrawl.org" and preset.source_storage_options is None
    config = DownloadConfig(**{**preset.__dict__, "revision": preset.revision.value,
                               "output_path": str(tmp_path / "out")})
    summary = download_dataset(config)
    copied = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*.jsonl.zstd"))
    assert copied == LISTED[:2]
    assert summary["paths_listing"] == NEMOTRON_CC_PATHS_LISTING and summary["read_from"] == f"{mirror}/commoncrawl"
    assert summary["source"] == "https://data.commoncrawl.org"

    # a listed file missing from the mirror is named, with the mirror advice
    os.remove(os.path.join(mirror, "commoncrawl", *LISTED[1].split("/")))
    import shutil

    shutil.rmtree(tmp_path / "out")
    with pytest.raises(FileNotFoundError, match=r"CC-MAIN-2024-30-part-00007\.jsonl\.zstd.*soda make-mirror"):
        download_dataset(config)


def test_listing_download_over_http_without_a_mirror(tmp_path, monkeypatch):
    """fsspec's HTTP filesystem against a local server: the listing is read, sizes come from the
    server, a rerun skips the complete files (an HTTPS directory cannot be listed, the listing can)."""
    import functools
    import http.server
    import threading

    monkeypatch.delenv(MIRROR_ENV, raising=False)
    served = tmp_path / "served"
    for k, rel in enumerate(LISTED):
        _put(str(served), rel, _zstd_jsonl([f"document {k}"]))
    _put(str(served), "contrib/Nemotron/Nemotron-CC/data-jsonl.paths.gz", gzip.compress("\n".join(LISTED).encode()))

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        from steps.download_presets import NEMOTRON_CC_HQ_ACTUAL_INCLUDE, NEMOTRON_CC_PATHS_LISTING

        config = DownloadConfig(hf_dataset_id=None, revision="v1", output_path=str(tmp_path / "out"),
                                include=NEMOTRON_CC_HQ_ACTUAL_INCLUDE, paths_listing=NEMOTRON_CC_PATHS_LISTING,
                                source_url=f"http://127.0.0.1:{server.server_address[1]}")
        first = download_dataset(config)
        assert (first["files"], first["downloaded_files"], first["mirror"]) == (2, 2, None)
        assert first["bytes"] == sum(os.path.getsize(served / rel) for rel in LISTED[:2])
        assert download_dataset(config)["skipped"] == 2
    finally:
        server.shutdown()


def test_a_corrupt_paths_listing_is_named(tmp_path):
    src = tmp_path / "src"
    _put(str(src), "list.paths.gz", gzip.compress(b"a/b.jsonl.zstd\n" * 100)[:20])
    config = DownloadConfig(hf_dataset_id=None, revision="v1", output_path=str(tmp_path / "out"),
                            include=("**",), source_url=f"file://{src}", paths_listing="list.paths.gz")
    with pytest.raises(ValueError, match=r"list\.paths\.gz: truncated or corrupt gzip"):
        download_dataset(config)


# ---- .jsonl.zstd text in the interleave step -----------------------------------------------------


def test_interleave_reads_zstd_jsonl_across_frames(tmp_path):
    import pyarrow.parquet as pq

    from steps.interleave import TEXT_SUFFIXES, InterleaveConfig, interleave
    from tokenizer.vocab import BOS, EOS

    assert ".jsonl.zstd" in TEXT_SUFFIXES and ".jsonl.zst" in TEXT_SUFFIXES
    texts = [f"Paragraph {i}: the tide came in." for i in range(7)]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "CC-MAIN-2013-20-part-00000.jsonl.zstd").write_bytes(_zstd_jsonl(texts, frames=3))
    (tmp_path / "in" / "b.jsonl.zst").write_bytes(_zstd_jsonl(["one more"]))
    summary = interleave(InterleaveConfig(input_path=str(tmp_path / "in"), output_path=str(tmp_path / "out"),
                                          corpus="text"))
    assert summary["documents"] == 8
    docs = [pq.read_table(p).column("text").to_pylist()
            for p in sorted((tmp_path / "out" / "documents").glob("*.parquet"))]
    got = sorted(t for part in docs for t in part)
    assert got == sorted(BOS + t + EOS for t in texts + ["one more"])


def test_interleave_names_a_truncated_zstd_file(tmp_path):
    from steps.interleave import InterleaveConfig, interleave

    whole = _zstd_jsonl([f"text {i} " * 50 for i in range(200)])
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "cut.jsonl.zstd").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match=r"cut\.jsonl\.zstd: cannot read the file \(truncated"):
        interleave(InterleaveConfig(input_path=str(tmp_path / "in"), output_path=str(tmp_path / "out"),
                                    corpus="text"))
    (tmp_path / "in" / "cut.jsonl.zstd").write_bytes(b"not zstandard at all")
    with pytest.raises(ValueError, match=r"cut\.jsonl\.zstd: cannot read the file"):
        interleave(InterleaveConfig(input_path=str(tmp_path / "in"), output_path=str(tmp_path / "out2"),
                                    corpus="text"))


# ---- soda make-mirror: every production download, read by its consumer ---------------------------

RUN_DOWNLOADS = """
import importlib, json, sys
from pipeline.plan import build_plan, topological_order
from steps.download import download_dataset
steps = {}
for mod in %r:
    for s in topological_order(importlib.import_module("experiments." + mod).STEPS):
        if s.fn is download_dataset:
            steps[s.name] = s
plan = build_plan(list(steps.values()), sys.argv[1])
out = {}
for name, s in sorted(steps.items()):
    config = plan.of(s).concrete_config(plan.paths)
    out[name] = dict(download_dataset(config), output=config.output_path)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def mirrored_downloads(tmp_path_factory):
    """make_mirror, then every download step of every production script run in a fresh process
    with SODA_DATA_MIRROR and SODA_DATASETS_LOCK pointing at it."""
    from steps.mirror_fixtures import make_mirror

    root = tmp_path_factory.mktemp("mirror")
    mirror = str(root / "m")
    lock = make_mirror(mirror)
    env = {**os.environ, MIRROR_ENV: mirror, "SODA_DATASETS_LOCK": lock}
    run = subprocess.run([sys.executable, "-c", RUN_DOWNLOADS % (PRODUCTION,), str(root / "prefix")],
                         capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    return mirror, lock, json.loads(run.stdout.strip().splitlines()[-1])


def test_make_mirror_covers_every_download_of_the_production_scripts(mirrored_downloads):
    import importlib

    from pipeline.plan import topological_order
    from steps.dataset_lock import read_lock

    mirror, lock, results = mirrored_downloads
    entries = read_lock(lock)
    declared = {}
    for mod in PRODUCTION:
        for s in topological_order(importlib.import_module("experiments." + mod).STEPS):
            if s.fn is download_dataset:
                declared[s.name] = s.config
    assert set(results) == set(declared) and len(results) == 13
    for name, summary in results.items():
        config = declared[name]
        assert summary["files"] >= 1 and summary["mirror"] == mirror, name
        if config.hf_dataset_id:  # read at the lock's revision, under the mirror rule
            revision = entries[config.hf_dataset_id]["revision"]
            assert summary["revision"] == revision
            assert summary["read_from"] == f"{mirror}/hf/datasets/{config.hf_dataset_id}/{revision}", name
    # the lock holds exactly the hub repos downloaded, pins where the code has them
    assert set(entries) == {c.hf_dataset_id for c in declared.values() if c.hf_dataset_id}
    assert entries["potsawee/yodas2-mm-pretrain"]["revision"] == "8eda080a5fd6dfc070dd306c1e6446ab7c5b5f17"
    assert entries["slprl/SALMon"]["revision"] == "18966bb30c2fe344ad09e1200805fb237bde66c7"
    assert entries["speed/sBLIMP"]["resolved_from"] == "fixture"


def test_mirrored_pre_encoded_and_text_documents_are_readable(mirrored_downloads, tmp_path):
    from steps.interleave import InterleaveConfig, interleave
    from steps.pre_encoded import PreEncodedConfig, convert_pre_encoded

    _, _, results = mirrored_downloads
    for name, files, formats in (("raw/yodas2-mm-pretrain-en", "**/*.parquet", 2),
                                 ("raw/yodas2-mm-pretrain-multilingual", "**/*.parquet", 2),
                                 ("raw/emilia-mm-pretrain-en", "Emilia-YODAS/EN/*.parquet", 2)):
        out = str(tmp_path / name.replace("/", "_"))
        summary = convert_pre_encoded(PreEncodedConfig(input_paths=(f"{results[name]['output']}/{files}",),
                                                       output_path=out))
        assert summary["documents"] >= 2 and summary["invalid_audio_documents_skipped"] == 0, name
        assert set(summary["formats"]) == {"text_first", "audio_first"}
    assert results["raw/yodas2-mm-pretrain-multilingual"]["files"] > results["raw/yodas2-mm-pretrain-en"]["files"]
    text = interleave(InterleaveConfig(input_path=results["raw/nemotron-cc-hq-actual"]["output"],
                                       output_path=str(tmp_path / "nemotron"), corpus="text"))
    assert text["input_files"] == 2 and text["documents"] == 6


def test_mirrored_eval_data_loads(mirrored_downloads):
    from eval import datasets as ds

    _, _, results = mirrored_downloads
    root = {name: r["output"] for name, r in results.items()}
    assert len(list(ds.librispeech(root["raw/librispeech-dev-test-clean"], "dev-clean"))) == 4
    assert len(list(ds.librispeech(root["raw/librispeech-dev-test-clean"], "test-clean"))) == 4
    for name in ("raw/sblimp", "raw/swuggy"):
        assert len(list(ds.audio_pairs(root[name]))) == 2
        assert len(list(ds.text_pairs_from_audio_pairs(root[name]))) == 2
    parts = Counter(ex["part"] for ex in ds.salmon_pairs(root["raw/salmon"]))
    assert parts == {"speaker_consistency": 2, "gender_consistency": 2}
    assert len(list(ds.seed_tts_eval(root["raw/seed-tts-eval-en"]))) == 2
    items = list(ds.hellaswag(root["raw/hellaswag"]))
    assert len(items) == 3 and all(len(it["choices"]) == 4 for it in items)


def test_mirrored_mls_and_s2st_data_are_readable(mirrored_downloads, tmp_path):
    from steps.audio_io import iter_parquet, prepare
    from steps.s2st.cvss import iter_pairs
    from steps.s2st.prepare import PrepareCvssConfig, prepare_cvss

    _, _, results = mirrored_downloads
    mls = sorted((p for p in os.scandir(os.path.join(results["raw/mls-en"]["output"], "data"))), key=lambda e: e.name)
    utterances = [prepare(item) for item in iter_parquet(mls[0].path)]
    assert len(utterances) == 11 and all(u.transcript and u.transcript == u.transcript.lower() for u in utterances)
    summary = prepare_cvss(PrepareCvssConfig(cvss_path=results["raw/cvss-t-v1.0"]["output"],
                                             common_voice_path=results["raw/common-voice-4"]["output"],
                                             output_path=str(tmp_path / "pairs")))
    assert summary["clips"] == 12 and summary["clips_missing"] == 0
    assert sum(len(list(iter_pairs(str(tmp_path / "pairs"), split))) for split in ("train", "dev", "test")) == 12


def test_make_mirror_writes_through_fsspec_and_is_deterministic(mirrored_downloads):
    import fsspec

    from steps.dataset_lock import read_lock
    from steps.mirror_fixtures import make_mirror

    _, lock, _ = mirrored_downloads
    lock_url = make_mirror(f"memory://soda-mirror-{os.getpid()}")
    fs = fsspec.filesystem("memory")
    try:
        assert read_lock(lock_url) == read_lock(lock)  # same fake revisions: sha1 of the same bytes
        rev = read_lock(lock)["Rowan/hellaswag"]["revision"]
        hellaswag = f"/soda-mirror-{os.getpid()}/hf/datasets/Rowan/hellaswag/{rev}"
        assert fs.exists(f"{hellaswag}/default/validation/0000.parquet")
        assert fs.exists(f"/soda-mirror-{os.getpid()}/commoncrawl/contrib/Nemotron/Nemotron-CC/data-jsonl.paths.gz")
    finally:
        fs.rm(f"/soda-mirror-{os.getpid()}", recursive=True)


def test_make_mirror_cli(tmp_path, capsys):
    from infra.cli import main

    assert main(["make-mirror", str(tmp_path / "m")]) == 0
    out = capsys.readouterr().out
    assert f"SODA_DATASETS_LOCK={tmp_path / 'm'}/datasets.lock" in out
    assert (tmp_path / "m" / "datasets.lock").exists()


def test_make_mirror_lays_out_yodas2_raw_at_the_presets_pin(mirrored_downloads):
    from steps.dataset_lock import read_lock
    from steps.download_presets import YODAS2_REVISION
    from steps.raw_yodas2 import iter_yodas2_archive

    mirror, lock, _ = mirrored_downloads
    base = f"{mirror}/hf/datasets/espnet/yodas2/{YODAS2_REVISION}/data/en000"
    for kind, ext in (("audio", "tar.gz"), ("text", "json"), ("duration", "txt")):
        assert sorted(os.listdir(f"{base}/{kind}")) == [f"00000000.{ext}", f"00000001.{ext}"]
    assert "espnet/yodas2" not in read_lock(lock)  # pinned in code; the lock holds the production downloads
    items = list(iter_yodas2_archive(f"{base}/audio/00000001.tar.gz"))
    assert len(items) == 7 and all(hasattr(i, "audio") for i in items)
