"""Every trial of a search side by side: ``trials.html`` (a sortable table) and ``trials.png``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from mona_tune.report.figures import plot_trials
from mona_tune.report.links import run_url
from mona_tune.report.values import fmt, num

TRIALS_HTML = "trials.html"
TRIALS_PNG = "trials.png"


def trial_table(rows: list[dict], metric: str, mode: str, outcomes: dict,
                 test_key: str | None) -> list[dict]:
    """Per trial: id, config, best (stage 2 where known) and last validation metric, test
    metric, source-probe error, stage-2 epochs, outcome and its detail, run id."""
    out = []
    for row in rows:
        m = row.get("metrics") or {}
        last = num(m.get(metric))
        best = None
        df = row.get("df")
        if df is not None and metric in getattr(df, "columns", []):
            part = df[df["stage"] == 2] if "stage" in df.columns and (df["stage"] == 2).any() \
                else df
            vals = [x for x in (num(v) for v in part[metric].tolist()) if x is not None]
            if vals:
                best = min(vals) if mode == "min" else max(vals)
            if last is None:
                tail = [x for x in (num(v) for v in df[metric].tolist()) if x is not None]
                last = tail[-1] if tail else None
        if best is None:
            best = last
        outcome, detail, run_id = (tuple(outcomes.get(row["trial_id"], ())) + (None,) * 3)[:3]
        out.append({"trial_id": row["trial_id"], "config": row.get("config") or {},
                    "best": best, "last": last,
                    "test": num(m.get(test_key)) if test_key else None,
                    "probe": num(m.get("source_probe_error")),
                    "epochs": num(m.get("stage2_epoch")),
                    "outcome": outcome or "unknown", "detail": detail or "", "run_id": run_id})
    return out


_SORT_JS = """
document.querySelectorAll('th').forEach((th, col) => th.addEventListener('click', () => {
  const body = th.closest('table').tBodies[0];
  const asc = th.dataset.dir !== 'asc';
  th.closest('tr').querySelectorAll('th').forEach(h => delete h.dataset.dir);
  th.dataset.dir = asc ? 'asc' : 'desc';
  const key = tr => { const c = tr.cells[col]; const v = c.dataset.v;
    return v === undefined ? c.textContent : (v === '' ? NaN : parseFloat(v)); };
  [...body.rows].sort((a, b) => {
    let x = key(a), y = key(b);
    if (typeof x === 'number' || typeof y === 'number') {
      if (isNaN(x)) return 1; if (isNaN(y)) return -1; return asc ? x - y : y - x; }
    return asc ? String(x).localeCompare(y) : String(y).localeCompare(x);
  }).forEach(tr => body.appendChild(tr));
}));
"""


# long: the page is written in the order it reads (head, table header, one row per trial)
def write_trials_html(table: list[dict], path: Path, *, metric: str, mode: str,
                      searched: list[str], best_trial: str | None, title: str,
                      test_key: str | None = None, tracking_uri: str | None = None,
                      experiment_id: str | None = None) -> Path:
    """One self-contained HTML page: a table of every trial (sortable by a click on a column
    header), best validation metric first, the best trial in bold."""
    import html

    sign = 1 if mode == "min" else -1
    table = sorted(table, key=lambda r: (r["best"] is None, sign * (r["best"] or 0.0)))

    def num_cell(v: float | None) -> str:
        return f'<td class="n" data-v="{"" if v is None else repr(v)}">' \
               f'{"" if v is None else html.escape(fmt(v))}</td>'

    def val_cell(v: Any) -> str:
        x = num(v)
        if x is not None:
            return num_cell(x)
        return f"<td>{html.escape('' if v is None else str(v))}</td>"

    heads = ["trial", *searched, f"best {metric}", f"last {metric}",
             *([test_key] if test_key else []), "source_probe_error", "stage-2 epochs",
             "outcome", "MLflow run"]
    lines = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}: trials</title>",
        "<style>body{font:14px sans-serif;margin:1em}table{border-collapse:collapse}"
        "th,td{border:1px solid #ccc;padding:3px 8px}th{background:#eee;cursor:pointer;"
        "user-select:none}th[data-dir=asc]::after{content:' \\25B2'}"
        "th[data-dir=desc]::after{content:' \\25BC'}td.n{text-align:right;"
        "font-variant-numeric:tabular-nums}tr.best{font-weight:bold;background:#eef7ee}"
        "tr.stopped_early td{color:#666}tr.failed td,tr.diverged td{color:#b00}"
        "</style></head><body>",
        f"<h2>{html.escape(title)}: {len(table)} trials</h2>",
        f"<p>Sorted by the best stage-2 <b>{html.escape(metric)}</b> ({mode}); click a column "
        "header to sort by it. <i>last</i> is the value Tune ranks trials by; the best trial "
        "is in bold. Run links open the MLflow UI (<code>mona-tune ui</code>).</p>",
        '<table id="trials"><thead><tr>'
        + "".join(f"<th>{html.escape(h)}</th>" for h in heads) + "</tr></thead><tbody>",
    ]
    for r in table:
        cls = r["outcome"] + (" best" if r["trial_id"] == best_trial else "")
        cells = [f"<td>{html.escape(str(r['trial_id']))}</td>"]
        cells += [val_cell(r["config"].get(k)) for k in searched]
        cells += [num_cell(r["best"]), num_cell(r["last"])]
        if test_key:
            cells.append(num_cell(r["test"]))
        cells += [num_cell(r["probe"]), num_cell(r["epochs"]),
                  f'<td title="{html.escape(r["detail"])}">{html.escape(r["outcome"])}</td>']
        if r["run_id"] and tracking_uri and experiment_id:
            href = html.escape(run_url(tracking_uri, experiment_id, r["run_id"]))
            cells.append(f'<td><a href="{href}" target="_blank" rel="noopener">'
                         f'{html.escape(r["run_id"])}</a></td>')
        else:
            cells.append(f"<td>{html.escape(r['run_id'] or '')}</td>")
        lines.append(f'<tr class="{html.escape(cls)}">' + "".join(cells) + "</tr>")
    lines += ["</tbody></table>", f"<script>{_SORT_JS}</script>", "</body></html>"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_trials_report(rows: list[dict], out_dir: Path, *, metric: str, mode: str,
                        searched: list[str], outcomes: dict, best_trial: str | None,
                        title: str, test_key: str | None = None,
                        tracking_uri: str | None = None,
                        experiment_id: str | None = None) -> list[Path]:
    """``trials.html`` (every trial side by side) and ``trials.png`` (searched values against
    the metric) in ``out_dir``; returns the files written (the PNG is left out, with a warning,
    where it cannot be drawn)."""
    table = trial_table(rows, metric, mode, outcomes, test_key)
    files = [write_trials_html(table, Path(out_dir) / TRIALS_HTML, metric=metric, mode=mode,
                               searched=searched, best_trial=best_trial, title=title,
                               test_key=test_key, tracking_uri=tracking_uri,
                               experiment_id=experiment_id)]
    try:
        files.append(plot_trials(table, Path(out_dir) / TRIALS_PNG, metric=metric,
                                 searched=searched, best_trial=best_trial, title=title))
    except Exception as e:  # the table matters more than the picture
        logging.getLogger(__name__).warning("could not draw %s: %s", TRIALS_PNG, e)
    return files
