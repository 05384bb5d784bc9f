"""The analyse report: one self-contained HTML page, a Markdown twin, and metrics.json.

- ``report.html``: every figure embedded as a base64 ``data:image/png`` URI, so the file
  can be mailed or archived alone; tables as HTML tables.
- ``report.md``: the same sections, figures copied to ``figures/`` beside it and linked.
- ``metrics.json``: every number of the stage (realism per dataset pair and direction,
  R^2 per field for representation and baseline, object-permanence rates, …) plus a
  ``"headline"`` summary (read by ``make demo``). NaN/inf are written as ``null``, so the
  file is strict JSON.

The page also lists the parameters used (YAML) and the versions of the packages that
produced the numbers.
"""
from __future__ import annotations

import base64
import html
import importlib.metadata
import json
import logging
import math
import platform
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import yaml

logger = logging.getLogger(__name__)

#: Distributions whose versions are listed in the report.
PACKAGES = ("tensorflow", "keras", "numpy", "scipy", "pandas", "pyarrow", "h5py",
            "scikit-learn", "umap-learn", "faiss-cpu", "matplotlib", "astropy", "mlflow")
FIGURES_DIR = "figures"


@dataclass
class Section:
    """One part of the report: a heading, paragraphs, links (caption, path relative to the
    report), tables and figures (in that order)."""

    title: str
    text: list[str] = field(default_factory=list)
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)
    figures: list[tuple[str, Path]] = field(default_factory=list)
    links: list[tuple[str, str]] = field(default_factory=list)


# --------------------------------------------------------------------------- metrics
def _plain(value: Any) -> Any:
    """JSON-safe copy: numpy scalars/arrays → Python, NaN/inf → None, tuples → lists."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, str):
        return value
    return str(value)


def headline(metrics: dict) -> dict:
    """The summary ``make demo`` prints: per simulated set and observed set the in-domain
    fractions (both directions), classifier AUC (with interval) and MMD; the R^2 of
    ``stellar_mass`` from the representation and the pixel baseline, and of every driver
    FIELD from every feature set (representation and its baselines), per dataset; the
    object-permanence top-5 rate (and chance) per simulated dataset."""
    out: dict[str, Any] = {"run_name": metrics.get("run_name")}
    realism = {}
    for sim, by_obs in metrics.get("realism", {}).items():
        realism[sim] = {}
        for obs, m in by_obs.items():
            if "skipped" in m:
                realism[sim][obs] = {"skipped": m["skipped"]}
                continue
            realism[sim][obs] = {
                "in_domain_fraction_sim": m["ood_sim"]["in_domain_fraction"],
                "in_domain_fraction_obs": m["ood_obs"]["in_domain_fraction"],
                "c2st_auc": m["c2st"]["auc"],
                "c2st_auc_interval": [m["c2st"]["ci_low"], m["c2st"]["ci_high"]],
                "mmd2": m["mmd"]["mmd2"],
                "mmd_p_value": m["mmd"]["p_value"],
            }
    out["realism"] = realism
    out["stellar_mass_r2"] = {
        ds: {"representation": f["stellar_mass"]["representation"]["r2"],
             "baseline": f["stellar_mass"]["baseline"]["r2"]}
        for ds, f in metrics.get("drivers", {}).items() if "stellar_mass" in f}
    out["driver_r2"] = {
        ds: {field: {features: entry["r2"] for features, entry in f[field].items()} for field in f}
        for ds, f in metrics.get("drivers", {}).items()}
    out["permanence_top5"] = {
        ds: {"top5": p.get("top5"), "chance_top5": p.get("chance_top5")}
        for ds, p in metrics.get("permanence", {}).items()}
    if metrics.get("posterior"):  # written by the infer stage
        out["posterior_calibration"] = {
            ds: {field: {k: m.get(k) for k in ("coverage_68", "coverage_95", "pit_ks_p",
                                               "r2_median", "width_ratio")}
                 for field, m in fields.items()}
            for ds, fields in metrics["posterior"].items()}
    return out


#: metrics.json sections the infer stage adds (scripts.posterior.outputs.merge_metrics).
POSTERIOR_SECTIONS = ("posterior", "posterior_flow")


def kept_posterior(previous: str | Path, representation_fp: str) -> dict:
    """The infer stage's sections of the ``previous`` metrics.json, when they were computed
    on the representation whose file fingerprint is ``representation_fp`` (an analyse rerun
    that embedded the same vectors); otherwise none, with a log line saying why. An
    analyse rerun rewrites metrics.json, and without this its posterior numbers were lost
    even though posterior_report.html and the samples still held."""
    previous = Path(previous)
    if not previous.exists():
        return {}
    try:
        old = json.loads(previous.read_text())
    except (OSError, ValueError) as err:
        logger.warning("%s could not be read (%s): its posterior section, if any, is not kept",
                       previous, err)
        return {}
    if not old.get("posterior"):
        return {}
    recorded = (old.get("posterior_flow") or {}).get("representation_fingerprint")
    if recorded != representation_fp:
        logger.warning("%s: the posterior section is dropped: the infer stage ran on another "
                       "representation (fingerprint %s, now %s). Run python -m scripts.infer "
                       "again for posteriors of this one.", previous, recorded or "not recorded",
                       representation_fp)
        return {}
    logger.info("%s: the posterior section is kept: the infer stage ran on this same "
                "representation (fingerprint %s)", previous, representation_fp)
    return {k: old[k] for k in POSTERIOR_SECTIONS if k in old}


def write_metrics(metrics: dict, path: str | Path) -> Path:
    """``metrics`` with its ``headline`` added, as strict JSON (NaN → null)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    full = dict(metrics)
    full["headline"] = headline(metrics)
    path.write_text(json.dumps(_plain(full), indent=2, allow_nan=False) + "\n")
    return path


