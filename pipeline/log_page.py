"""Render an experiment record as a self-contained HTML page and its Markdown twin."""

from __future__ import annotations

import html
import time
from typing import Any, Optional

from pipeline import fileio, storage
from pipeline.record_check import mark_died
from pipeline.record_store import experiments_dir, index_path, scan_records, step_order
from pipeline.step_log import LOG_FILE

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:2em}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{border-bottom:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f5f5f5}code{font-size:12px}
.success,.cached{color:#1a7f37}.failed,.died{color:#cf222e;font-weight:bold}
.blocked,.pending,.interrupted{color:#9a6700}
.error{color:#cf222e;font-family:monospace;font-size:12px;white-space:pre-wrap}
.meta td:first-child{font-weight:bold;width:9em}
.plumbing{background:#fff8c5;border:1px solid #d4a72c;padding:8px 12px;margin:1em 0;font-weight:bold}
pre{background:#f6f8fa;padding:8px;overflow:auto;font-size:12px;max-height:24em}
table.report td:not(:first-child),table.report th:not(:first-child){text-align:right}
figure.plot{display:inline-block;margin:1em 1em 0 0;max-width:100%}figure.plot svg{max-width:100%;height:auto}
figcaption{font-size:12px;color:#555}
"""


PLUMBING = ("PLUMBING RUN: {n} step(s) are marked as not meaningful or are built on one that is ({why}), so "
            "every number here exercises the pipeline and says nothing about the models.")


def plumbing_banner(data: dict[str, Any]) -> str:
    """The plumbing run's banner text, with the reasons the marked steps gave."""
    why = "; ".join(str(r) for r in data.get("plumbing_reasons") or []) or "marked plumbing"
    return PLUMBING.format(n=len(data["plumbing_steps"]), why=why)


def _when(t: Any) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"
    except (ValueError, OverflowError, OSError):  # a time no clock shows
        return "-"


def _duration(state: dict[str, Any]) -> str:
    start, end = state.get("start"), state.get("end")
    return f"{end - start:.1f}s" if start and end else "-"


def _rows(data: dict[str, Any], run: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name in step_order(data, run):
        step = (data.get("steps") or {}).get(name) or {}
        state = (run.get("steps") or {}).get(name) or {}
        rows.append({
            "name": name,
            "status": state.get("status", "?"),
            "action": state.get("action", ""),
            "duration": _duration(state),
            "path": step.get("output_path", "?"),
            "depends_on": step.get("depends_on", []),
            "changes": state.get("changes", []),
            "error": state.get("error"),
            "description": step.get("description") or "",
        })
    return rows


_NO_LOG = ("not selected", "blocked", "planned", "pending", "?")  # states of steps that did not start


def log_link(output_path: str, prefix: str) -> str:
    """Where the page links a step's log (pipeline.step_log): relative to the page's folder
    (`{prefix}/experiments/`) when the output is under the prefix, so the link survives a copy of the tree."""
    url = fileio.join(output_path, LOG_FILE)
    base = (prefix or "").rstrip("/")
    if base and url.startswith(base + "/"):
        return "../" + url[len(base) + 1:]
    return "file://" + url if url.startswith("/") else url


def _last_line(error: str) -> str:
    lines = error.strip().splitlines()
    return lines[-1] if lines else "error"


def _run_fields(data: dict[str, Any]) -> tuple[dict[str, Any], str, str, str]:
    """The latest run (or {}), "id (status)", its git commit and its command line, "?" where missing."""
    run = (data.get("runs") or [{}])[-1]
    git = run.get("git") or {}
    return (run, f"{run.get('run_id', '?')} ({run.get('status', '?')})",
            (git.get("commit") or "unknown") + (" (dirty)" if git.get("dirty") else ""),
            " ".join(run.get("command") or []) or "-")


def render_html(data: dict[str, Any]) -> str:
    run, run_line, commit, command = _run_fields(data)
    e = html.escape
    meta = [
        ("description", data.get("description") or "-"),
        ("run", run_line),
        ("started", _when(run.get("started"))),
        ("ended", _when(run.get("ended"))),
        ("git commit", commit),
        ("command", command),
        ("user@host", f"{run.get('user')}@{run.get('host')}"),
        ("prefix", data.get("prefix", "")),
    ]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{e(data.get('experiment', '?'))}: experiment log</title><style>{_CSS}</style></head><body>",
        f"<h1>{e(data.get('experiment', '?'))} <small>DAG {e(data.get('dag_hash', '?'))}</small></h1>",
        "<table class='meta'>" + "".join(f"<tr><td>{e(k)}</td><td>{e(str(v))}</td></tr>" for k, v in meta) + "</table>",
    ]
    if data.get("plumbing_steps"):
        parts.insert(3, f"<p class='plumbing'>{e(plumbing_banner(data))}</p>")
    for section in data.get("sections", []):  # later stages add tables and plots here
        parts.append(f"<h2>{e(section.get('title', ''))}</h2>{section.get('html', '')}")
    parts.append("<h2 id='dag'>Steps</h2><table><tr><th>status</th><th>step</th><th>time</th>"
                 "<th>depends on</th><th>output</th><th>what changed</th></tr>")
    for r in _rows(data, run):
        changed = "<br>".join(e(c) for c in r["changes"]) or ""
        error = (f"<div class='error'>{e(_last_line(r['error']))}</div><details><summary>traceback</summary>"
                 f"<pre>{e(r['error'])}</pre></details>" if r["error"] else "")
        log = "" if r["status"] in _NO_LOG or r["path"] == "?" else \
            f" <a class='log' href='{e(log_link(r['path'], data.get('prefix', '')))}'>log</a>"
        parts.append(
            f"<tr><td class='{e(r['status'])}'>{e(r['status'])}</td>"
            f"<td title='{e(r['description'])}'><code>{e(r['name'])}</code>{log}{error}</td><td>{e(r['duration'])}</td>"
            f"<td>{'<br>'.join('<code>' + e(d) + '</code>' for d in r['depends_on'])}</td>"
            f"<td><code>{e(r['path'])}</code></td><td>{changed}</td></tr>"
        )
    parts.append("</table>")
    if len(data.get("runs") or []) > 1:
        parts.append("<h2>Earlier runs of this DAG</h2><table><tr><th>run</th><th>status</th><th>started</th></tr>")
        for old in reversed(data["runs"][:-1]):
            status = old.get("status", "?")
            parts.append(f"<tr><td>{e(old.get('run_id', '?'))}</td><td class='{e(status)}'>{e(status)}</td>"
                         f"<td>{_when(old.get('started'))}</td></tr>")
        parts.append("</table>")
    parts.append("</body></html>\n")
    return "".join(parts)


def render_markdown(data: dict[str, Any]) -> str:
    run, run_line, commit, command = _run_fields(data)
    lines = [
        f"# {data.get('experiment', '?')} (DAG {data.get('dag_hash', '?')})",
        "",
        f"- description: {data.get('description') or '-'}",
        f"- run: {run_line}, started {_when(run.get('started'))}",
        f"- git commit: {commit}",
        f"- command: `{command}`",
        "",
    ]
    if data.get("plumbing_steps"):
        lines += [f"> **{plumbing_banner(data)}**", ""]
    for section in data.get("sections", []):
        lines += [f"## {section.get('title', '')}", "", section.get("markdown", ""), ""]
    lines += ["## Steps", "", "| status | step | time | output | log | what changed |", "|---|---|---|---|---|---|"]
    for r in _rows(data, run):
        log = ("" if r["status"] in _NO_LOG or r["path"] == "?"
               else f"[log]({log_link(r['path'], data.get('prefix', ''))})")
        lines.append(f"| {r['status']} | `{r['name']}` | {r['duration']} | `{r['path']}` | {log} | "
                     f"{'; '.join(r['changes'])} |")
    failed = [r for r in _rows(data, run) if r["error"]]
    if failed:
        lines += ["", "## Errors", ""]
        for r in failed:
            lines += [f"`{r['name']}`: {_last_line(r['error'])}", ""]
    return "\n".join(lines) + "\n"


def write_pages(data: dict[str, Any], record_url: str) -> str:
    base = record_url[: -len(".json")]
    data = storage.redact_data(data)  # secrets under secret-looking keys, before escaping hides them
    fileio.atomic_write_text(base + ".html", storage.redact(render_html(data)))
    fileio.atomic_write_text(base + ".md", storage.redact(render_markdown(data)))
    return base + ".html"


def index_rows(prefix: str, unreadable: Optional[list[tuple[str, str]]] = None) -> list[dict[str, Any]]:
    """One row per experiment record with a run under `prefix`, newest run first; (url, why) of each
    unreadable record is appended to `unreadable`."""
    rows = []
    readable, bad = scan_records(prefix)
    if unreadable is not None:
        unreadable.extend(bad)
    for url, data in readable:
        if not data.get("runs"):
            continue
        mark_died(data, url)
        run = data["runs"][-1]
        rows.append({"experiment": data.get("experiment", "?"), "dag_hash": data.get("dag_hash", "?"),
                     "description": data.get("description") or "", "status": run.get("status", "?"),
                     "started": run.get("started"), "ended": run.get("ended"), "runs": len(data["runs"]),
                     "steps": len(data.get("steps", {})), "plumbing": bool(data.get("plumbing_steps")),
                     "page": url[: -len(".json")] + ".html"})
    return sorted(rows, key=lambda r: r["started"] or 0, reverse=True)


def render_index(prefix: str, rows: list[dict[str, Any]]) -> str:
    e = html.escape
    parts = ["<!doctype html><html><head><meta charset='utf-8'>",
             f"<title>experiment runs under {e(prefix)}</title><style>{_CSS}</style></head><body>",
             f"<h1>Experiment runs <small>{e(experiments_dir(prefix))}</small></h1>",
             "<table class='index'><tr><th>started</th><th>status</th><th>experiment</th><th>runs</th><th>steps</th>"
             "<th>description</th></tr>"]
    for r in rows:
        name = r["page"].rsplit("/", 1)[-1]
        plumbing = " <span class='plumbing'>plumbing run</span>" if r["plumbing"] else ""
        parts.append(f"<tr><td>{_when(r['started'])}</td><td class='{e(r['status'])}'>{e(r['status'])}</td>"
                     f"<td><a href='{e(name)}'>{e(r['experiment'])}</a> <small>{e(r['dag_hash'])}</small></td>"
                     f"<td>{r['runs']}</td><td>{r['steps']}</td><td>{e(r['description'])}{plumbing}</td></tr>")
    parts.append("</table></body></html>\n")
    return "".join(parts)


def write_index(prefix: str, rows: Optional[list[dict[str, Any]]] = None) -> str:
    """Rewrite `{prefix}/experiments/index.html`; returns its path."""
    url = index_path(prefix)
    fileio.atomic_write_text(url, storage.redact(render_index(prefix, index_rows(prefix) if rows is None else rows)))
    return url
