"""Bulk steps fan out per file: `run_shards`' transient retries and failure handling, and the
pre-encoded conversion as one Ray task per file (retried, resumed, byte-identical to the
sequential conversion), locally and on the GCS emulator.

Inputs are read through `FlakyFS` (protocol flaky://, a LocalFileSystem): every open of an input
file `{root}/src/...` is logged under `{root}/opens` with the process id and Ray task id that
opened it, and `{root}/faults/{parent}-{name}.json` ({"fails": n, "error": "ConnectionError"})
makes the first n opens of that file fail. Ray workers learn the protocol from
`worker_process_setup_hook`, so the logs are shared by every process.

The tests without Ray come first: the module's Ray stays up from the first test that asks for it.
"""

import dataclasses
import io
import json
import os
import threading
import time
import uuid

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fsspec.implementations.local import LocalFileSystem

import steps.pre_encoded as pre_encoded
from experiments.defaults import pre_encoded_documents
from infra.gcs_emulator import _binary
from pipeline.identity import compute_identity
from pipeline.step import ExecutorStep
from steps.pre_encoded import PreEncodedConfig, convert_pre_encoded, convert_table, drop_invalid_audio
from steps.table_readers import iter_record_batches
from steps.sharding import RetriesExhausted, ShardsFailed, run_shards, with_retries
from tokenizer.audio import codes_to_chars

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUCKET = "bulk-fanout"
ERRORS = {"OSError": OSError, "ConnectionError": ConnectionError, "PermissionError": PermissionError}


class FlakyFS(LocalFileSystem):
    protocol = "flaky"
    cachable = False

    @classmethod
    def _strip_protocol(cls, path):
        path = str(path)
        return super()._strip_protocol(path[len("flaky://"):] if path.startswith("flaky://") else path)

    def unstrip_protocol(self, name):
        return f"flaky://{self._strip_protocol(name)}"

    def _open(self, path, mode="rb", **kwargs):
        path = self._strip_protocol(path)
        if "r" in mode and "/src/" in path:
            root, rel = path.split("/src/", 1)
            key = rel.replace("/", "-")
            with open(os.path.join(root, "opens", f"{key}.{uuid.uuid4().hex}"), "w") as f:
                f.write(f"{os.getpid()} {_task_id()}")
            fault = os.path.join(root, "faults", f"{key}.json")
            if os.path.exists(fault):
                spec = json.loads(open(fault).read())
                if opens(root, key) <= spec["fails"]:
                    raise ERRORS[spec["error"]](f"injected {spec['error']} reading {path}")
        return super()._open(path, mode=mode, **kwargs)


def register_flaky() -> None:
    fsspec.register_implementation("flaky", FlakyFS, clobber=True)


register_flaky()


def _task_id() -> str:
    import ray

    return (ray.get_runtime_context().get_task_id() or "driver") if ray.is_initialized() else "local"


def opens(root, key: str) -> int:
    return sum(1 for e in os.listdir(os.path.join(root, "opens")) if e.rsplit(".", 1)[0] == key)


def openers(root) -> dict[str, list[tuple[int, str]]]:
    """{file key: [(pid, task id) of each open]}."""
    out: dict[str, list[tuple[int, str]]] = {}
    for entry in os.listdir(os.path.join(root, "opens")):
        pid, task = open(os.path.join(root, "opens", entry)).read().split()
        out.setdefault(entry.rsplit(".", 1)[0], []).append((int(pid), task))
    return out


def fault(root, key: str, fails: int, error: str) -> None:
    (root / "faults" / f"{key}.json").write_text(json.dumps({"fails": fails, "error": error}))


# ---- released-style input and the sequential reference --------------------------------------


