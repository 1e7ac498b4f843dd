"""The end of a search: every trial's validation curve (a PNG) and the printed summary."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mona_tune.tracking import mlflow_runs as mr

if TYPE_CHECKING:
    from mona_tune.config import SearchConfig
    from mona_tune.search.driver import SearchOutcome


def plot_curves(rows: list[dict], metric: str, outcomes: dict, best_trial: str | None,
                path: Path, title: str) -> Path:
    """All trials' validation curves; stage-1 epochs at x <= 0, early-stopped trials end in ×,
    failed and diverged ones in a red ×, the best trial drawn thick."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    any_positive = False
    for row in rows:
        df = row["df"]
        if df is None or metric not in getattr(df, "columns", []) or df.empty:
            continue
        df = df.dropna(subset=[metric])
        if df.empty:
            continue
        if "global_epoch" in df.columns and "stage" in df.columns:
            is2 = df["stage"] == 2
            s1 = int(df.loc[is2, "global_epoch"].min() - 1) if is2.any() \
                else int(df["global_epoch"].max())
            x = df["global_epoch"].astype(float) - s1
        else:
            x = df["stage2_epoch"].astype(float)
        y = df[metric].astype(float)
        any_positive = any_positive or bool((y > 0).all())
        outcome = outcomes.get(row["trial_id"], ("?",))[0]
        best = row["trial_id"] == best_trial
        label = row["trial_id"] + (" (best)" if best else "")
        lw, alpha, z = (2.6, 1.0, 3) if best else (1.1, 0.75, 2)
        s2 = (x > 0).to_numpy()
        line, = ax.plot(x[s2], y[s2], "-o", ms=2.5, lw=lw, alpha=alpha, label=label, zorder=z)
        if (~s2).any():  # stage 1, dashed, joined to the first stage-2 epoch
            k = int(s2.argmax()) + 1 if s2.any() else len(x)
            ax.plot(x.iloc[:k], y.iloc[:k], "--o", ms=2.0, lw=lw * 0.8, alpha=alpha * 0.8,
                    color=line.get_color(), zorder=z)
        if outcome == "stopped_early":
            ax.plot(x.iloc[-1], y.iloc[-1], "x", ms=9, mew=2, color=line.get_color(), zorder=4)
        elif outcome in ("failed", "diverged"):
            ax.plot(x.iloc[-1], y.iloc[-1], "x", ms=10, mew=2.5, color="red", zorder=4)
    ax.axvline(0.5, color="0.6", lw=0.8, ls="--")
    ax.set_xlabel("stage-2 epoch (stage-1 epochs at ≤ 0)")
    ax.set_ylabel(metric)
    if any_positive:
        ax.set_yscale("log")
    ax.set_title(title + "   (dashed: stage 1; × early-stopped; red ×: failed or diverged)",
                 fontsize=9)
    ax.grid(alpha=0.3)
    handles, _ = ax.get_legend_handles_labels()
    if handles and len(handles) <= 16:
        ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def ui_command(tracking_uri: str) -> str:
    if mr.is_sqlite(tracking_uri):
        return f"mona-tune ui --tracking-uri {shlex.quote(tracking_uri)}"
    return f"open {mr.redact(tracking_uri)} (the tracking server's own UI)"


def lost_node_trials(tracking_uri: str, experiment_id: str, parent_run_id: str,
                     lost: list) -> dict:
    """node id -> {"ip", "trials": trial id -> {"outcome", "now_on", "restored_from"}} for each
    lost node (``cluster.Node``): the trials an attempt of which ran there (``mona.node_ids``),
    where their latest attempt ran and the global epoch it continued from (None: from scratch)."""
    from mona_tune.search.trial import TAG_NODE_IDS

    out = {n.node_id: {"ip": n.ip, "trials": {}} for n in lost}
    for run in mr.child_runs(tracking_uri, experiment_id, parent_run_id):
        tags = run.data.tags
        ran_on = [x for x in tags.get(TAG_NODE_IDS, "").split(",") if x] \
            or [tags.get(mr.TAG_NODE_ID)]
        latest = tags.get(mr.TAG_NODE_ID)
        for node_id in set(ran_on) & out.keys():
            out[node_id]["trials"][tags.get(mr.TAG_TRIAL_ID)] = {
                "outcome": tags.get(mr.TAG_OUTCOME),
                "now_on": None if latest == node_id or not latest
                else f"{tags.get(mr.TAG_NODE_IP)} ({latest[:8]})",
                "restored_from": tags.get("mona.restored_from_global_epoch"),
            }
    return out


