"""The dataset lock (steps.dataset_lock): presets read it, `soda lock-datasets` writes it. The
Hub is a fake HfApi; nothing touches the network."""

import json
import os
import time

import pytest

from steps import dataset_lock
from steps.dataset_lock import LOCK_ENV, LockError, HubDataset, lock_datasets, read_lock, write_lock

A = "a" * 40
B = "b" * 40
C = "c" * 40
SALMON_PIN = "18966bb30c2fe344ad09e1200805fb237bde66c7"


def _entry(repo, revision, resolved_from="main"):
    return {"repo": repo, "revision": revision, "resolved_from": resolved_from, "resolved_at": None}


@pytest.fixture
def lock_file(tmp_path, monkeypatch):
    path = str(tmp_path / "datasets.lock")
    monkeypatch.setenv(LOCK_ENV, path)
    return path


# ---- reading: lock > pin > placeholder ---------------------------------------------------------


def test_preset_revision_is_lock_then_pin_then_placeholder(lock_file):
    from eval.datasets import hellaswag_raw
    from steps import download_presets as presets
    from steps.s2st.prepare import common_voice_download

    assert not os.path.exists(lock_file)  # a missing lock is an empty one
    assert presets.salmon().revision.value == SALMON_PIN
    assert presets.sblimp().revision.value == "UNPINNED-speed-sBLIMP"
    assert hellaswag_raw().revision.value.startswith("UNPINNED-")
    write_lock(lock_file, {"slprl/SALMon": _entry("slprl/SALMon", A), "speed/sBLIMP": _entry("speed/sBLIMP", B),
                           "Rowan/hellaswag": _entry("Rowan/hellaswag", C),
                           "mozilla-foundation/common_voice_4_0": _entry("mozilla-foundation/common_voice_4_0", A)})
    assert presets.salmon().revision.value == A  # the lock wins over the code's pin
    assert presets.sblimp().revision.value == B
    assert presets.swuggy().revision.value == "UNPINNED-speed-sWUGGY"  # not in the lock
    assert hellaswag_raw().revision.value == C
    assert common_voice_download(("fr",)).revision.value == A
    assert presets.salmon(revision=C).revision.value == C  # an explicit revision wins over both


def test_the_lock_moves_the_step_hash_the_pin_does_not(lock_file, tmp_path):
    from experiments.defaults import download
    from pipeline.plan import build_plan
    from steps import download_presets as presets

    def name():
        step = download("salmon", presets.salmon())
        return build_plan([step], str(tmp_path / "p")).of(step).versioned_name

    at_pin = name()
    write_lock(lock_file, {"slprl/SALMon": _entry("slprl/SALMon", SALMON_PIN, SALMON_PIN)})
    assert name() == at_pin
    write_lock(lock_file, {"slprl/SALMon": _entry("slprl/SALMon", A)})
    assert name() != at_pin


def test_the_shipped_lock_holds_the_code_pins():
    from steps.download_presets import hub_datasets

    shipped = read_lock(dataset_lock.DEFAULT_LOCK)
    pins = {d.repo: d.pin for d in hub_datasets() if d.pinned}
    assert {repo: e["revision"] for repo, e in shipped.items()} == pins
    assert "potsawee/yodas2-mm-pretrain" in pins and "potsawee/emilia-mm-pretrain" in pins
    text = open(dataset_lock.DEFAULT_LOCK).read()
    assert text == dataset_lock.render_lock(shipped)  # sorted keys, as written


@pytest.mark.parametrize("content,match", [
    ("{not json", "is not valid JSON"),
    ('{"format": 1}', "expected an object with a 'datasets' object"),
    ('{"format": 1, "datasets": {"a/b": {"repo": "a/b", "revision": "main"}}}', "expected a 40-hex commit"),
    ('{"format": 1, "datasets": {"a/b": {"repo": "c/d", "revision": "%s"}}}' % A, "names repo 'c/d'"),
    ('{"format": 9, "datasets": {}}', "format 9"),
])
def test_a_malformed_lock_is_an_error_naming_the_file(lock_file, content, match):
    from steps import download_presets as presets

    with open(lock_file, "w") as f:
        f.write(content)
    with pytest.raises(ValueError, match=match) as err:
        presets.salmon()
    assert lock_file in str(err.value) and "soda lock-datasets" in str(err.value)