def release_table(seed: int, recordings: int = 6):
    rng = np.random.default_rng(seed)
    ids, texts = [], []
    for r in range(recordings):
        audio = codes_to_chars(rng.integers(0, 2048, size=(8, int(rng.integers(3, 12)))))
        words = " ".join(f"w{int(x)}" for x in rng.integers(0, 1000, size=int(rng.integers(2, 9))))
        t1 = (f"<|begin_of_text|><|text_start|> {words} <|text_end|><|audio_start|>{audio}<|audio_end|>"
              "<|end_of_text|>")
        t2 = (f"<|begin_of_text|><|audio_start|>{audio}<|audio_end|><|text_start|> {words} <|text_end|>"
              "<|end_of_text|>")
        ids += [f"rec{seed}-{r}_type1", f"rec{seed}-{r}_type2"]
        texts += [t1, t2]
    texts[-1] = texts[-1].replace("<|audio_end|>", "")  # one unusable document per file, dropped
    return pa.table({"id": ids, "split": [f"en{seed:03d}/00000000"] * len(ids), "text": texts})


def make_release(root, n: int) -> list[str]:
    """`n` files under root/src/en00k/0000000k.parquet; returns their relative paths."""
    for d in ("opens", "faults"):
        (root / d).mkdir(parents=True, exist_ok=True)
    rels = []
    for k in range(n):
        rel = f"en{k:03d}/{k:08d}.parquet"
        (root / "src" / rel).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(release_table(k), root / "src" / rel)
        rels.append(rel)
    return rels


def key(rel: str) -> str:
    return rel.replace("/", "-")


def sequential_reference(table, source: str) -> tuple[bytes, dict]:
    """The conversion of one file as the step did it in one process before the fan-out (read,
    convert, drop unusable audio, write zstd parquet with row groups of 1024): (bytes, record)."""
    out = convert_table(table, True, source=source, drop_end_of_text=False)
    out, invalid = drop_invalid_audio(out, source=source)
    buf = io.BytesIO()
    pq.write_table(out, buf, row_group_size=1024, compression="zstd")
    formats = {}
    for fmt in out.column("format").to_pylist():
        formats[fmt] = formats.get(fmt, 0) + 1
    return buf.getvalue(), {"documents": out.num_rows, "invalid_audio_documents": invalid,
                            "formats": dict(sorted(formats.items()))}


def check_matches_reference(out_fs, out_root: str, inputs: dict[str, str], summary: dict) -> None:
    """Every output's bytes and the summary equal the sequential reference ({name: input url})."""
    totals = {"documents": 0, "invalid": 0, "formats": {}}
    for name, url in inputs.items():
        with fsspec.open(url.replace("flaky://", "file://"), "rb") as f:  # not logged as an open
            expected, record = sequential_reference(pq.read_table(f), url)
        assert out_fs.cat_file(f"{out_root}/documents/{name}.parquet") == expected, name
        marker = json.loads(out_fs.cat_file(f"{out_root}/documents/{name}.done.json"))
        assert marker == dict(record, input=url)
        totals["documents"] += record["documents"]
        totals["invalid"] += record["invalid_audio_documents"]
        for fmt, n in record["formats"].items():
            totals["formats"][fmt] = totals["formats"].get(fmt, 0) + n
    expected_summary = {"files": len(inputs), "documents": totals["documents"],
                        "invalid_audio_documents_skipped": totals["invalid"],
                        "formats": dict(sorted(totals["formats"].items())),
                        "fix_whitespace": True, "drop_end_of_text": False}
    assert summary == expected_summary
    assert json.loads(out_fs.cat_file(f"{out_root}/summary.json")) == expected_summary
    assert totals["invalid"] == len(inputs)  # the dropped document was seen


# ---- retries and failures without Ray ------------------------------------------------------------


def test_with_retries_retries_transient_errors_only():
    calls = []

    def flaky(n, error):
        def call():
            calls.append(1)
            if len(calls) <= n:
                raise error("injected")
            return "ok"
        return call

    assert with_retries(flaky(2, ConnectionError), "reading x", attempts=3, delay_s=0) == "ok" and len(calls) == 3
    for permanent in (PermissionError, FileNotFoundError, ValueError, KeyError):
        calls.clear()
        with pytest.raises(permanent):
            with_retries(flaky(1, permanent), "reading x", attempts=5, delay_s=0)
        assert len(calls) == 1, permanent
    calls.clear()
    with pytest.raises(RetriesExhausted, match=r"reading x: failed 3 times, last with TimeoutError.*rerun") as info:
        with_retries(flaky(100, TimeoutError), "reading x", attempts=3, delay_s=0)
    assert len(calls) == 3 and isinstance(info.value.__cause__, TimeoutError)


