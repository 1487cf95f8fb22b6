"""The download step's fan-out: files copied by several Ray tasks, transient errors retried, a
permanent one failing the step with the file's name, and a rerun copying only what is missing.

The source is a local directory read through `FlakyFS`, a LocalFileSystem that counts (in files
under `log_dir`, so Ray workers share the counts) each open of a source file and fails the first
`fails` opens of the file named `flaky` with `error`.
"""

import json
import os
import uuid

import pytest
from fsspec.implementations.local import LocalFileSystem

import steps.download as download
from steps.download import DownloadConfig, download_dataset, file_batches

SHA = "0123456789abcdef0123456789abcdef01234567"
N_FILES = 40  # three batches of at most 16


class FlakyFS(LocalFileSystem):
    cachable = False

    def __init__(self, log_dir: str, flaky: str = "", fails: int = 0, error: str = "OSError", **kwargs):
        super().__init__(**kwargs)
        self.log_dir, self.flaky, self.fails, self.error = log_dir, flaky, fails, error

    def _open(self, path, mode="rb", **kwargs):
        if "r" in mode:
            name = os.path.basename(path)
            task = "local"
            try:
                import ray

                if ray.is_initialized():
                    task = ray.get_runtime_context().get_task_id() or "driver"
            except ImportError:
                pass
            with open(os.path.join(self.log_dir, f"{name}.{uuid.uuid4().hex}"), "w") as f:
                f.write(task)
            if name == self.flaky and self.opens(name) <= self.fails:
                raise {"OSError": OSError, "PermissionError": PermissionError}[self.error](
                    f"injected failure reading {name}")
        return super()._open(path, mode=mode, **kwargs)

    def opens(self, name: str) -> int:
        return sum(1 for entry in os.listdir(self.log_dir) if entry.rsplit(".", 1)[0] == name)

    def tasks(self) -> set[str]:
        out = set()
        for entry in os.listdir(self.log_dir):
            with open(os.path.join(self.log_dir, entry)) as f:
                out.add(f.read())
        return out


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _source(tmp_path, n=N_FILES):
    src = tmp_path / "src"
    for i in range(n):
        path = src / f"part{i // 10}" / f"f{i:03d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(bytes([i]) * (100 + i))
    return src


def _run(tmp_path, src, **flaky):
    log_dir = tmp_path / f"log-{uuid.uuid4().hex[:6]}"
    log_dir.mkdir()
    fs = FlakyFS(str(log_dir), **flaky)
    config = DownloadConfig(hf_dataset_id=None, revision=SHA, output_path=str(tmp_path / "out"),
                            source_url=str(src), include=("**/*.bin",))
    return config, fs, lambda: download_dataset(config, source_fs=fs)


def _check_copied(tmp_path, src):
    for path in src.rglob("*.bin"):
        out = tmp_path / "out" / path.relative_to(src)
        assert out.read_bytes() == path.read_bytes()
    assert not list((tmp_path / "out").rglob("*.partial"))


def test_batches_bound_files_and_bytes():
    files = [(f"f{i}", 10) for i in range(40)]
    assert [len(b) for b in file_batches(files, max_files=16)] == [16, 16, 8]
    assert [len(b) for b in file_batches(files, max_files=100, max_bytes=95)] == [9, 9, 9, 9, 4]
    assert file_batches([("big", 500), ("small", 1)], max_bytes=100) == [[("big", 500)], [("small", 1)]]
    assert file_batches([]) == []


def test_in_process_retries_then_fails_naming_the_file(tmp_path, monkeypatch):
    """Without Ray (a thread pool): exhausted retries fail with the file's name; a rerun resumes.
    (Runs before the Ray tests below, which keep Ray initialised for the rest of the module.)"""
    import ray

    assert not ray.is_initialized()
    monkeypatch.setattr(download, "RETRY_DELAY_S", 0.0)
    src = _source(tmp_path)
    _config, fs, run = _run(tmp_path, src, flaky="f030.bin", fails=1000)
    with pytest.raises(OSError, match=r"f030\.bin.*failed 5 times"):
        run()
    assert fs.opens("f030.bin") == download.COPY_ATTEMPTS
    _config, fs, rerun = _run(tmp_path, src, flaky="f030.bin", fails=1)
    summary = rerun()
    assert summary["downloaded_files"] + summary["skipped"] == N_FILES
    assert fs.opens("f030.bin") == 2 and {"local"} == fs.tasks()
    _check_copied(tmp_path, src)


def test_size_mismatch_is_not_retried(tmp_path, monkeypatch):
    monkeypatch.setattr(download, "RETRY_DELAY_S", 0.0)
    src = _source(tmp_path, n=1)
    fs = FlakyFS(str(tmp_path))
    dest = tmp_path / "dest.bin"
    opens = []
    monkeypatch.setattr(download, "_copy_file", lambda *a: opens.append(a) or (_ for _ in ()).throw(
        download.SizeMismatchError("got 1 bytes")))
    with pytest.raises(download.SizeMismatchError):
        download.copy_with_retries(fs, str(src / "part0" / "f000.bin"), fs, str(dest), 5)
    assert len(opens) == 1


def test_ray_tasks_copy_the_files_and_retry_a_transient_error(tmp_path, ray_local):
    src = _source(tmp_path)
    _config, fs, run = _run(tmp_path, src, flaky="f017.bin", fails=2)
    summary = run()
    assert summary["downloaded_files"] == N_FILES and summary["skipped"] == 0
    _check_copied(tmp_path, src)
    tasks = fs.tasks()
    assert len(tasks) == 3 and not tasks & {"local", "driver"}  # one Ray task per batch of 16
    assert fs.opens("f017.bin") == 3  # failed twice, then copied
    assert all(fs.opens(f"f{i:03d}.bin") == 1 for i in range(N_FILES) if i != 17)


def test_ray_permanent_error_fails_the_step_naming_the_file(tmp_path, ray_local):
    src = _source(tmp_path)
    _config, fs, run = _run(tmp_path, src, flaky="f005.bin", fails=1000, error="PermissionError")
    with pytest.raises(Exception, match="f005.bin"):
        run()
    assert fs.opens("f005.bin") == 1  # not retried
    assert not (tmp_path / "out" / "part0" / "f005.bin").exists()


def test_rerun_after_a_partial_run_copies_only_the_missing_files(tmp_path, ray_local):
    src = _source(tmp_path)
    run = _run(tmp_path, src)[2]
    run()
    out = tmp_path / "out"
    missing = ["part0/f003.bin", "part2/f021.bin", "part3/f039.bin"]
    for rel in missing:
        (out / rel).unlink()
    (out / "part2" / "f021.bin.partial").write_bytes(b"half")  # a crash mid-copy
    _config, fs, rerun = _run(tmp_path, src)
    summary = rerun()
    assert summary["downloaded_files"] == 3 and summary["skipped"] == N_FILES - 3
    _check_copied(tmp_path, src)
    opened = {entry.rsplit(".", 1)[0] for entry in os.listdir(fs.log_dir)}
    assert opened == {os.path.basename(rel) for rel in missing}
    assert json.loads((out / "summary.json").read_text())["downloaded_files"] == 3