def _lost_node_line(node_id: str, info: dict) -> str:
    parts = []
    for trial, t in sorted(info["trials"].items()):
        if t["now_on"] is None:  # its latest attempt ran there, before the node was lost
            parts.append(f"{trial} ran there ({t['outcome'] or 'no outcome'})")
        else:
            parts.append(f"{trial} was running there and continued on {t['now_on']} "
                         + (f"from its checkpoint at global epoch {t['restored_from']}"
                            if t["restored_from"] is not None else "from scratch")
                         + f" ({t['outcome'] or 'no outcome'})")
    return (f"lost node {info['ip']} ({node_id}): alive when the search started, dead at its end; "
            + ("; ".join(parts) if parts else "no trial ran there"))


def print_summary(o: SearchOutcome, scfg: SearchConfig, metric_name: str, counts: dict,
                  say) -> None:
    say("")
    say(f"== search {o.name} done: " + ", ".join(f"{v} {k.replace('_', ' ')}"
                                                  for k, v in counts.items()))
    for trial, detail in sorted(o.details.items()):
        say(f"  {o.outcomes.get(trial)} {trial}: {detail}")
    for trial, run in sorted(o.lost_runs.items()):
        say(f"  lost trial {trial}: started just before the driver was interrupted, after Tune's "
            f"last snapshot, and run again under another id (with the same hyperparameters, "
            f"where the Optuna study held them); its MLflow run {run} was deleted (restorable)")
    if o.best_trial_id is None:
        say("no trial reported a validation metric; see the errors above and "
            f"{o.experiment_path}")
    else:
        m = o.best_metrics
        say(f"best trial {o.best_trial_id}: {o.metric} = {_fmt(m.get(o.metric))}"
            + (f", test_{metric_name} = {_fmt(m[f'test_{metric_name}'])}"
               if f"test_{metric_name}" in m else "")
            + f", source_probe_error = {_fmt(m.get('source_probe_error', 'n/a'))}")
        say("  hyperparameters: " + ", ".join(f"{k}={_fmt(v)}" for k, v in o.best_config.items()))
        say(f"  MLflow run: {o.best_run_id} (parent {o.parent_run_id})")
        if o.best_run_id:
            say(f"  embedder: runs:/{o.best_run_id}/{mr.EMBEDDER_ARTIFACT}"
                + (f"  = models:/{mr.registered_model_name(scfg.task)}@best (version "
                   f"{o.model_version})" if o.model_version else ""))
            if o.embedder_location:
                say(f"    stored in {o.embedder_location}")
            say(f"  export it: mona-tune best --name {o.name} --tracking-uri "
                f"{shlex.quote(mr.redact(scfg.tracking_uri))} --export DIR")
    if o.nodes:
        say(f"trials ran on {len(o.nodes)} node{'s' if len(o.nodes) > 1 else ''}: "
            + ", ".join(f"{k} ({v})" for k, v in sorted(o.nodes.items())))
    for node_id, info in sorted(o.lost_nodes.items()):
        say(_lost_node_line(node_id, info))
    say(f"validation curves: {o.curves_png}")
    say(f"MLflow UI: {ui_command(scfg.tracking_uri)}")
    t = o.timings
    parts = [f"{k.removesuffix('_s')} {v:.1f}s" for k, v in t.items() if isinstance(v, float)]
    say("time: " + ", ".join(parts))


# ---------------------------------------------------------------- the trials side by side
TRIALS_HTML = "trials.html"
TRIALS_PNG = "trials.png"
UI_URL = "http://127.0.0.1:5000"  # where `mona-tune ui` serves a local store by default
# MLflow 3's UI opens experiments in its GenAI mode (traces) unless the URL asks for the
# model-training one; a shared view (an experiment tag the UI reads) preselects the columns
ML_WORKFLOW = "workflowType=machine_learning"
SHARED_VIEW_TAG = "mlflow.sharedViewState."


