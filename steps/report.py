"""SODA's experiment-log report: paper-style sections built from the steps' `summary.json` files.

`build_sections(data)` is the report builder the experiment scripts' shared main (experiments.main)
hands to the executor: at the end of a run the record (pipeline.experiment_log) calls it with its data.
It reads the summary of every train, eval and analysis step in the record (by the step's function,
plain JSON, no heavy imports) and returns these sections (each {title, html, markdown}):

- Results: model x metric, one column per `ResultColumn` the eval tasks declare (eval.tasks: a new
  task brings its columns), ours beside the published SODA models (shared/reference.md section 9),
  with the scoring convention of each column;
- Training runs: preset, size, tokens, final loss, W&B link where the summary has one;
- Scaling laws: Approach 2/3 exponents with their bootstrap intervals beside the paper's, and the
  analysis step's plots inlined as SVG (the page stays self-contained);
- Correlations: Pearson/Spearman of validation NLL vs each metric, and their plot.
Accuracies are shown in %, WER in %, SIM in [0, 1], NLL in nats per token, as the paper prints them.
"""

from __future__ import annotations

import html
import logging
import re
from typing import Any, Optional

from eval.tasks import TASKS, ResultColumn
from pipeline import fileio

logger = logging.getLogger(__name__)

TRAIN_FN = "steps.training.train.train"
EVAL_FN = "steps.evaluate.evaluate"
FITS_FN = "steps.scaling.analysis.run_scaling_analysis"
CORRELATION_FN = "steps.scaling.analysis.run_correlation"

# (task, column) in table order: each eval task declares its columns (eval.tasks.TaskSpec.columns)
COLUMNS: tuple[tuple[str, ResultColumn], ...] = tuple((t.name, c) for t in TASKS.values() for c in t.columns)

# shared/reference.md section 9: sBLIMP sWUGGY Salmon tBLIMP tWUGGY HellaS ASR-WER TTS-WER TTS-SIM
PUBLISHED: dict[str, dict[str, float]] = {
    name: dict(zip(("sBLIMP", "sWUGGY", "SALMon", "tBLIMP", "tWUGGY", "HellaSwag", "ASR WER", "TTS WER", "TTS SIM"),
                   values))
    for name, values in (
        ("SODA-base-135M", (50.1, 56.3, 70.0, 67.4, 70.7, 28.7, 28.1, 11.2, 0.500)),
        ("SODA-base-600M", (51.2, 58.9, 70.1, 70.7, 73.1, 35.8, 10.2, 7.6, 0.555)),
        ("SODA-base-1.7B", (51.4, 60.6, 70.6, 70.3, 74.7, 44.5, 7.0, 6.9, 0.560)),
        ("SODA-base-4B", (52.4, 61.8, 70.4, 71.3, 74.8, 52.6, 5.0, 6.1, 0.560)),
    )
}
# shared/reference.md section 7
PUBLISHED_FITS = {("approach2", "n_exponent"): 0.367, ("approach2", "d_exponent"): 0.579,
                  ("approach3", "alpha"): 0.684, ("approach3", "beta"): 0.439,
                  ("approach3", "n_exponent"): 0.391, ("approach3", "d_exponent"): 0.609}
PUBLISHED_PEARSON = {"asr/wer": "~0.95", "tts/wer": "~0.95", "tts/sim": "~0.99", "sblimp/acc": "~0.6"}

e = html.escape


def _kind(step: dict[str, Any], summary: dict) -> Optional[str]:
    """A step's kind from its function, or for other `analysis/` steps (wrappers) from its summary."""
    kind = {TRAIN_FN: "train", EVAL_FN: "eval", FITS_FN: "fits", CORRELATION_FN: "correlation"}.get(step.get("fn"))
    if kind is None and isinstance(summary, dict):
        kind = "fits" if "approach3" in summary else "correlation" if "pearson" in summary else None
    return kind


def _read_summary(path: str) -> Optional[dict]:
    try:
        return fileio.read_json(fileio.join(path, "summary.json"), default=None)
    except (ValueError, OSError) as err:  # a broken summary must not break the log
        logger.warning("report: cannot read %s/summary.json: %s", path, err)
        return None


def collect(data: dict[str, Any]) -> dict[str, list[tuple[str, dict, dict]]]:
    """kind -> [(step name, step entry, summary)] for the steps with a summary, in record order."""
    out: dict[str, list] = {"train": [], "eval": [], "fits": [], "correlation": []}
    for name in data.get("order") or data.get("steps", {}):
        step = data["steps"][name]
        if step.get("fn") not in (TRAIN_FN, EVAL_FN, FITS_FN, CORRELATION_FN) and not name.startswith("analysis/"):
            continue  # only these have summaries the report reads: skip the other reads
        summary = _read_summary(step["output_path"])
        kind = _kind(step, summary) if summary is not None else None
        if kind is not None:
            out[kind].append((name, step, summary))
    return out