def _job(log: list, i: int) -> int:
    log.append(i)
    if i in (2, 5, 6, 7, 8, 9, 10):
        raise PermissionError(f"job {i} may not")
    return i * 10


@pytest.mark.parametrize("threads", [1, 3])
def test_failed_jobs_let_the_others_finish_then_one_error_names_them(threads):
    log, seen = [], []
    with pytest.raises(PermissionError) as info:
        run_shards(_job, [(log, i) for i in range(12)], desc="demo", local_threads=threads,
                   job_names=[f"file{i}" for i in range(12)], on_result=lambda i, r: seen.append((i, r)))
    assert sorted(log) == list(range(12))  # every job ran
    assert sorted(seen) == [(i, i * 10) for i in (0, 1, 3, 4, 11)]
    message = str(info.value)
    assert "demo: 7 of 12 job(s) failed: file2, file5, file6, file7, file8 and 2 more" in message
    assert "file9" not in message and "PermissionError: job" in message
    assert info.value.failed_jobs == [f"file{i}" for i in (2, 5, 6, 7, 8, 9, 10)]
    assert isinstance(info.value.__cause__, PermissionError) and "may not" in str(info.value.__cause__)


def test_an_error_type_that_cannot_carry_the_message_becomes_shards_failed():
    class Odd(Exception):
        def __init__(self, a, b):
            super().__init__(a, b)

    def job():
        raise Odd(1, 2)

    with pytest.raises(ShardsFailed, match="1 of 1 job") as info:
        run_shards(job, [()], desc="odd")
    assert isinstance(info.value.__cause__, Odd)


def test_transient_retries_inside_threads():
    tries: dict[int, int] = {}
    lock = threading.Lock()

    def job(i):
        with lock:
            tries[i] = tries.get(i, 0) + 1
            n = tries[i]
        if i == 1 and n <= 2:
            raise ConnectionError("flaky store")
        return i

    assert run_shards(job, [(i,) for i in range(4)], desc="t", local_threads=2, attempts=3, retry_delay_s=0) \
        == [0, 1, 2, 3]
    assert tries == {0: 1, 1: 3, 2: 1, 3: 1}
    tries.clear()
    with pytest.raises(RetriesExhausted, match=r"t: 1 of 4 job\(s\) failed: job 1.*t: job 1: failed 2 times"):
        run_shards(job, [(i,) for i in range(4)], desc="t", local_threads=2, attempts=2, retry_delay_s=0)


def test_ctrl_c_cancels_the_threads_not_started():
    go = threading.Event()
    started = []

    def job(i):
        started.append(i)
        if i:
            go.wait(60)
        return i

    def interrupt(i, result):
        raise KeyboardInterrupt

    try:
        with pytest.raises(KeyboardInterrupt):
            run_shards(job, [(i,) for i in range(20)], desc="c", local_threads=2, on_result=interrupt)
        assert len(started) <= 3  # job 0, and the (at most two) jobs running when it was interrupted
    finally:
        go.set()


def test_network_errors_reading_documents_are_not_called_corrupt(tmp_path):
    """A connection error or timeout while reading stays itself (retried); a damaged file is still
    a ValueError."""
    make_release(tmp_path, 1)
    (tmp_path / "src" / "d.jsonl").write_text('{"text": "a"}\n')
    for name in ("en000-00000000.parquet", "d.jsonl"):
        fault(tmp_path, name, 1, "ConnectionError")
        url = f"flaky://{tmp_path}/src/{name.replace('-', '/')}"
        with pytest.raises(ConnectionError):
            list(iter_record_batches(url, ["text"], 10))
        assert [len(b) for b in iter_record_batches(url, ["text"], 100)] in ([12], [1])
    (tmp_path / "src" / "bad.jsonl.gz").write_bytes(b"\x1f\x8b\x08\x00junk")
    with pytest.raises(ValueError, match="truncated or corrupt"):
        list(iter_record_batches(str(tmp_path / "src" / "bad.jsonl.gz"), ["text"], 10))


