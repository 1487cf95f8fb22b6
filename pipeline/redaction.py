"""Keeping credentials out of everything the executor writes: status, info, records, pages.

Three nets, applied to every byte the executor writes under a prefix:

1. By value: the value of every environment variable whose name looks secret (`HF_TOKEN`,
   `HUGGING_FACE_HUB_TOKEN`, `WANDB_API_KEY`, `AWS_SECRET_ACCESS_KEY`, `GOOGLE_APPLICATION_CREDENTIALS`,
   `*_PASSWORD`, ...) is replaced wherever it occurs, also in its JSON- and HTML-escaped forms.
2. By shape: well-known token formats (Hugging Face `hf_...`, GitHub, AWS key ids, Google API
   keys, OpenAI/Anthropic `sk-...`, Slack, PEM private keys), passwords in URLs
   (`scheme://user:PASSWORD@host`), `Bearer ...` and `token=...`-style pairs, even when no
   environment variable holds them (a token pasted into a config string or an exception).
3. By key: in structured data (configs, records), a string under a secret-looking key
   (`hf_token`, `api_key`, `password`, `wandb.api_key`, ...) is replaced whole.

W&B API keys are bare 40-digit hex strings, indistinguishable from git commits; they are caught by
value (net 1) and by key (net 3) only.
"""

from __future__ import annotations

import functools
import html
import json
import os
import re
from typing import Any, Iterable, Optional

REDACTED = "<redacted>"

# A name is secret-looking when its last word (or last two words) says so: HF_TOKEN, hf_token,
# WANDB_API_KEY, AWS_SECRET_ACCESS_KEY, GOOGLE_APPLICATION_CREDENTIALS; not TOKEN_BUDGET, pad_token.
_SECRET_WORDS = {"TOKEN", "SECRET", "PASSWORD", "PASSWD", "PASSPHRASE", "CREDENTIAL", "CREDENTIALS", "APIKEY",
                 "PRIVATEKEY", "COOKIE", "SESSIONID"}
_SECRET_PAIRS = {("API", "KEY"), ("ACCESS", "KEY"), ("PRIVATE", "KEY"), ("SECRET", "KEY"), ("AUTH", "KEY"),
                 ("ACCOUNT", "KEY"), ("SIGNING", "KEY"), ("ENCRYPTION", "KEY"), ("MASTER", "KEY")}
_TOKENIZER_WORDS = {"PAD", "EOS", "BOS", "UNK", "SEP", "CLS", "MASK", "SPECIAL", "START", "END", "STOP", "AUDIO",
                    "TEXT", "MAX", "MIN", "NUM", "FIRST", "LAST", "EXTRA", "NEW", "ADDED", "EOT", "IMAGE"}
_MIN_VALUE = 6  # shorter values ("1", "true") would redact innocent text
# Only strings this short are remembered, so the caches stay bounded (65,536 strings of at most
# 1,024 characters) however long a config string is: a longer one is redacted afresh, in linear time.
_CACHED_CHARS = 1024

# Every pattern runs in time linear in the text: no repeat gives back characters that a later part
# could not use anyway (possessive `*+`, `++`), and where it can a pattern starts with a literal, so
# the search skips to it (a "not preceded by" check comes after the literal). Each still matches
# exactly what it did before; benchmarks/redaction_bench.py measures the hostile shapes, and
# tests/test_hostile_redaction.py checks that time grows linearly.

# user:password@ in URLs (https://user:pw@host, postgres://u:pw@h, gs://... never has one). The
# scheme is tried only where a run of scheme characters starts, so a long run of URL-like characters
# without `://` costs its length once, not its length squared.
_URL_PASSWORD = re.compile(r"(?<![A-Za-z0-9+.\-])([0-9+.\-]*+[A-Za-z][A-Za-z0-9+.\-]*+://[^/\s:@'\"]++:)[^/\s@'\"]++@")
_PATTERNS: list[tuple[re.Pattern, str]] = [
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(-----END [A-Z ]*PRIVATE KEY-----|$)", re.S),
     "<private key redacted>"),
    (re.compile(r"hf_(?<![A-Za-z0-9_]hf_)[A-Za-z0-9]{30,}"), "<hf token redacted>"),
    (re.compile(r"gh[pousr]_(?<![A-Za-z0-9_]gh[pousr]_)[A-Za-z0-9]{30,}"), "<github token redacted>"),
    (re.compile(r"github_pat_(?<![A-Za-z0-9_]github_pat_)[A-Za-z0-9_]{40,}"), "<github token redacted>"),
    (re.compile(r"A(?<![A-Za-z0-9]A)[KS]IA[0-9A-Z]{16}(?![0-9A-Z])"), "<aws key id redacted>"),
    (re.compile(r"AIza(?<![A-Za-z0-9_]AIza)[0-9A-Za-z_\-]{35}"), "<google api key redacted>"),
    (re.compile(r"sk-(?<![A-Za-z0-9_]sk-)[A-Za-z0-9_\-]{20,}"), "<api key redacted>"),
    (re.compile(r"xox[abposr]-(?<![A-Za-z0-9_]xox[abposr]-)[A-Za-z0-9\-]{10,}"), "<slack token redacted>"),
    (re.compile(r"(bearer(?<!\wbearer)\s++)[A-Za-z0-9._~+/\-]{8,}+=*", re.I), r"\1" + REDACTED),
    (_URL_PASSWORD, r"\1" + REDACTED + "@"),
    # key=value / key: value pairs with a secret-looking key (query strings, headers, dumps)
    (re.compile(r"((?:token|secret|password|passwd|api[_\-]?key|access[_\-]?key|private[_\-]?key|"
                r"credentials?)[\"']?+\s*+[=:]\s*+[\"']?+)(?!<)([^\s&\"',;)}\]]{6,}+)", re.I),
     r"\1" + REDACTED),
]
# The case-insensitive patterns are slow to search (no literal to skip to), so on ASCII text (where
# lower() keeps every position) their case-sensitive twins search text.lower() instead; the few
# non-ASCII letters that match an ASCII one case-insensitively (Kelvin K, ſ, İ, ı) take the slow path.
_LOWERCASE_TWIN = {pattern: re.compile(pattern.pattern, pattern.flags & ~re.I)
                   for pattern, _ in _PATTERNS if pattern.flags & re.I}