def _fmt(value: Any, scale: float = 1.0) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "-"
    value *= scale
    if scale == 1.0 and value != 0 and not 1e-3 <= abs(value) < 1e4:
        return f"{value:.3g}"
    return f"{value:.3f}" if abs(value) < 10 and scale == 1.0 else f"{value:.1f}"


def _table(header: list[str], rows: list[list[str]], raw_html: bool = False) -> tuple[str, str]:
    cell = (lambda x: x) if raw_html else e
    h = ("<table class='report'><tr>" + "".join(f"<th>{e(c)}</th>" for c in header) + "</tr>"
         + "".join("<tr>" + "".join(f"<td>{cell(c)}</td>" for c in r) + "</tr>" for r in rows) + "</table>")
    strip = (lambda x: re.sub(r"<[^>]+>", "", x)) if raw_html else (lambda x: x)
    md = "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                   + ["| " + " | ".join(strip(c).replace("|", "\\|") for c in r) + " |" for r in rows])
    return h, md


def _model_names(collected) -> dict[str, str]:
    """train output path -> the train step's short name (checkpoints/<name>-<hash> -> <name>)."""
    names = {}
    for name, step, _ in collected["train"]:
        short = name.split("/", 1)[-1].rsplit("-", 1)[0]
        names[step["output_path"].rstrip("/")] = short
    return names


def results_section(collected) -> Optional[dict]:
    if not collected["eval"]:
        return None
    models = _model_names(collected)
    table: dict[str, dict[str, str]] = {}
    conventions: dict[str, str] = {}
    plumbing: set[str] = set()
    for _, step, summary in collected["eval"]:
        model_path = str(summary.get("model") or step.get("config", {}).get("model_path", "?")).rstrip("/")
        model = models.get(model_path, model_path.rsplit("/", 1)[-1])
        if summary.get("plumbing_run"):
            plumbing.add(model)
        metrics = summary.get("metrics") or {}
        for task, column in COLUMNS:
            if summary.get("task") == task and column.metric in metrics:
                table.setdefault(model, {})[column.label] = _fmt(metrics[column.metric], column.scale)
                conv = (summary.get("convention") or {}).get(column.convention_key)
                if isinstance(conv, str):
                    conventions.setdefault(column.label, conv)
    if not table:
        return None
    cols = [c.label for _, c in COLUMNS if any(c.label in row for row in table.values())]
    scale = {c.label: paper_scale(c, [s for _, _, s in collected["eval"] if s.get("task") == task])
             for task, c in COLUMNS if c.label in cols}
    header = ["model", *(c + ("" if scale[c] == "yes" else " ?" if scale[c].startswith(("unknown", "no published"))
                              else " \u2020") for c in cols)]
    rows = [[f"{m} (plumbing)" if m in plumbing else m, *(table[m].get(c, "-") for c in cols)] for m in table]
    rows += [[f"{m} (published)", *(_fmt(v.get(c)) if c == "TTS SIM" and c in v else
                                     (f"{v[c]:.1f}" if c in v else "-") for c in cols)]
             for m, v in PUBLISHED.items()]
    h, md = _table(header, rows)
    notes = [(c.label, conventions.get(c.label, "-"), c.protocol, scale[c.label]) for _, c in COLUMNS if c.label in cols]
    nh, nmd = _table(["column", "ours (from the eval summary)", "paper (reference.md section 8)",
                      "on the paper's scale"], [list(n) for n in notes])
    intro = ("Rows marked (plumbing) come from a random-weight codec or random judges on tiny local fixtures: they "
             "test the pipeline and are not comparable with the published numbers. " if plumbing else "")
    intro += "Published rows: the SODA paper (shared/reference.md section 9); '-' where nothing was run or published. "
    intro += ("Columns marked \u2020 are not on the paper's scale (another judge or protocol), ? where the paper "
              "gives no comparable number; the conventions table says why.")
    return {"title": "Results: model x metric",
            "html": f"<p>{e(intro)}</p>{h}<details><summary>scoring conventions</summary>{nh}</details>",
            "markdown": f"{intro}\n\n{md}\n\nScoring conventions:\n\n{nmd}"}


def paper_scale(column: ResultColumn, summaries: list[dict]) -> str:
    """"yes" when every summary behind `column` was scored as the paper scored it, else why not."""
    if column.not_comparable:
        return column.not_comparable
    rule = column.paper_scale
    if rule is None:
        return "yes"
    for summary in summaries:
        value: Any = summary
        for part in rule.field.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if not (isinstance(value, str) and value.startswith(rule.prefix)):
            return f"no: {rule.field.rsplit('.', 1)[-1]} {value or 'not recorded'}, not {rule.what}"
    return "yes"


def _wandb_url(summary: dict) -> Optional[str]:
    url = summary.get("wandb_url")
    if url is None and isinstance(summary.get("wandb"), dict):
        url = summary["wandb"].get("url")
    return url if isinstance(url, str) and url.startswith("https://") else None


