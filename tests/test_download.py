"""The download step against an in-memory stand-in for the hub (no network)."""

import json
import os

import fsspec
import pytest

from steps.download import (
    DownloadConfig,
    check_revision,
    download_dataset,
    expand_braces,
    make_matcher,
    source_root,
)
from steps import download_presets

SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub():
    fs = fsspec.filesystem("memory")
    root = f"/hub-{os.getpid()}-{id(fs)}"
    files = {
        "Emilia/EN/EN-B000000.tar": b"a" * 1000,
        "Emilia/EN/EN-B000001.tar": b"b" * 2000,
        "Emilia-YODAS/EN/EN-B000000.tar": b"c" * 300,
        "Emilia/DE/DE-B000000.tar": b"d" * 50,
        "README.md": b"readme",
    }
    for rel, data in files.items():
        fs.pipe(f"{root}/{rel}", data)
    yield fs, root, files
    fs.rm(root, recursive=True)


def _config(tmp_path, root, include=("Emilia/EN/*.tar",), revision=SHA):
    return DownloadConfig(hf_dataset_id="amphion/Emilia-Dataset", revision=revision,
                          output_path=str(tmp_path / "out"), include=include, source_url=f"memory://{root}")


def test_copies_only_matching_files_and_writes_summary(hub, tmp_path):
    fs, root, files = hub
    summary = download_dataset(_config(tmp_path, root), source_fs=fs)
    out = tmp_path / "out"
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.tar")) == [
        "Emilia/EN/EN-B000000.tar", "Emilia/EN/EN-B000001.tar"]
    assert (out / "Emilia/EN/EN-B000001.tar").read_bytes() == files["Emilia/EN/EN-B000001.tar"]
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk == summary
    assert (summary["files"], summary["bytes"], summary["skipped"]) == (2, 3000, 0)
    assert summary["revision"] == SHA


def test_rerun_skips_complete_files_and_redoes_partial_ones(hub, tmp_path):
    fs, root, files = hub
    config = _config(tmp_path, root)
    download_dataset(config, source_fs=fs)
    out = tmp_path / "out"
    # simulate a crash: one file truncated under its real name, one leftover .partial
    (out / "Emilia/EN/EN-B000001.tar").write_bytes(b"b" * 10)
    (out / "Emilia/EN/EN-B000000.tar.partial").write_bytes(b"junk")
    mtime_complete = os.stat(out / "Emilia/EN/EN-B000000.tar").st_mtime_ns
    summary = download_dataset(config, source_fs=fs)
    assert (summary["skipped"], summary["downloaded_files"]) == (1, 1)
    assert (out / "Emilia/EN/EN-B000001.tar").read_bytes() == files["Emilia/EN/EN-B000001.tar"]
    assert os.stat(out / "Emilia/EN/EN-B000000.tar").st_mtime_ns == mtime_complete


def test_size_mismatch_never_leaves_a_file_under_its_real_name(hub, tmp_path):
    fs, root, _ = hub

    class LyingFS(type(fs)):
        def find(self, path, **kw):  # listing says bigger than what can be read
            found = super().find(path, **kw)
            return {k: dict(v, size=v["size"] + 1) for k, v in found.items()}

    with pytest.raises(IOError, match="rerun to retry"):
        download_dataset(_config(tmp_path, root), source_fs=LyingFS())
    assert not list((tmp_path / "out").rglob("*.tar"))


@pytest.mark.parametrize("revision", ["", None, "main", "UNPINNED-speed-sBLIMP"])
def test_unpinned_revision_is_refused(tmp_path, revision):
    with pytest.raises(ValueError, match="revision|Pin"):
        check_revision(_config(tmp_path, "/x", revision=revision))


def test_no_match_is_a_clear_error(hub, tmp_path):
    fs, root, _ = hub
    with pytest.raises(FileNotFoundError, match="no file matches"):
        download_dataset(_config(tmp_path, root, include=("nothing/*.tar",)), source_fs=fs)


def test_hub_root_pins_revision():
    config = DownloadConfig(hf_dataset_id="espnet/yodas2", revision=SHA, output_path="/tmp/x")
    assert source_root(config) == f"hf://datasets/espnet/yodas2@{SHA}"
    fs, path = fsspec.core.url_to_fs(source_root(config))
    assert type(fs).__name__ == "HfFileSystem" and path.endswith(f"@{SHA}")
    conv = DownloadConfig(hf_dataset_id="a/b", revision="refs/convert/parquet", output_path="/tmp/x")
    assert source_root(conv) == "hf://datasets/a/b@refs%2Fconvert%2Fparquet"


def test_globs_and_braces():
    assert expand_braces("en{{000..002},{100..101}}/*.parquet") == [
        "en000/*.parquet", "en001/*.parquet", "en002/*.parquet", "en100/*.parquet", "en101/*.parquet"]
    match = make_matcher(["data/en*/audio/*.tar.gz", "**/*.json"], exclude=["skip/**"])
    assert match("data/en000/audio/00000000.tar.gz")
    assert not match("data/en000/audio/sub/00000000.tar.gz")  # * stays in one directory
    assert not match("data/de000/audio/00000000.tar.gz")
    assert match("top.json") and match("a/b/c.json") and not match("skip/a.json")


def test_presets_are_versioned_and_pinned_or_flagged():
    from pipeline.step import VersionedValue

    for name, make in download_presets.PRESETS.items():
        config = make()
        assert isinstance(config.revision, VersionedValue), name
        rev = config.revision.value
        assert len(rev) == 40 or rev.startswith("UNPINNED-") or config.source_url, (name, rev)
        assert config.include, name
    step = download_presets.raw_step("raw/salmon", download_presets.salmon())
    assert step.name == "raw/salmon" and step.fn is download_dataset