def is_secret_name(name: str) -> bool:
    """Whether an environment variable or config key names a credential (HF_TOKEN, wandb.api_key)."""
    return _secret_name(name) if len(name) <= _CACHED_CHARS else _secret_name.__wrapped__(name)


@functools.lru_cache(maxsize=4096)
def _secret_name(name: str) -> bool:
    last = re.split(r"[./]", name)[-1]
    words = [w for w in re.split(r"[^A-Za-z0-9]+", re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", last).upper()) if w]
    if not words:
        return False
    if words[-1] == "TOKEN":
        return len(words) == 1 or words[-2] not in _TOKENIZER_WORDS
    return words[-1] in _SECRET_WORDS or tuple(words[-2:]) in _SECRET_PAIRS


def secret_env_values(environ: Optional[dict[str, str]] = None) -> tuple[tuple[str, str], ...]:
    """(name, value) of the secret-looking environment variables, longest value first."""
    env = os.environ if environ is None else environ
    found = [(k, v) for k, v in env.items() if v and len(v) >= _MIN_VALUE and is_secret_name(k)]
    return tuple(sorted(found, key=lambda kv: -len(kv[1])))


def _variants(value: str) -> Iterable[str]:
    yield value
    yield json.dumps(value)[1:-1]  # as it appears inside a JSON string
    yield json.dumps(value, ensure_ascii=False)[1:-1]
    yield html.escape(value)
    yield html.escape(value, quote=False)
    yield repr(value)[1:-1]  # as in a repr() inside an exception message


def redact(text: str) -> str:
    """`text` with secret environment values and well-known credential shapes replaced."""
    return _redact(text, secret_env_values()) if text else text


def _redact(text: str, secrets: tuple[tuple[str, str], ...]) -> str:
    for name, value in secrets:
        for form in set(_variants(value)):
            if form and form in text:
                text = text.replace(form, f"<{name} redacted>")
    for pattern, replacement in _PATTERNS:
        text = _sub(pattern, replacement, text)
    return text


def _sub(pattern: re.Pattern, replacement: str, text: str) -> str:
    """`pattern.sub(replacement, text)`, through the lowercase twin of a case-insensitive pattern on ASCII."""
    if pattern is _URL_PASSWORD and "://" not in text:
        return text  # `in` is much faster than the search, which cannot skip to a literal
    twin = _LOWERCASE_TWIN.get(pattern)
    if twin is None or not text.isascii():
        return pattern.sub(replacement, text)
    pieces, last = [], 0
    for found in twin.finditer(text.lower()):
        match = pattern.match(text, found.start())  # the same match, with the original letters
        pieces += [text[last:match.start()], match.expand(replacement)]
        last = match.end()
    return "".join(pieces) + text[last:] if pieces else text


def _redact_cached(text: str, secrets: tuple[tuple[str, str], ...]) -> str:
    return _redact_short(text, secrets) if len(text) <= _CACHED_CHARS else _redact(text, secrets)


@functools.lru_cache(maxsize=65536)
def _redact_short(text: str, secrets: tuple[tuple[str, str], ...]) -> str:
    return _redact(text, secrets)  # records are rewritten often with mostly the same strings


def redact_data(value: Any, key: str = "", _secrets: Optional[tuple] = None) -> Any:
    """A copy of JSON-like data with every string redacted, and replaced whole under a secret-looking key.

    Serializing the result (JSON, or HTML with escaping) cannot reintroduce a secret, so a record
    that is rewritten after every step pays only for its new strings.
    """
    secrets = secret_env_values() if _secrets is None else _secrets
    if isinstance(value, dict):
        return {(_redact_cached(k, secrets) if isinstance(k, str) else k): redact_data(v, str(k), secrets)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_data(v, key, secrets) for v in value]
    if isinstance(value, str):
        return REDACTED if key and value and is_secret_name(key) else _redact_cached(value, secrets)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return _redact_cached(str(value), secrets)  # what json.dumps(default=str) would have written


def redact_argv(argv: list[str]) -> list[str]:
    """A command line with the values of secret-looking options replaced (`--hf-token X`, `--api_key=X`)."""
    out: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            out.append(REDACTED)
            hide_next = False
            continue
        if arg.startswith("-"):
            name, eq, _ = arg.lstrip("-").partition("=")
            if is_secret_name(name.replace("-", "_")):
                if eq:
                    out.append(arg[: arg.index("=") + 1] + REDACTED)
                else:
                    out.append(arg)
                    hide_next = True
                continue
        out.append(redact(arg))
    return out