def test_cpus_per_file_leaves_the_step_hash_alone():
    raw = ExecutorStep(name="raw/x", fn=print, config={})
    raw_id = compute_identity(raw, {})
    step = pre_encoded_documents("x", raw, "**/*.parquet")
    other = dataclasses.replace(step, config=dataclasses.replace(step.config, cpus_per_file=4.0))
    assert compute_identity(step, {id(raw): raw_id}).hash == compute_identity(other, {id(raw): raw_id}).hash
    assert "cpus_per_file" not in compute_identity(step, {id(raw): raw_id}).versioned


# ---- with Ray ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_local(request):
    """A local Ray (2 CPUs) whose workers know flaky:// and, where the emulator runs, gs://."""
    ray = pytest.importorskip("ray")
    env = {"PYTHONPATH": REPO}
    try:
        _binary()
        env.update(request.getfixturevalue("gcs").environment())
    except (ImportError, RuntimeError):
        pass  # the gs:// test skips itself
    ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False,
             runtime_env={"env_vars": env, "worker_process_setup_hook": "tests.test_bulk_fanout.register_flaky"})
    yield ray
    ray.shutdown()


def _convert(root, **config):
    return convert_pre_encoded(PreEncodedConfig(input_paths=(f"flaky://{root}/src/*/*.parquet",),
                                                output_path=str(root / "out"), **config))


def _inputs(root, rels) -> dict[str, str]:
    return {key(rel).removesuffix(".parquet"): f"flaky://{root}/src/{rel}" for rel in rels}


def test_each_file_is_its_own_ray_task_and_the_output_is_the_sequential_one(tmp_path, ray_local, monkeypatch):
    monkeypatch.setattr(pre_encoded, "RETRY_DELAY_S", 0.0)
    rels = make_release(tmp_path, 6)
    fault(tmp_path, key(rels[3]), 2, "ConnectionError")  # fails twice, then converts
    summary = _convert(tmp_path)
    check_matches_reference(LocalFileSystem(), str(tmp_path / "out"), _inputs(tmp_path, rels), summary)
    who = openers(tmp_path)
    assert sorted(who) == sorted(key(r) for r in rels)
    assert len(who[key(rels[3])]) == 3 and all(len(who[key(r)]) == 1 for r in rels if r != rels[3])
    tasks = {task for opened in who.values() for _, task in opened}
    assert len(tasks) == 6 and not tasks & {"local", "driver"}  # one Ray task per file (retries inside it)
    assert os.getpid() not in {pid for opened in who.values() for pid, _ in opened}
    assert len({task for _, task in who[key(rels[3])]}) == 1  # retried inside its task


def test_a_failing_file_lets_the_others_finish_and_a_rerun_does_only_it(tmp_path, ray_local, monkeypatch):
    monkeypatch.setattr(pre_encoded, "RETRY_DELAY_S", 0.0)
    rels = make_release(tmp_path, 5)
    bad, flaky = key(rels[1]), key(rels[4])
    fault(tmp_path, bad, 1000, "PermissionError")
    fault(tmp_path, flaky, 1000, "OSError")
    with pytest.raises(PermissionError) as info:
        _convert(tmp_path)
    message = str(info.value)
    assert "pre-encoded: 2 of 5 job(s) failed" in message
    assert f"src/{rels[1]}" in message and f"src/{rels[4]}" in message
    assert opens(tmp_path, bad) == 1  # a permanent error is not retried
    assert opens(tmp_path, flaky) == pre_encoded.FILE_ATTEMPTS  # a transient one, until the tries run out
    docs = tmp_path / "out" / "documents"
    done = sorted(p.name for p in docs.glob("*.done.json"))
    assert done == sorted(f"{key(r).removesuffix('.parquet')}.done.json" for r in (rels[0], rels[2], rels[3]))
    assert not list(docs.glob(".*tmp-*"))
    mtimes = {p.name: p.stat().st_mtime_ns for p in docs.iterdir()}

    for name in (bad, flaky):
        (tmp_path / "faults" / f"{name}.json").unlink()
    for entry in os.listdir(tmp_path / "opens"):
        os.remove(tmp_path / "opens" / entry)
    summary = _convert(tmp_path)
    assert sorted(openers(tmp_path)) == sorted([bad, flaky])  # only the two files not done were read
    assert all((docs / name).stat().st_mtime_ns == t for name, t in mtimes.items())
    check_matches_reference(LocalFileSystem(), str(tmp_path / "out"), _inputs(tmp_path, rels), summary)


