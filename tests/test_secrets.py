"""Credentials never reach a byte under the prefix: status, info, records, HTML and Markdown logs."""

from __future__ import annotations

import html
import json
import os
import sys

import pytest

from pipeline import Executor, ExecutorError
from pipeline import storage
from pipeline.redaction import is_secret_name, redact, redact_argv, redact_data
from tests import fault_dag
from tests.fault_harness import REPO, status_of, step_dir

HF = "hf_" + "AbCdEfGhIjKlMnOpQrStUvWxYz01234567"
HUB = "hf_" + "ZyXwVuTsRqPoNmLkJiHgFeDcBa98765432"
WANDB = "0123456789abcdef0123456789abcdef01234567"  # bare hex: only the env value gives it away
AWS_ID = "AKIAIOSFODNN7EXAMPLE"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
PASSWORD = 'p&ss"w<0>rd\\x'  # changes under JSON and HTML escaping
PEM = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n"
URL_PASSWORD = "urlPassw0rd42"
QUERY_TOKEN = "qtok_9f8e7d6c5b4a"
LOOSE_HF = "hf_" + "LooseTokenNotInTheEnvironment0123"  # only in a config string and an exception


@pytest.mark.parametrize("name", ["HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "WANDB_API_KEY", "AWS_SECRET_ACCESS_KEY",
                                  "AWS_SESSION_TOKEN", "GOOGLE_APPLICATION_CREDENTIALS", "DB_PASSWORD",
                                  "hf_token", "wandb.api_key", "apiKey", "auth.client_secret"])
def test_secret_names(name):
    assert is_secret_name(name)


@pytest.mark.parametrize("name", ["TOKENIZERS_PARALLELISM", "TOKEN_BUDGET", "pad_token", "eos_token", "tokenizer",
                                  "max_document_tokens", "tokens", "key", "sort_key", "PATH", "GPG_KEY"])
def test_names_that_are_not_secrets(name):
    assert not is_secret_name(name)


def test_redact_by_value_shape_and_key(monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", WANDB)
    monkeypatch.setenv("DB_PASSWORD", PASSWORD)
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false-ish-value")
    text = (f"key {WANDB} json {json.dumps(PASSWORD)} html {html.escape(PASSWORD)} repr {PASSWORD!r} "
            f"url https://me:{URL_PASSWORD}@example.com/x?token={QUERY_TOKEN}&n=1 {LOOSE_HF} {AWS_ID} "
            f"Authorization: Bearer abc.DEF-123_xyz {PEM} commit 4f2a9c0d1e2b3a4f5e6d7c8b9a0f1e2d3c4b5a69 "
            "false-ish-value pad_token: <|pad|>")
    out = redact(text)
    for secret in (WANDB, URL_PASSWORD, QUERY_TOKEN, LOOSE_HF, AWS_ID, "abc.DEF-123_xyz", "MIIEvQIBADANBgkqhkiG9w0"):
        assert secret not in out
    for form in (PASSWORD, json.dumps(PASSWORD)[1:-1], html.escape(PASSWORD), repr(PASSWORD)[1:-1]):
        assert form not in out
    assert "<WANDB_API_KEY redacted>" in out and "<DB_PASSWORD redacted>" in out
    # what is not a secret survives: a git commit, a non-secret variable, tokenizer settings
    assert "4f2a9c0d1e2b3a4f5e6d7c8b9a0f1e2d3c4b5a69" in out and "false-ish-value" in out and "<|pad|>" in out
    assert redact_data({"hf_token": "x" * 8, "nested": [{"api_key": "y" * 8}], "pad_token": "<pad>", "n": 3}) == \
        {"hf_token": "<redacted>", "nested": [{"api_key": "<redacted>"}], "pad_token": "<pad>", "n": 3}
    assert redact_argv(["run.py", "--hf-token", HF, "--wandb_api_key=" + WANDB, "--prefix", "/p"]) == \
        ["run.py", "--hf-token", "<redacted>", "--wandb_api_key=<redacted>", "--prefix", "/p"]


@pytest.fixture
def secret_env(tmp_path, monkeypatch):
    creds = tmp_path / "service-account-creds.json"
    creds.write_text(json.dumps({"type": "service_account", "private_key": PEM}))
    env = {"HF_TOKEN": HF, "HUGGING_FACE_HUB_TOKEN": HUB, "WANDB_API_KEY": WANDB, "AWS_ACCESS_KEY_ID": AWS_ID,
           "AWS_SECRET_ACCESS_KEY": AWS_SECRET, "GOOGLE_APPLICATION_CREDENTIALS": str(creds), "DB_PASSWORD": PASSWORD}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("SODA_TEST_LEAK", ",".join(env))  # gen/b's exception prints all of them
    return env


def forms(secret: str) -> set[str]:
    """The ways a secret can appear in a file: raw, JSON-escaped, HTML-escaped, repr-escaped."""
    return {secret, json.dumps(secret)[1:-1], html.escape(secret), html.escape(secret, quote=False),
            repr(secret)[1:-1]}


def test_secrets_in_env_config_argv_and_exceptions_never_reach_the_prefix(tmp_path, secret_env, monkeypatch):
    import ray

    prefix, probe = str(tmp_path / "prefix"), str(tmp_path / "probe")
    marker = tmp_path / f"marker-{HF}"  # the failure message names this file, token and all
    marker.write_text("")
    endpoint = f"https://user:{URL_PASSWORD}@hub.example.com/api?token={QUERY_TOKEN} {LOOSE_HF}"
    monkeypatch.setattr(sys, "argv", ["fault_dag.py", "--prefix", prefix, "--hf-token", HF])
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False,
             runtime_env={"env_vars": {"PYTHONPATH": REPO}})
    try:
        with pytest.raises(ExecutorError) as info:
            Executor(prefix, experiment_name="fault_dag").run(
                fault_dag.build(probe, fail_marker=str(marker), endpoint=endpoint))
    finally:
        ray.shutdown()

    secrets = list(secret_env.values()) + [URL_PASSWORD, QUERY_TOKEN, LOOSE_HF]
    message = str(info.value) + "".join(info.value.failed.values())
    files = {}
    for dirpath, _, filenames in os.walk(prefix):
        for name in filenames:
            with open(os.path.join(dirpath, name), "rb") as f:
                files[os.path.relpath(os.path.join(dirpath, name), prefix)] = f.read().decode("utf-8", "replace")
    record = [k for k in files if k.startswith("experiments/fault_dag-")]
    assert {os.path.splitext(k)[1] for k in record} == {".json", ".html", ".md"}
    for secret in secrets:
        for form in forms(secret):
            assert form not in message, secret
            for path, text in files.items():
                assert form not in text, (secret, path)

    # Honest: the secrets were there to leak, and the steps still ran with the real values.
    status = storage.read_status(step_dir(prefix, "gen/b"))
    assert status_of(prefix, "gen/b") == storage.FAILED
    for name in secret_env:
        shown = "<aws key id redacted>" if name == "AWS_ACCESS_KEY_ID" else f"<{name} redacted>"  # an ID, by shape
        assert shown in status.traceback, name
    info_a = json.loads(files[os.path.relpath(os.path.join(step_dir(prefix, "gen/a"), ".executor_info"), prefix)])
    assert info_a["config"]["endpoint"] == \
        "https://user:<redacted>@hub.example.com/api?token=<redacted> <hf token redacted>"
    assert status_of(prefix, "gen/a") == storage.SUCCESS
    run = json.loads(files[[k for k in record if k.endswith(".json")][0]])["runs"][-1]
    assert run["command"][-2:] == ["--hf-token", "<redacted>"]