def ui_base_url(tracking_uri: str) -> str:
    """The MLflow UI of a store: a tracking server's own address, else ``mona-tune ui``'s."""
    if tracking_uri.startswith(("http://", "https://")):
        return mr.redact(tracking_uri).rstrip("/")
    return UI_URL


def run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    return (f"{ui_base_url(tracking_uri)}/#/experiments/{experiment_id}/runs/{run_id}"
            f"?{ML_WORKFLOW}")


def trials_view(tracking_uri: str, experiment_id: str, search_name: str, searched: list[str],
                metric: str, test_key: str | None = None) -> str:
    """The MLflow UI URL of the search's runs: the experiment's runs (model-training mode), this
    search's parent with its trials nested under it, the searched hyperparameters, the metrics
    and the outcome as columns (a shared view stored as an experiment tag). Without the tag (it
    could not be written) the URL still opens the runs."""
    import json
    import re
    from urllib.parse import quote

    url = f"{ui_base_url(tracking_uri)}/#/experiments/{experiment_id}/runs?{ML_WORKFLOW}"
    key = "mona-" + re.sub(r"[^A-Za-z0-9_.-]", "_", search_name)[:200]
    columns = [f"params.`{k}`" for k in searched]
    columns += [f"metrics.`{m}`" for m in (metric, test_key, "source_probe_error",
                                           f"best_{metric}") if m]
    columns += [f"tags.`{mr.TAG_OUTCOME}`"]
    state = {
        "searchFilter": (f"tags.`{mr.TAG_SEARCH}` = '{search_name}'"
                         if "'" not in search_name and "\\" not in search_name else ""),
        "orderByKey": "attributes.start_time", "orderByAsc": False, "startTime": "ALL",
        "lifecycleFilter": "Active", "datasetsFilter": [], "modelVersionFilter": "All Runs",
        "selectedColumns": columns,
    }
    try:
        mr.retrying(mr.get_client(tracking_uri).set_experiment_tag, experiment_id,
                    SHARED_VIEW_TAG + key, json.dumps(state))
    except Exception as e:  # informational only
        import logging

        logging.getLogger(__name__).warning("could not store the MLflow UI view: %s", e)
        return url
    return f"{url}&viewStateShareKey={quote(key)}"


def _num(v: Any) -> float | None:
    import math

    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(float(v)) else None  # a diverged trial's ±inf: no value