def _slow_job(out_dir: str, i: int) -> int:
    if i == 0:
        raise ValueError("job 0 is bad")
    time.sleep(1.0)  # still running when job 0 fails
    with open(os.path.join(out_dir, f"{i}.done"), "w") as f:
        f.write("done")
    return i


def test_ray_failure_waits_for_the_other_tasks(tmp_path, ray_local):
    with pytest.raises(ValueError, match=r"1 of 4 job\(s\) failed: job 0.*job 0 is bad") as info:
        run_shards(_slow_job, [(str(tmp_path), i) for i in range(4)], desc="slow")
    assert sorted(os.listdir(tmp_path)) == ["1.done", "2.done", "3.done"]  # nothing left running
    assert "job 0 is bad" in str(info.value.__cause__)


def _blocked_job(go: str, i: int) -> int:
    deadline = time.time() + 300
    while i and not os.path.exists(go) and time.time() < deadline:
        time.sleep(0.05)
    return i


def test_ray_ctrl_c_cancels_the_pending_tasks(tmp_path, ray_local):
    """Interrupted while tasks block both CPUs: they are cancelled, so Ray runs a new task at once
    (without the cancel it would wait for the blocked ones, up to 300 s)."""
    go = str(tmp_path / "go")

    def interrupt(i, result):
        raise KeyboardInterrupt

    try:
        with pytest.raises(KeyboardInterrupt):
            run_shards(_blocked_job, [(go, i) for i in range(8)], desc="c", on_result=interrupt)
        ray = ray_local
        assert ray.get(ray.remote(lambda: "free").remote(), timeout=120) == "free"
    finally:
        open(go, "w").close()


def test_pre_encoded_on_gcs_with_ray_tasks(gcs, ray_local, monkeypatch):
    """The conversion reading and writing gs:// on the emulator through Ray tasks: the sequential
    output, and a rerun after losing one file redoes only that file."""
    fs = gcs.filesystem()
    rels = []
    for k in range(4):
        rel = f"src/en{k:03d}/{k:08d}.parquet"
        buf = io.BytesIO()
        pq.write_table(release_table(k), buf)
        fs.pipe(f"{BUCKET}/{rel}", buf.getvalue())
        rels.append(rel)
    out = f"gs://{BUCKET}/out"
    config = PreEncodedConfig(input_paths=(f"gs://{BUCKET}/src/*/*.parquet",), output_path=out)
    summary = convert_pre_encoded(config)
    inputs = {f"en{k:03d}-{k:08d}": f"gs://{BUCKET}/{rel}" for k, rel in enumerate(rels)}
    check_matches_reference(fs, f"{BUCKET}/out", inputs, summary)
    generations = {p: fs.info(p)["generation"] for p in fs.find(f"{BUCKET}/out/documents")}
    fs.rm([f"{BUCKET}/out/documents/en002-00000002.parquet", f"{BUCKET}/out/documents/en002-00000002.done.json"])
    fs.invalidate_cache()
    assert convert_pre_encoded(config) == summary
    fs.invalidate_cache()
    after = {p: fs.info(p)["generation"] for p in fs.find(f"{BUCKET}/out/documents")}
    changed = sorted(p.rsplit("/", 1)[-1] for p in after if after[p] != generations.get(p))
    assert changed == ["en002-00000002.done.json", "en002-00000002.parquet"]
    check_matches_reference(fs, f"{BUCKET}/out", inputs, summary)
