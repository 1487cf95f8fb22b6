"""pipeline.fileio: one contract for a missing file, atomic writes, and whole-object reads on gs://."""

import os

import pytest

from pipeline import fileio

BUCKET = "soda-fileio"


def test_a_missing_file_raises_naming_it_unless_a_default_is_given(tmp_path):
    missing = str(tmp_path / "nope.json")
    with pytest.raises(FileNotFoundError, match="nope.json does not exist"):
        fileio.read_json(missing)
    assert fileio.read_json(missing, default=None) is None
    assert fileio.read_text(missing, default="") == "" and fileio.read_bytes(missing, default=b"x") == b"x"
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json is not valid JSON"):
        fileio.read_json(str(tmp_path / "bad.json"), default=None)  # a broken file is never the default


def test_atomic_writes_leave_no_temp_and_replace_whole(tmp_path):
    url = str(tmp_path / "deep" / "dir" / "summary.json")
    fileio.atomic_write_json(url, {"loss": float("nan"), "n": 3})
    assert fileio.read_json(url) == {"loss": None, "n": 3, "non_finite": {"loss": {"nan": 1}}}
    fileio.atomic_write_text(url, "second")
    assert fileio.read_text(url) == "second" and os.listdir(tmp_path / "deep" / "dir") == ["summary.json"]


def test_join_and_kinds_of_url():
    assert fileio.join("gs://b/x/", "/y/", "", "z") == "gs://b/x/y/z"
    assert fileio.is_local("file:///a") and not fileio.is_local("gs://b/a")
    assert fileio.same_kind("gs://b/*.json", "b/x.json") == "gs://b/x.json"


def test_a_gs_object_rewritten_after_a_listing_reads_whole(gcs):
    """gcsfs keeps the sizes of a listing; a ranged read by that size gave the head of a longer, newer
    generation (a status file cut at `"time": 179`). A read is one GET of the whole object."""
    import gcsfs

    url = f"gs://{BUCKET}/run/step/.executor_status"
    fileio.atomic_write_text(url, '{"status": "RUNNING"}')
    fs, _ = fileio.url_to_fs(url)
    assert isinstance(fs, gcsfs.GCSFileSystem)
    fs.ls(f"{BUCKET}/run/step", detail=True)  # the listing gcsfs caches, with the short size
    longer = '{"status": "FAILED", "error": "RuntimeError: it broke", "time": 1796320737.99}'
    other = gcsfs.GCSFileSystem(endpoint_url=fs._endpoint, token="anon", skip_instance_cache=True)
    other.pipe_file(f"{BUCKET}/run/step/.executor_status", longer.encode())  # another executor's write
    assert fileio.read_text(url) == longer
    assert fileio.read_json(url)["error"] == "RuntimeError: it broke"