def _trial_table(rows: list[dict], metric: str, mode: str, outcomes: dict,
                 test_key: str | None) -> list[dict]:
    """Per trial: id, config, best (stage 2 where known) and last validation metric, test
    metric, source-probe error, stage-2 epochs, outcome and its detail, run id."""
    out = []
    for row in rows:
        m = row.get("metrics") or {}
        last = _num(m.get(metric))
        best = None
        df = row.get("df")
        if df is not None and metric in getattr(df, "columns", []):
            part = df[df["stage"] == 2] if "stage" in df.columns and (df["stage"] == 2).any() \
                else df
            vals = [x for x in (_num(v) for v in part[metric].tolist()) if x is not None]
            if vals:
                best = min(vals) if mode == "min" else max(vals)
            if last is None:
                tail = [x for x in (_num(v) for v in df[metric].tolist()) if x is not None]
                last = tail[-1] if tail else None
        if best is None:
            best = last
        outcome, detail, run_id = (tuple(outcomes.get(row["trial_id"], ())) + (None,) * 3)[:3]
        out.append({"trial_id": row["trial_id"], "config": row.get("config") or {},
                    "best": best, "last": last,
                    "test": _num(m.get(test_key)) if test_key else None,
                    "probe": _num(m.get("source_probe_error")),
                    "epochs": _num(m.get("stage2_epoch")),
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
               f'{"" if v is None else html.escape(_fmt(v))}</td>'

    def val_cell(v: Any) -> str:
        x = _num(v)
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


def plot_trials(table: list[dict], path: Path, *, metric: str, searched: list[str],
                best_trial: str | None, title: str) -> Path:
    """One panel per searched hyperparameter: its value against the trial's last validation
    metric; completed ●, early-stopped ×, failed red × (above the others where it has no
    metric), the best trial ★."""
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(searched) or ["trial"]
    ncols = min(len(keys), 3)
    nrows = math.ceil(len(keys) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.4 * nrows), dpi=110,
                             squeeze=False)
    ys = [r["last"] for r in table if r["last"] is not None]
    log_y = bool(ys) and min(ys) > 0 and max(ys) / min(ys) > 20
    top = (max(ys) * (1.5 if log_y else 1.0) + (0.0 if log_y else 0.1 * (max(ys) - min(ys))
                                                 or 0.1 * abs(max(ys)) or 1.0)) if ys else 1.0
    styles = {"completed": dict(marker="o", color="tab:blue", label="completed"),
              "stopped_early": dict(marker="x", color="0.45", label="stopped early"),
              "failed": dict(marker="x", color="red", label="failed"),
              "diverged": dict(marker="x", color="darkorange", label="diverged")}
    for i, key in enumerate(keys):
        ax = axes[i // ncols][i % ncols]
        raw = [r["config"].get(key) if key != "trial" else n for n, r in enumerate(table)]
        nums = [_num(v) for v in raw]
        categorical = any(x is None and v is not None for x, v in zip(nums, raw))
        if categorical:
            cats = sorted({str(v) for v in raw}, key=str)
            xs = [cats.index(str(v)) for v in raw]
            ax.set_xticks(range(len(cats)), cats, fontsize=7)
        else:
            xs = nums
            pos = [x for x in xs if x is not None]
            if pos and min(pos) > 0 and max(pos) / min(pos) >= 20:
                ax.set_xscale("log")
        seen = set()
        for r, x in zip(table, xs):
            if x is None:
                continue
            st = dict(styles.get(r["outcome"], dict(marker=".", color="k", label="other")))
            label = st.pop("label")
            y = r["last"]
            if y is None:  # no metric (failed early): drawn above the others
                y = top
            ax.scatter([x], [y], s=36, label=None if label in seen else label, **st)
            seen.add(label)
            if r["trial_id"] == best_trial and r["last"] is not None:
                ax.scatter([x], [y], s=220, marker="*", facecolors="none",
                           edgecolors="goldenrod", linewidths=1.5,
                           label=None if "best" in seen else "best")
                seen.add("best")
        if log_y:
            ax.set_yscale("log")
        ax.set_xlabel(key)
        ax.set_ylabel(f"last {metric}")
        ax.grid(alpha=0.3)
        if i == 0:
            ax.legend(fontsize=7)
    for j in range(len(keys), nrows * ncols):
        axes[j // ncols][j % ncols].set_visible(False)
    fig.suptitle(f"{title}: searched values vs {metric}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def write_trials_report(rows: list[dict], out_dir: Path, *, metric: str, mode: str,
                        searched: list[str], outcomes: dict, best_trial: str | None,
                        title: str, test_key: str | None = None,
                        tracking_uri: str | None = None,
                        experiment_id: str | None = None) -> list[Path]:
    """``trials.html`` (every trial side by side) and ``trials.png`` (searched values against
    the metric) in ``out_dir``; returns the files written (the PNG is left out, with a warning,
    where it cannot be drawn)."""
    table = _trial_table(rows, metric, mode, outcomes, test_key)
    files = [write_trials_html(table, Path(out_dir) / TRIALS_HTML, metric=metric, mode=mode,
                               searched=searched, best_trial=best_trial, title=title,
                               test_key=test_key, tracking_uri=tracking_uri,
                               experiment_id=experiment_id)]
    try:
        files.append(plot_trials(table, Path(out_dir) / TRIALS_PNG, metric=metric,
                                 searched=searched, best_trial=best_trial, title=title))
    except Exception as e:  # the table matters more than the picture
        import logging

        logging.getLogger(__name__).warning("could not draw %s: %s", TRIALS_PNG, e)
    return files
