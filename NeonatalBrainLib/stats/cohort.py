"""Cohort statistics: merge per-subject metrics with clinical data, compare groups,
correlate, and write CSV + readable Markdown/HTML tables (the clinical study's tables).

Inputs
------
* ``metrics_csv``: one row per subject; id column ``subject_id``, or ``case_id`` as written
  by ``neonatal-brain vessels-batch`` (``subject_id`` wins when both exist).
* ``clinical_csv``: one row per subject with ``subject_id`` (or ``case_id``) and clinical
  columns (sex, term_status, birthweight_g, gestational_age_weeks ...).
* Subjects are matched on the id (compared as text, surrounding blanks stripped); subjects
  found in only one file are left out and listed in ``tables.md``.  Duplicate ids are an error.

Defaults
--------
* ``metric_cols``: every numeric column of the metrics file except ids, bookkeeping columns
  (``seed``, run times, return codes), image-quality indices (``QUALITY_COLUMNS``, e.g. the
  vessel engine's ``dmv_detectability_index``: a property of the scan, not a biomarker) and
  columns that are entirely missing.
* ``exclude_below``: none; ``{"dmv_detectability_index": 2.3}`` leaves out the subjects whose
  value is below 2.3 or missing (listed in ``tables.md`` and ``cohort_stats.json``);
  ``{"field_of_view_whole_brain": 1}`` those whose field of view cut through the brain.
* ``group_cols``: every clinical column with 2 to ``max_levels`` (6) distinct values.
* ``correlate_with``: every numeric clinical column with more than ``max_levels`` distinct
  values (e.g. gestational_age_weeks, birthweight_g); metrics are correlated with these.
  When there are none, the metrics are correlated with each other.

Outputs (in ``out_dir``, through ``outputs.staged_output``)
-----------------------------------------------------------
* ``group_comparisons.csv``: one row per grouping x metric x group level (see
  :func:`groups.group_table_long` and docs/statistics.md).
* ``correlations.csv``: ``x, y, method, n, n_missing, r, ci_low, ci_high, p_value, q_value``.
* ``quality_balance.csv`` (when the metrics file holds image-quality columns,
  ``QUALITY_COLUMNS``): each quality column compared between the groups of each grouping
  (:func:`quality_balance`); a grouping whose groups differ at p < ``QUALITY_BALANCE_ALPHA`` gets a
  warning in the tables and in ``cohort_stats.json`` (``quality_warnings``): the engine finds
  fewer DMVs in scans of lower detectability, so a difference in DMV metrics between such groups
  may partly be one of image quality.
* ``tables.md`` and ``tables.html``: one table per grouping (rows = metrics, columns =
  groups) and one correlation table.
"""
from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..imageio import InputError
from ..outputs import staged_output
from .correlation import correlate
from .groups import _level_label, compare_groups, group_table_long

__all__ = ["cohort_statistics", "read_csv_table", "default_metric_columns",
           "default_group_columns", "default_correlation_columns", "quality_balance", "quality_warnings",
           "ID_COLUMNS"]

#: Accepted id columns, in order of preference.
ID_COLUMNS = ("subject_id", "case_id")

_BOOKKEEPING = {"seed", "run_time_s", "runtime_s", "elapsed_s", "duration_s", "returncode",
                "return_code", "exit_status", "attempt", "attempts", "index", "unnamed: 0"}
#: image-quality columns of the project's metrics files: not default metrics (see exclude_below)
QUALITY_COLUMNS = {"dmv_detectability_index", "field_of_view_whole_brain"}
#: a quality column whose groups differ at a p below this (uncorrected: a warning errs on the
#: side of saying so) is reported as an imbalance of image quality between the groups
QUALITY_BALANCE_ALPHA = 0.05
#: why an imbalance matters, per quality column (the warning's second sentence)
_QUALITY_CONSEQUENCE = {
    "dmv_detectability_index": (
        "automatic DMV detection finds fewer DMVs at a lower index (docs/vessels.md, accuracy), so a "
        "difference in DMV metrics between these groups may partly be one of image quality; compare "
        "with --exclude-below dmv_detectability_index=2.3, or adjust for the index"),
    "field_of_view_whole_brain": (
        "the DMV counts of a scan whose field of view cuts through the brain cover only the imaged "
        "part; compare with --exclude-below field_of_view_whole_brain=1"),
}