def test_reading_is_cached_and_sees_a_rewrite(lock_file):
    write_lock(lock_file, {"a/b": _entry("a/b", A)})
    start = time.perf_counter()
    for _ in range(2000):
        assert dataset_lock.locked_revision("a/b", "UNPINNED-x") == A
    assert time.perf_counter() - start < 0.5
    with open(lock_file, "w") as f:  # a hand edit (no cache_clear): seen through the file's stamp
        json.dump({"format": 1, "datasets": {"a/b": _entry("a/b", B)}}, f)
    os.utime(lock_file, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert dataset_lock.locked_revision("a/b", "UNPINNED-x") == B


def test_the_placeholder_error_names_the_command_and_the_lock(lock_file):
    from steps.download import check_revision
    from steps.download_presets import swuggy

    config = swuggy()
    with pytest.raises(ValueError) as err:
        check_revision(config.__class__(**{**config.__dict__, "revision": config.revision.value}))
    msg = str(err.value)
    assert "`soda lock-datasets`" in msg and lock_file in msg and "speed/sWUGGY" in msg


# ---- soda lock-datasets against a fake Hub -------------------------------------------------------


class FakeInfo:
    def __init__(self, sha):
        self.sha = sha


class FakeHub:
    """dataset_info(repo, revision): a commit answers itself, a branch its head in `heads`."""

    def __init__(self, heads, fail=()):
        self.heads, self.fail, self.asked = heads, set(fail), []

    def dataset_info(self, repo, revision=None):
        self.asked.append((repo, revision))
        if repo in self.fail:
            raise ConnectionError(f"cannot reach huggingface.co for {repo}")
        if dataset_lock.is_commit(revision):
            return FakeInfo(revision)
        return FakeInfo(self.heads[(repo, revision)])


DATASETS = (HubDataset("slprl/SALMon", SALMON_PIN), HubDataset("speed/sBLIMP", "UNPINNED-speed-sBLIMP"),
            HubDataset("Rowan/hellaswag", "UNPINNED-hs", branch="refs/convert/parquet"))
HEADS = {("speed/sBLIMP", "main"): A, ("Rowan/hellaswag", "refs/convert/parquet"): B, ("slprl/SALMon", "main"): C}


def test_lock_datasets_verifies_pins_and_resolves_placeholders(tmp_path):
    path = str(tmp_path / "l.lock")
    hub = FakeHub(HEADS)
    entries = lock_datasets(DATASETS, path, api=hub)
    assert sorted(hub.asked) == sorted([("slprl/SALMon", SALMON_PIN), ("speed/sBLIMP", "main"),
                                        ("Rowan/hellaswag", "refs/convert/parquet")])
    assert {r: e["revision"] for r, e in entries.items()} == {"slprl/SALMon": SALMON_PIN, "speed/sBLIMP": A,
                                                              "Rowan/hellaswag": B}
    assert entries["speed/sBLIMP"]["resolved_from"] == "main" and entries["speed/sBLIMP"]["resolved_at"]
    on_disk = json.loads(open(path).read())
    assert list(on_disk["datasets"]) == sorted(on_disk["datasets"]) and read_lock(path) == entries

    # a rerun keeps what the lock holds (a placeholder does not move to a newer main) ...
    moved = FakeHub({**HEADS, ("speed/sBLIMP", "main"): C})
    assert lock_datasets(DATASETS, path, api=moved)["speed/sBLIMP"]["revision"] == A
    assert ("speed/sBLIMP", A) in moved.asked
    # ... unless --update, which resolves every branch again, pinned repos included
    updated = lock_datasets(DATASETS, path, api=moved, update=True)
    assert updated["speed/sBLIMP"]["revision"] == C and updated["slprl/SALMon"]["revision"] == C


def test_lock_datasets_only_touches_the_named_repos(tmp_path):
    path = str(tmp_path / "l.lock")
    write_lock(path, {"slprl/SALMon": _entry("slprl/SALMon", SALMON_PIN), "other/repo": _entry("other/repo", C)})
    hub = FakeHub(HEADS)
    entries = lock_datasets(DATASETS, path, api=hub, only=["speed/sBLIMP"])
    assert hub.asked == [("speed/sBLIMP", "main")]
    assert set(entries) == {"slprl/SALMon", "other/repo", "speed/sBLIMP"}
    with pytest.raises(LockError, match=r"unknown dataset repo\(s\) \['nope/x'\]"):
        lock_datasets(DATASETS, path, api=hub, only=["nope/x"])


def test_a_pin_the_hub_does_not_know_is_an_error(tmp_path):
    class Moved(FakeHub):
        def dataset_info(self, repo, revision=None):
            return FakeInfo(C if revision == SALMON_PIN else super().dataset_info(repo, revision).sha)

    with pytest.raises(LockError, match=f"slprl/SALMon: pinned commit {SALMON_PIN} resolves to {C}"):
        lock_datasets(DATASETS, str(tmp_path / "l.lock"), api=Moved(HEADS))


def test_offline_lock_datasets_fails_per_repo_and_writes_nothing(tmp_path):
    path = str(tmp_path / "l.lock")
    write_lock(path, {"slprl/SALMon": _entry("slprl/SALMon", SALMON_PIN)})
    before = open(path).read()
    hub = FakeHub(HEADS, fail={"speed/sBLIMP", "Rowan/hellaswag"})
    with pytest.raises(LockError) as err:
        lock_datasets(DATASETS, path, api=hub)
    msg = str(err.value)
    assert "could not lock 2 of 3" in msg and "was not written" in msg
    assert "speed/sBLIMP: cannot resolve 'main'" in msg
    assert "Rowan/hellaswag: cannot resolve 'refs/convert/parquet'" in msg
    assert open(path).read() == before


def test_cli_resolves_every_preset_repo_with_hfapi(tmp_path, monkeypatch, capsys):
    import huggingface_hub

    from infra.cli import main
    from steps.download_presets import hub_datasets

    repos = {d.repo for d in hub_datasets()}
    assert {"potsawee/yodas2-mm-pretrain", "potsawee/emilia-mm-pretrain", "Rowan/hellaswag",
            "mozilla-foundation/common_voice_4_0", "parler-tts/mls_eng", "speed/sBLIMP"} <= repos
    heads = {(d.repo, d.branch): A for d in hub_datasets()}
    monkeypatch.setattr(huggingface_hub, "HfApi", lambda: FakeHub(heads))
    path = tmp_path / "cli.lock"
    assert main(["lock-datasets", "--lock", str(path)]) == 0
    assert set(read_lock(str(path))) == repos
    assert f"wrote {len(repos)} dataset revisions to {path}" in capsys.readouterr().out

    monkeypatch.setattr(huggingface_hub, "HfApi", lambda: FakeHub(heads, fail=repos))
    offline = tmp_path / "offline.lock"
    assert main(["lock-datasets", "--lock", str(offline)]) == 1
    err = capsys.readouterr().err
    assert f"could not lock {len(repos)} of {len(repos)}" in err and "speed/sWUGGY: cannot resolve" in err
    assert not offline.exists()