def flat_metrics(metrics: dict, prefix: str = "") -> dict[str, float]:
    """Every finite number of a nested metrics dict as ``{"a/b/c": value}`` (for trackers)."""
    out = {}
    for key, value in metrics.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(flat_metrics(value, name))
        elif isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
            if math.isfinite(float(value)):
                out[name] = float(value)
    return out


# --------------------------------------------------------------------------- environment
def package_versions(names: Sequence[str] = PACKAGES) -> dict[str, str]:
    """Installed version of each distribution ('not installed' when absent), plus Python."""
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


# --------------------------------------------------------------------------- rendering
def _format(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(value):
            return "–"
        return f"{value:.4g}"
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return str(value)


def markdown_table(table: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (numbers to 4 significant digits)."""
    def cell(v):
        return _format(v).replace("|", "\\|").replace("\n", " ")

    head = "| " + " | ".join(cell(c) for c in table.columns) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([head, rule, *body])


def html_table(table: pd.DataFrame) -> str:
    cells = ["<table>", "<thead><tr>" + "".join(f"<th>{html.escape(str(c))}</th>"
                                                for c in table.columns) + "</tr></thead>", "<tbody>"]
    for row in table.itertuples(index=False):
        cells.append("<tr>" + "".join(f"<td>{html.escape(_format(v))}</td>" for v in row) + "</tr>")
    cells.append("</tbody></table>")
    return "\n".join(cells)


def _anchor(title: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in title.lower()).strip("-")


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1200px;padding:0 1em;color:#222}
h1{border-bottom:2px solid #444}h2{border-bottom:1px solid #bbb;margin-top:2em}
table{border-collapse:collapse;margin:0.5em 0 1.2em;font-size:0.85em}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}th{background:#f0f0f0}
td:first-child,th:first-child{text-align:left}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #ddd}
figcaption{font-size:0.85em;color:#555}pre{background:#f6f6f6;padding:0.8em;overflow:auto;
font-size:0.8em}nav a{margin-right:1em}.caption{font-size:0.85em;color:#555;margin-bottom:0.2em}
"""


def render_html(title: str, sections: Sequence[Section], params_yaml: str,
                versions: dict[str, str], created: str) -> str:
    """The self-contained HTML page (figures as base64 PNG data URIs)."""
    out = ["<!DOCTYPE html>", "<html lang=\"en\"><head><meta charset=\"utf-8\">",
           f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
           f"<h1>{html.escape(title)}</h1>", f"<p>Created {html.escape(created)}.</p>", "<nav>"]
    all_titles = [s.title for s in sections] + ["Parameters", "Package versions"]
    out += [f"<a href=\"#{_anchor(t)}\">{html.escape(t)}</a>" for t in all_titles]
    out.append("</nav>")
    for section in sections:
        out.append(f"<h2 id=\"{_anchor(section.title)}\">{html.escape(section.title)}</h2>")
        out += [f"<p>{html.escape(p)}</p>" for p in section.text]
        out += [f"<p><a href=\"{html.escape(href)}\">{html.escape(caption)}</a></p>"
                for caption, href in section.links]
        for caption, table in section.tables:
            out.append(f"<div class=\"caption\">{html.escape(caption)}</div>")
            out.append(html_table(table))
        for caption, path in section.figures:
            data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
            out.append(f"<figure><img src=\"data:image/png;base64,{data}\" "
                       f"alt=\"{html.escape(caption)}\"><figcaption>{html.escape(caption)}"
                       "</figcaption></figure>")
    out.append(f"<h2 id=\"{_anchor('Parameters')}\">Parameters</h2>")
    out.append(f"<pre>{html.escape(params_yaml)}</pre>")
    out.append(f"<h2 id=\"{_anchor('Package versions')}\">Package versions</h2>")
    out.append(html_table(pd.DataFrame(list(versions.items()), columns=["package", "version"])))
    out.append("</body></html>")
    return "\n".join(out)


def render_markdown(title: str, sections: Sequence[Section], params_yaml: str,
                    versions: dict[str, str], created: str, figure_names: dict[Path, str],
                    figures_dir: str = FIGURES_DIR) -> str:
    """The Markdown twin; figures are linked as ``<figures_dir>/<name>.png``."""
    out = [f"# {title}", "", f"Created {created}.", ""]
    for section in sections:
        out += [f"## {section.title}", ""]
        for p in section.text:
            out += [p, ""]
        for caption, href in section.links:
            out += [f"[{caption}]({href})", ""]
        for caption, table in section.tables:
            out += [f"*{caption}*", "", markdown_table(table), ""]
        for caption, path in section.figures:
            out += [f"![{caption}]({figures_dir}/{figure_names[Path(path)]})", "", f"*{caption}*", ""]
    out += ["## Parameters", "", "```yaml", params_yaml.rstrip(), "```", "",
            "## Package versions", "",
            markdown_table(pd.DataFrame(list(versions.items()), columns=["package", "version"])), ""]
    return "\n".join(out)


def write_report(out_dir: str | Path, title: str, sections: Sequence[Section], params: dict,
                 versions: dict[str, str] | None = None, stem: str = "report") -> tuple[Path, Path]:
    """Write ``<stem>.html`` and ``<stem>.md`` (figures copied to ``figures/``, or to
    ``<stem>_figures/`` for another stem, so a second page never removes the first one's
    figures) into ``out_dir``; ``params`` is the resolved parameter dict shown as YAML."""
    out_dir = Path(out_dir)
    figures_dir = FIGURES_DIR if stem == "report" else f"{stem}_{FIGURES_DIR}"
    fig_dir = out_dir / figures_dir
    if fig_dir.exists():                 # figures of an earlier report must not linger
        shutil.rmtree(fig_dir)
    fig_dir.mkdir(parents=True)
    versions = versions or package_versions()
    created = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    params_yaml = yaml.safe_dump(_plain(params), sort_keys=False, allow_unicode=True)
    names: dict[Path, str] = {}
    for section in sections:
        for _, path in section.figures:
            path = Path(path)
            if not path.exists():
                raise FileNotFoundError(f"report figure {path} does not exist")
            if path in names:
                continue
            name = path.name
            if name in names.values():
                name = f"{path.parent.name}_{name}"
            names[path] = name
            if path.resolve() != (fig_dir / name).resolve():
                shutil.copyfile(path, fig_dir / name)
    html_path = out_dir / f"{stem}.html"
    md_path = out_dir / f"{stem}.md"
    html_path.write_text(render_html(title, sections, params_yaml, versions, created), encoding="utf-8")
    md_path.write_text(render_markdown(title, sections, params_yaml, versions, created, names,
                                       figures_dir), encoding="utf-8")
    logger.info("wrote %s and %s (%d figures)", html_path, md_path, len(names))
    return html_path, md_path