def training_section(collected) -> Optional[dict]:
    if not collected["train"]:
        return None
    rows, md_rows = [], []
    for name, _, s in collected["train"]:
        short = name.split("/", 1)[-1].rsplit("-", 1)[0]
        url = _wandb_url(s)
        link = f"<a href='{e(url)}'>W&amp;B</a>" if url else "-"
        tokens = s.get("tokens")
        cells = [e(short), e(str(s.get("preset", "-"))), e(f"{s['params_nonembedding']:,}") if isinstance(
            s.get("params_nonembedding"), int) else "-", e(f"{tokens:,}") if isinstance(tokens, int) else "-",
            e(str(s.get("steps", "-"))), e(_fmt(s.get("final_loss"))), link]
        rows.append(cells)
        md_rows.append([short, str(s.get("preset", "-")), *[re.sub(r"<[^>]+>", "", c) for c in cells[2:6]],
                        f"[W&B]({url})" if url else "-"])
    header = ["model", "preset", "non-emb. params", "tokens", "steps", "final loss", "W&B"]
    h, _ = _table(header, rows, raw_html=True)
    _, md = _table(header, md_rows)
    return {"title": "Training runs", "html": h, "markdown": md}


def _interval(intervals: Any, key: str) -> str:
    value = (intervals or {}).get(key) if isinstance(intervals, dict) else None
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
        return f"[{_fmt(value[0])}, {_fmt(value[1])}]"
    return "-"


def _svg(path: str) -> Optional[str]:
    text = fileio.read_text(path, default=None)
    if not text or "<svg" not in text:
        return None
    return text[text.index("<svg"):]  # drop the XML prolog and doctype: the SVG goes inline


def _plots(step: dict, summary: dict) -> tuple[str, str]:
    parts, md = [], []
    for name in summary.get("files", []):
        if not name.endswith(".svg"):
            continue
        path = fileio.join(step["output_path"], name)
        svg = _svg(path)
        if svg is None:
            continue
        parts.append(f"<figure class='plot'>{svg}<figcaption>{e(name)}</figcaption></figure>")
        md.append(f"![{name[:-4]}]({path})")
    return "".join(parts), "\n\n".join(md)


def fits_sections(collected) -> list[dict]:
    out = []
    for name, step, s in collected["fits"]:
        rows = []
        level = None
        for approach, keys in (("approach2", ("n_exponent", "d_exponent")),
                               ("approach3", ("alpha", "beta", "n_exponent", "d_exponent", "E", "A", "B"))):
            values = s.get(approach) or {}
            intervals = (s.get("intervals") or {}).get(approach)
            if level is None and isinstance(intervals, dict):
                level = intervals.get("level")
            for key in keys:
                paper = PUBLISHED_FITS.get((approach, key))
                rows.append([approach, key, _fmt(values.get(key)), _interval(intervals, key),
                             f"{paper:.3f}" if paper is not None else "-"])
        ci = f"{level:.0%} bootstrap interval" if isinstance(level, (int, float)) else "bootstrap interval"
        h, md = _table(["fit", "quantity", "ours", ci, "paper"], rows)
        plots_html, plots_md = _plots(step, s)
        budgets = ", ".join(f"{b:.1e}" if isinstance(b, (int, float)) else "-" for b in s.get("budgets") or [])
        intro = (f"{s.get('runs', '?')} runs over budgets {budgets}; "
                 f"N = {s.get('params_kind', '?')} parameters; n_exponent / d_exponent: N* ~ C^a, D* ~ C^b.")
        if s.get("skipped"):
            intro += f" Skipped: {len(s['skipped'])} run(s) without a usable NLL."
        if s.get("approach2_error"):
            intro += f" Approach 2 not fitted: {s['approach2_error']}."
        out.append({"title": f"Scaling laws ({name})",
                    "html": f"<p>{e(intro)}</p>{h}{plots_html}", "markdown": f"{intro}\n\n{md}\n\n{plots_md}"})
    return out


def correlation_sections(collected) -> list[dict]:
    out = []
    for name, step, s in collected["correlation"]:
        pearson, spearman = s.get("pearson") or {}, s.get("spearman") or {}
        rows = []
        for metric in pearson:
            paper = PUBLISHED_PEARSON.get(metric, "-")
            rows.append([metric, _fmt(pearson.get(metric)), _fmt(spearman.get(metric)), paper])
        h, md = _table(["metric", "Pearson r", "Spearman rho", "paper (magnitude of r)"], rows)
        plots_html, plots_md = _plots(step, s)
        intro = f"validation {s.get('nll_metric', 'NLL')} against each downstream metric over {s.get('runs', '?')} runs."
        out.append({"title": f"Correlations ({name})",
                    "html": f"<p>{e(intro)}</p>{h}{plots_html}", "markdown": f"{intro}\n\n{md}\n\n{plots_md}"})
    return out


def build_sections(data: dict[str, Any]) -> list[dict]:
    """The report's sections for a record (empty when no step of a known kind has a summary)."""
    collected = collect(data)
    sections = [results_section(collected), training_section(collected),
                *fits_sections(collected), *correlation_sections(collected)]
    return [s for s in sections if s]