def read_csv_table(path: str | os.PathLike, name: str) -> pd.DataFrame:
    """Read a CSV file; InputError naming ``name`` and the file if missing, unreadable or empty."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{name}: file {path} does not exist")
    try:
        df = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise InputError(f"{name}: file {path} is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise InputError(f"{name}: {path} is not a readable CSV file ({exc})") from None
    if df.empty:
        raise InputError(f"{name}: {path} has a header but no rows")
    df.columns = [str(c).strip() for c in df.columns]
    return df


def _id_column(df: pd.DataFrame, name: str) -> str:
    for col in ID_COLUMNS:
        if col in df.columns:
            return col
    raise InputError(f"{name}: no id column; expected one of {list(ID_COLUMNS)}, "
                     f"found columns {list(df.columns)}")


def _with_ids(df: pd.DataFrame, name: str) -> pd.DataFrame:
    col = _id_column(df, name)
    ids = df[col]
    if ids.isna().any():
        raise InputError(f"{name}: {int(ids.isna().sum())} row(s) have an empty {col}")
    ids = ids.astype(str).str.strip()
    dup = ids[ids.duplicated()].unique().tolist()
    if dup:
        raise InputError(f"{name}: duplicate {col} value(s) {dup[:10]}")
    out = df.drop(columns=[c for c in ID_COLUMNS if c in df.columns])
    out.insert(0, "subject_id", ids.to_numpy())
    return out


def _is_numeric(s: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)


def default_metric_columns(metrics: pd.DataFrame, exclude: Sequence[str] = ()) -> list[str]:
    """Numeric, not entirely missing, non-id, non-bookkeeping columns of the metrics table."""
    skip = set(exclude) | set(ID_COLUMNS)
    return [c for c in metrics.columns
            if c not in skip and c.lower() not in _BOOKKEEPING and c.lower() not in QUALITY_COLUMNS
            and not c.lower().endswith("_id") and _is_numeric(metrics[c]) and metrics[c].notna().any()]


def default_group_columns(clinical: pd.DataFrame, max_levels: int = 6,
                          exclude: Sequence[str] = ()) -> list[str]:
    """Clinical columns with 2..max_levels distinct non-missing values, of which at least two
    hold >= 2 subjects (so id-like columns such as file paths in a tiny cohort are not groups)."""
    skip = set(exclude) | set(ID_COLUMNS)
    out = []
    for c in clinical.columns:
        counts = clinical[c].dropna().value_counts()
        if c not in skip and 2 <= len(counts) <= max_levels and int((counts >= 2).sum()) >= 2:
            out.append(c)
    return out


def default_correlation_columns(clinical: pd.DataFrame, max_levels: int = 6,
                                exclude: Sequence[str] = ()) -> list[str]:
    """Numeric clinical columns with more than max_levels distinct values."""
    skip = set(exclude) | set(ID_COLUMNS)
    return [c for c in clinical.columns
            if c not in skip and c.lower() not in _BOOKKEEPING and _is_numeric(clinical[c])
            and clinical[c].dropna().nunique() > max_levels]


def _check_columns(cols: Sequence[str], table: pd.DataFrame, what: str, name: str) -> None:
    missing = [c for c in cols if c not in table.columns]
    if missing:
        raise InputError(f"{what} column(s) {missing} not found in {name} "
                         f"(columns: {[c for c in table.columns if c != 'subject_id']})")


# ----------------------------------------------------------------------------- formatting
def format_p(p: float) -> str:
    """p-value for tables: 3 decimals, '<0.001' below."""
    if p is None or not np.isfinite(p):
        return "NA"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _effect_text(row) -> str:
    if not row.get("effect_size_name") or not np.isfinite(row["effect_size"]):
        return "NA"
    return f"{row['effect_size_name']} = {row['effect_size']:.2f}"


def _group_display(table: pd.DataFrame, group_counts: dict) -> pd.DataFrame:
    levels = table.attrs["levels"]
    rows = []
    for _, r in table.iterrows():
        mark = "" if r["normal"] else " †"
        d = {"Metric": r["metric"] + mark}
        for lab in levels:
            d[f"{lab} (n={group_counts.get(lab, 0)})"] = (
                f"{r[f'summary[{lab}]']}" + (f" (n={r[f'n[{lab}]']})"
                                              if r[f"n[{lab}]"] != group_counts.get(lab, 0) else ""))
        d["Test"] = r["test"]
        d["p"] = format_p(r["p_value"])
        d["Effect size"] = _effect_text(r)
        d["q (BH)"] = format_p(r["q_value"])
        rows.append(d)
    return pd.DataFrame(rows)


def _corr_display(corr: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for _, r in corr.iterrows():
        ci = (f"{r['r']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}]" if np.isfinite(r["ci_low"])
              else (f"{r['r']:.2f}" if np.isfinite(r["r"]) else "NA"))
        rows.append({"Metric": r["x"], "Variable": r["y"], "Method": r["method"].capitalize(),
                     "n": int(r["n"]), "r [95% CI]": ci, "p": format_p(r["p_value"]),
                     "q (BH)": format_p(r["q_value"])})
    return pd.DataFrame(rows)


def _markdown(df: pd.DataFrame) -> str:
    cols = list(df.columns)

    def cell(v):
        return str(v).replace("|", "\\|")
    lines = ["| " + " | ".join(cell(c) for c in cols) + " |",
             "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


_FOOTNOTE = ("Values are mean ± SD, or median [Q1, Q3] for metrics marked † (not normal by "
             "Shapiro-Wilk in at least one group). Tests: Welch t-test / Mann-Whitney U (2 groups), "
             "one-way or Welch ANOVA / Kruskal-Wallis (> 2 groups). Effect sizes: Hedges' g and "
             "rank-biserial r (positive = second group larger), eta², epsilon². q: "
             "Benjamini-Hochberg across the metrics of each table.")


def _write_reports(stage: Path, sections: list[tuple[str, pd.DataFrame, pd.DataFrame | None, list[str]]],
                   notes: list[str], corr_display: pd.DataFrame | None) -> None:
    """``sections``: (grouping, metrics table, image-quality table or None, its warnings)."""
    md = ["# Cohort statistics", ""] + [f"- {n}" for n in notes] + [""]
    body = ["<h1>Cohort statistics</h1>", "<ul>"] + [f"<li>{html.escape(n)}</li>" for n in notes] + ["</ul>"]
    for i, (grouping, disp, quality, warns) in enumerate(sections, start=1):
        title = f"Table {i}. Metrics by {grouping}"
        md += [f"## {title}", "", _markdown(disp), "", _FOOTNOTE, ""]
        body += [f"<h2>{html.escape(title)}</h2>", disp.to_html(index=False, border=0, escape=True),
                 f"<p class='note'>{html.escape(_FOOTNOTE)}</p>"]
        if quality is not None and len(quality):
            md += [f"Image quality by {grouping}:", "", _markdown(quality), ""]
            for w in warns:
                md += [f"**Warning.** {w}", ""]
            body += [f"<p>Image quality by {html.escape(grouping)}:</p>",
                     quality.to_html(index=False, border=0, escape=True)]
            body += [f"<p class='warning'><b>Warning.</b> {html.escape(w)}</p>" for w in warns]
    if corr_display is not None and len(corr_display):
        title = f"Table {len(sections) + 1}. Correlations"
        note = ("r: Pearson, or Spearman when a variable is not normal (Shapiro-Wilk); 95% CI by "
                "Fisher z (Spearman: Bonett-Wright SE); q: Benjamini-Hochberg across all pairs.")
        md += [f"## {title}", "", _markdown(corr_display), "", note, ""]
        body += [f"<h2>{html.escape(title)}</h2>", corr_display.to_html(index=False, border=0),
                 f"<p class='note'>{html.escape(note)}</p>"]
    (stage / "tables.md").write_text("\n".join(md), encoding="utf-8")
    style = ("body{font-family:sans-serif;margin:2em;max-width:75em}"
             "table{border-collapse:collapse;margin-bottom:0.5em}"
             "th,td{border-bottom:1px solid #ccc;padding:0.25em 0.7em;text-align:left}"
             "th{border-bottom:2px solid #333}.note{font-size:0.85em;color:#444}.warning{color:#8a4b00}")
    page = ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>Cohort statistics</title>"
            f"<style>{style}</style></head><body>" + "\n".join(body) + "</body></html>")
    (stage / "tables.html").write_text(page, encoding="utf-8")


#: ``summary_type`` of a 0/1 quality column in :func:`quality_balance`
PROPORTION_SUMMARY = "k of n with value 1 (%)"


def _is_binary(values: pd.Series) -> bool:
    v = pd.to_numeric(values, errors="coerce").dropna()
    return len(v) > 0 and bool(v.isin([0, 1]).all())


def quality_balance(table: pd.DataFrame, group_col: str, quality_cols: Sequence[str], *,
                    normality_alpha: float = 0.05) -> pd.DataFrame:
    """Image-quality columns compared between the groups of ``group_col``: one row per quality
    column x group level, columns ``grouping, column, level, n, summary_type, summary, test,
    p_value``.

    A 0/1 column (``field_of_view_whole_brain``) is summarised as ``k of n (pct %)`` with value 1
    and tested with Fisher's exact test (2 groups) or the chi-square test of independence (more
    groups; scipy's ``chi2_contingency``); any other column as :func:`.groups.compare_groups`
    does (mean ± SD with Welch's t-test / ANOVA, or median [IQR] with Mann-Whitney U /
    Kruskal-Wallis).  Subjects without a group or a value are left out of that column."""
    from scipy import stats as st

    rows = []
    grouped = table[table[group_col].notna()]
    for col in quality_cols:
        if _is_binary(grouped[col]):
            values = pd.to_numeric(grouped[col], errors="coerce")
            keep = values.notna()
            labels = grouped.loc[keep, group_col].map(_level_label)
            counts = pd.crosstab(labels, values[keep].astype(int)).reindex(columns=[0, 1], fill_value=0)
            n = counts.sum(axis=1)
            if len(counts) < 2 or (counts.sum(axis=0) == 0).any():
                test, p = "not tested (one group, or one value only)", np.nan
            elif len(counts) == 2:
                test, p = "Fisher's exact test", float(st.fisher_exact(counts.to_numpy())[1])
            else:
                test, p = "chi-square test", float(st.chi2_contingency(counts.to_numpy())[1])
            for lab in counts.index:
                k = int(counts.loc[lab, 1])
                rows.append({"grouping": group_col, "column": col, "level": lab, "n": int(n[lab]),
                             "summary_type": PROPORTION_SUMMARY,
                             "summary": f"{k} of {int(n[lab])} ({100.0 * k / n[lab]:.0f} %)", "test": test,
                             "p_value": p})
        else:
            long = group_table_long(compare_groups(grouped, group_col, [col], normality_alpha=normality_alpha))
            for r in long.itertuples(index=False):
                rows.append({"grouping": group_col, "column": col, "level": r.level, "n": int(r.n),
                             "summary_type": r.summary_type, "summary": r.summary, "test": r.test,
                             "p_value": float(r.p_value)})
    return pd.DataFrame(rows, columns=["grouping", "column", "level", "n", "summary_type", "summary", "test",
                                       "p_value"])


def quality_warnings(balance: pd.DataFrame, alpha: float = QUALITY_BALANCE_ALPHA) -> list[str]:
    """One sentence per (grouping, quality column) of :func:`quality_balance` whose groups differ
    at p < ``alpha``."""
    out = []
    for (grouping, col), rows in balance.groupby(["grouping", "column"], sort=False):
        p = float(rows["p_value"].iloc[0])
        if np.isfinite(p) and p < alpha:
            levels = ", ".join(f"{r.level} {r.summary}" for r in rows.itertuples(index=False))
            what = f"{col} = 1" if rows["summary_type"].iloc[0] == PROPORTION_SUMMARY else col
            p_text = format_p(p)
            consequence = _QUALITY_CONSEQUENCE.get(col, "differences in the metrics may partly be ones of image quality")
            out.append(f"Image quality differs between the {grouping} groups: {what}: {levels} "
                       f"({rows['test'].iloc[0]}, p {'< 0.001' if p_text == '<0.001' else '= ' + p_text}). "
                       f"{consequence[0].upper()}{consequence[1:]}.")
    return out


def _quality_display(balance: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for col, part in balance.groupby("column", sort=False):
        d = {"Image quality": col}
        for r in part.itertuples(index=False):
            d[r.level] = r.summary
        d["Test"] = part["test"].iloc[0]
        d["p"] = format_p(float(part["p_value"].iloc[0]))
        rows.append(d)
    return pd.DataFrame(rows)


def _exclude_below(metrics: pd.DataFrame, minimum: dict[str, float], name: str) -> tuple[pd.DataFrame, dict]:
    """``metrics`` without the rows below ``minimum[column]`` or missing it; ``{rule: [ids]}``."""
    excluded: dict[str, list[str]] = {}
    for col, low in minimum.items():
        _check_columns([col], metrics, "exclusion", name)
        values = pd.to_numeric(metrics[col], errors="coerce")
        drop = ~(values >= float(low))
        excluded[f"{col} < {low:g} or missing"] = sorted(metrics.loc[drop, "subject_id"].astype(str))
        metrics = metrics.loc[~drop]
    if minimum and metrics.empty:
        raise InputError(f"{name}: every subject left out by {', '.join(excluded)}")
    return metrics, excluded


# ----------------------------------------------------------------------------- main entry
def cohort_statistics(metrics_csv: str | os.PathLike, clinical_csv: str | os.PathLike, *,
                      group_cols: Sequence[str] | None = None,
                      metric_cols: Sequence[str] | None = None,
                      correlate_with: Sequence[str] | None = None,
                      out_dir: str | os.PathLike,
                      correlation_method: str = "auto", normality_alpha: float = 0.05,
                      max_levels: int = 6, exclude_below: dict[str, float] | None = None) -> dict:
    """Group comparisons and correlations of ``metrics_csv`` against ``clinical_csv``.

    ``exclude_below``: ``{column of the metrics CSV: minimum}``; subjects below a minimum, or
    without a value, are left out before the analysis (``excluded`` in the result).

    Image-quality columns of the metrics file (``QUALITY_COLUMNS``) are compared between the
    groups of every grouping (:func:`quality_balance`, ``quality_balance.csv``); an imbalance at
    p < ``QUALITY_BALANCE_ALPHA`` is a warning (:func:`quality_warnings`) in the tables and under
    ``quality_warnings``.

    Returns ``{"n_subjects", "unmatched_metrics", "unmatched_clinical", "excluded", "group_cols",
    "metric_cols", "correlate_with", "quality_cols", "quality_warnings", "notes",
    "group_comparisons": DataFrame (long), "correlations": DataFrame, "out_dir": Path}``.
    """
    metrics = _with_ids(read_csv_table(metrics_csv, "metrics CSV"), "metrics CSV")
    clinical = _with_ids(read_csv_table(clinical_csv, "clinical CSV"), "clinical CSV")
    metrics, excluded = _exclude_below(metrics, exclude_below or {}, f"metrics CSV {metrics_csv}")
    shared = [c for c in metrics.columns if c in clinical.columns and c != "subject_id"]
    if metric_cols is None:
        metric_cols = default_metric_columns(metrics, exclude=shared)
    else:
        metric_cols = list(metric_cols)
        _check_columns(metric_cols, metrics, "metric", f"metrics CSV {metrics_csv}")
    if not metric_cols:
        raise InputError(f"metrics CSV {metrics_csv}: no numeric metric columns found")
    clinical_only = clinical.drop(columns=[c for c in shared if c in metric_cols])
    if group_cols is None:
        group_cols = default_group_columns(clinical_only, max_levels, exclude=metric_cols)
    else:
        group_cols = list(group_cols)
        _check_columns(group_cols, clinical_only, "grouping", f"clinical CSV {clinical_csv}")
    if correlate_with is None:
        correlate_with = default_correlation_columns(clinical_only, max_levels, exclude=metric_cols)
    else:
        correlate_with = list(correlate_with)
        _check_columns(correlate_with, clinical_only, "correlation", f"clinical CSV {clinical_csv}")
    if not group_cols and not correlate_with and len(metric_cols) < 2:
        raise InputError("nothing to analyse: no grouping columns, no correlation variables and "
                         "fewer than 2 metrics")

    ids_m, ids_c = set(metrics["subject_id"]), set(clinical["subject_id"])
    matched = ids_m & ids_c
    if not matched:
        raise InputError(f"no subject of the metrics CSV ({sorted(ids_m)[:5]} ...) is in the clinical "
                         f"CSV ({sorted(ids_c)[:5]} ...); ids are matched on subject_id/case_id")
    quality_cols = [c for c in metrics.columns if c.lower() in QUALITY_COLUMNS and c not in clinical_only.columns
                    and _is_numeric(metrics[c]) and metrics[c].notna().any()]
    extra = [c for c in quality_cols if c not in metric_cols]
    merged = metrics[["subject_id"] + metric_cols + extra].merge(clinical_only, on="subject_id", how="inner")
    unmatched_m, unmatched_c = sorted(ids_m - ids_c), sorted(ids_c - ids_m)

    tables, sections, skipped = [], [], []
    balances: list[pd.DataFrame] = []
    all_warnings: list[str] = []
    for gcol in group_cols:
        groups_present = merged[gcol].dropna().nunique()
        if groups_present < 2:
            skipped.append(f"grouping '{gcol}' skipped: only {groups_present} group among matched subjects")
            continue
        table = compare_groups(merged, gcol, metric_cols, normality_alpha=normality_alpha)
        tables.append(group_table_long(table))
        counts = {lab: int((merged[gcol].dropna().map(_level_label) == lab).sum()) for lab in table.attrs["levels"]}
        quality, warns = None, []
        if quality_cols:
            bal = quality_balance(merged, gcol, quality_cols, normality_alpha=normality_alpha)
            balances.append(bal)
            quality, warns = _quality_display(bal), quality_warnings(bal)
            all_warnings += warns
        sections.append((gcol, _group_display(table, counts), quality, warns))
    long = (pd.concat(tables, ignore_index=True) if tables else
            pd.DataFrame(columns=["grouping", "metric", "level", "n", "missing", "summary_type", "summary",
                                  "mean", "sd", "median", "q1", "q3", "shapiro_p", "test", "statistic",
                                  "df", "df2", "p_value", "effect_size", "effect_size_name", "q_value"]))
    if correlate_with:
        corr = correlate(merged, metric_cols, correlate_with, method=correlation_method,
                         normality_alpha=normality_alpha)
    elif len(metric_cols) >= 2:
        corr = correlate(merged, metric_cols, metric_cols, method=correlation_method,
                         normality_alpha=normality_alpha)
    else:
        corr = pd.DataFrame(columns=["x", "y", "method", "n", "n_missing", "r", "ci_low", "ci_high",
                                     "p_value", "q_value"])

    notes = [f"{len(matched)} subjects with metrics and clinical data "
             f"(metrics: {Path(metrics_csv).name}, clinical: {Path(clinical_csv).name})."]
    if unmatched_m:
        notes.append(f"{len(unmatched_m)} subject(s) only in the metrics file, left out: "
                     f"{', '.join(unmatched_m[:20])}{' ...' if len(unmatched_m) > 20 else ''}")
    if unmatched_c:
        notes.append(f"{len(unmatched_c)} subject(s) only in the clinical file, left out: "
                     f"{', '.join(unmatched_c[:20])}{' ...' if len(unmatched_c) > 20 else ''}")
    for rule, ids in excluded.items():
        notes.append(f"{len(ids)} subject(s) left out by {rule}: {', '.join(ids[:20])}{' ...' if len(ids) > 20 else ''}")
    notes += skipped
    with staged_output(out_dir) as stage:
        long.to_csv(stage / "group_comparisons.csv", index=False)
        corr.to_csv(stage / "correlations.csv", index=False)
        if balances:
            pd.concat(balances, ignore_index=True).to_csv(stage / "quality_balance.csv", index=False)
        _write_reports(stage, sections, notes, _corr_display(corr))
        summary = {"n_subjects": len(matched), "unmatched_metrics": unmatched_m,
                   "unmatched_clinical": unmatched_c, "excluded": excluded, "group_cols": list(group_cols),
                   "metric_cols": list(metric_cols), "correlate_with": list(correlate_with),
                   "quality_cols": quality_cols, "quality_warnings": all_warnings, "notes": notes}
        (stage / "cohort_stats.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return {**summary, "group_comparisons": long, "correlations": corr, "out_dir": Path(out_dir)}

