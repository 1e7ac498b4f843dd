"""What a user sees in a browser: the MLflow UI after a search, and the Ray dashboard during one.

Debian's ``chromium`` driven by Playwright (never ``playwright install``: the system browser is
launched by path, headless). One small search serves the module: ``mona-tune search --dashboard``
as a subprocess, in a temporary HOME (Ray 2.60 starts a local cluster with token authentication
and writes its token to ``$HOME/.ray/auth_token``; the user's own ``~/.ray`` is never touched) and
a private cache holding a stand-in source model (the UI does not care how good it is; training
the real one would take a minute and a half on two cores).

- The dashboard test runs while that search runs: the cluster page asks for the token and shows
  no node without it; with the token (``ray get-auth-token``) it lists the node.
- The MLflow UI test runs after it: ``mona-tune ui`` on the search's store, the URL the search
  printed opens the runs (not MLflow 3's GenAI traces overview) with the searched values and the
  validation metric as columns; one click on the parent shows the trials nested under it; a
  trial's metric chart; the trials comparison the search logged to the parent run; the registered
  embedder with its alias ``best``.

Screenshots land in each test's tmp_path. Every process started here is stopped by its id.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

import services
from mona_tune.tracking import mlflow_runs as mr

pytestmark = pytest.mark.slow

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
NAME = "browser"
METRIC = "val_rel_l2"
EPOCHS = 8  # the search lasts ~30 s after the dashboard is up: time to look at it
SPACE = f"""
searched:
  lam: {{uniform: [0.0, 1.0]}}
  lr: {{choice: [3.0e-3, 1.0e-7]}}
fixed:
  warmup_epochs: 1
  epochs: {EPOCHS}
  batch_size: 16
  n_train: 60
  n_test: 16
  resolution: 29
  device: cpu
budget: {{num_samples: 6, max_concurrent: 2}}
scheduler: {{grace_period: 1, reduction_factor: 2}}
"""
N_TRIALS = 6
UI_TIMEOUT_MS = 60_000


# ---------------------------------------------------------------- browser
@pytest.fixture(scope="module")
def chromium() -> str:
    exe = shutil.which("chromium")
    if exe is None:
        pytest.skip("no chromium on this machine: install Debian's (apt-get install chromium); "
                    "the tests drive the system browser, never a downloaded one")
    return exe


@pytest.fixture(scope="module")
def browser(chromium):
    from playwright.sync_api import expect, sync_playwright  # the `test` extra

    expect.set_options(timeout=UI_TIMEOUT_MS)
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser):
    """A fresh browser profile (no cookies, no local storage): a user opening the URL first."""
    ctx = browser.new_context(viewport={"width": 1920, "height": 1080})
    ctx.set_default_timeout(UI_TIMEOUT_MS)
    try:
        yield ctx.new_page()
    finally:
        ctx.close()


# ---------------------------------------------------------------- the search
def _stand_in_source_model(cache: Path) -> None:
    """Fill the cache with the embedded source model (same cache key, same files) so that no
    trial process spends a minute and a half pretraining: the package's shipped copy, or where
    that does not apply (another timm) an untrained stand-in."""
    from mona_tune.models import source as src

    def untrained(model, data, recipe, progress, folder):
        return src._embedded_net(data.num_classes), {"heldout_accuracy": float("nan"),
                                                     "train_seconds": 0.0,
                                                     "stand_in": "tests/system/test_ui_browser.py"}

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MONA_TUNE_CACHE", str(cache))
        mp.setattr(src, "_pretrain", untrained)
        src.embedded_source_model(src.load_source_data("digits"), progress=False)


@dataclass
class Search:
    proc: subprocess.Popen
    base: Path
    log: Path
    env: dict
    uri: str

    @property
    def home(self) -> Path:
        return Path(self.env["HOME"])

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def dashboard_url(self) -> str:
        def printed():
            m = re.search(r"Ray dashboard: (http://\S+)", self.output())
            return m.group(1) if m else None

        return services.wait_for(printed, 180, "mona-tune search --dashboard", proc=self.proc,
                                 log=self.log)

    def finish(self, timeout: float = 300) -> str:
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the search did not end within {timeout:g} s\n" + self.output()[-3000:])
        assert self.proc.returncode == 0, self.output()[-3000:]
        return self.output()


@pytest.fixture(scope="module")
def search(chromium, tmp_path_factory):
    """``mona-tune search --dashboard`` started in the background; stopped (its whole process
    session: the driver and the Ray processes it started) at the end of the module."""
    base = tmp_path_factory.mktemp("ui-search")
    home, cache = base / "home", base / "cache"
    home.mkdir()
    _stand_in_source_model(cache)
    space = base / "space.yaml"
    space.write_text(textwrap.dedent(SPACE))
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE", "RAY_ADDRESS",
                        "MLFLOW_TRACKING_URI")}
    env.update(HOME=str(home), MONA_TUNE_CACHE=str(cache), PYTHONUNBUFFERED="1",
               MPLBACKEND="Agg", MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="true")
    uri = f"sqlite:///{base / 'mlflow.db'}"
    cmd = [sys.executable, "-m", "mona_tune.cli", "search", "--task", "darcy", "--space",
           str(space), "--name", NAME, "--search", "random", "--seed", "10", "--storage",
           str(base / "runs"), "--tracking-uri", uri, "--max-t", str(EPOCHS), "--quiet",
           "--dashboard", "--dashboard-port", str(services.free_port())]
    log = base / "search.log"
    proc = services.start(cmd, log, env=env, cwd=base)
    try:
        yield Search(proc, base, log, env, uri)
    finally:
        services.stop_session(proc)


# ---------------------------------------------------------------- the Ray dashboard
def test_dashboard_of_a_running_search_shows_the_cluster_with_the_token_only(search, page,
                                                                             tmp_path):
    import requests
    from playwright.sync_api import expect

    url = search.dashboard_url()
    out = search.output()
    assert url.startswith("http://127.0.0.1:"), out[-2000:]
    assert "token authentication is on" in out and "ray get-auth-token" in out, out[-2000:]

    # the token: where the README says, printed by `ray get-auth-token`, never by the search
    token_file = search.home / ".ray" / "auth_token"
    assert token_file.is_file(), "Ray did not write the token under $HOME/.ray"
    token = token_file.read_text().strip()
    got = subprocess.run([str(Path(sys.executable).parent / "ray"), "get-auth-token"],
                         env=search.env, capture_output=True, text=True, timeout=120)
    assert got.returncode == 0, got.stderr[-2000:]
    assert got.stdout.strip().splitlines()[-1] == token
    assert token not in search.output()

    # over HTTP: nothing without the token, the node with it
    api = f"{url}/nodes?view=summary"
    assert requests.get(api, timeout=20).status_code == 401
    assert requests.get(api, headers={"Authorization": "Bearer not-the-token"},
                        timeout=20).status_code == 403
    r = requests.get(api, headers={"Authorization": f"Bearer {token}"}, timeout=20)
    assert r.status_code == 200, r.text[:500]
    (node,) = r.json()["data"]["summary"]
    node_cell = f"{node['ip']} (Head)"  # the cluster table's IP column

    # a browser without the token: the token prompt, no node
    page.goto(f"{url}/#/cluster")
    expect(page.get_by_text("Authentication Token Required")).to_be_visible()
    expect(page.get_by_text("ray get-auth-token", exact=False).first).to_be_visible()
    page.wait_for_timeout(1500)  # what the page would have loaded by now
    assert page.get_by_text(node_cell).count() == 0
    page.screenshot(path=tmp_path / "dashboard-without-token.png")

    # a wrong token is refused; the user's token opens the cluster page
    prompt = page.get_by_placeholder("Enter your authentication token")
    prompt.fill("not-the-token")
    page.get_by_role("button", name="Submit").click()
    expect(page.get_by_text("Invalid authentication token")).to_be_visible()
    assert page.get_by_text(node_cell).count() == 0
    prompt.fill(token)
    page.get_by_role("button", name="Submit").click()
    expect(page.get_by_text(node_cell)).to_be_visible()
    expect(page.get_by_text("Authentication Token Required")).to_have_count(0)
    expect(page.get_by_text(node["hostname"], exact=True).first).to_be_visible()
    cookies = {c["name"]: c for c in page.context.cookies()}
    assert cookies["ray-authentication-token"]["httpOnly"]
    page.screenshot(path=tmp_path / "dashboard-with-token.png")

    assert search.proc.poll() is None, \
        "the search ended while the dashboard was being checked: make it last longer"


# ---------------------------------------------------------------- the MLflow UI
def _numbers(text: str) -> list[float]:
    return [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", text)]


def _column(page, key: str):
    """The runs table's header of a column (``metrics.`val_rel_l2```, ``params.`lam```)."""
    return page.locator(f'[role="columnheader"][col-id="{key}"]')


def _row_text(page, run_id: str) -> str:
    """The text of a run's row in the runs table (the grid draws a row in several parts)."""
    part = page.locator(f'[role="row"]:has(a[href*="/runs/{run_id}"])').first
    index = part.get_attribute("row-index")
    return " ".join(page.locator(f'[role="row"][row-index="{index}"]').all_inner_texts())


def test_mlflow_ui_opens_the_runs_of_the_search(search, page, tmp_path):
    from playwright.sync_api import expect

    out = search.finish()
    m = re.search(r"in the MLflow UI: (http://\S+)", out)
    assert m, out[-3000:]
    printed = m.group(1)
    assert "workflowType=machine_learning" in printed and "/runs?" in printed

    # the store: a model-training experiment, one parent, its trials, the comparison artifacts
    client = mr.get_client(search.uri)
    exp = client.get_experiment_by_name("mona-tune-darcy")
    assert exp.tags.get("mlflow.experimentKind") == "custom_model_development"
    eid = exp.experiment_id
    (parent,) = client.search_runs([eid], filter_string="tags.`mona.role` = 'search'")
    children = client.search_runs([eid], filter_string="tags.`mona.role` = 'trial'")
    assert len(children) == N_TRIALS
    searched = parent.data.params["searched"].split(",")
    assert searched == ["lam", "lr"]
    assert {"space.yaml", "curves.png", "trials.html", "trials.png"} <= {
        a.path for a in client.list_artifacts(parent.info.run_id)}
    exp_dir = search.base / "runs" / NAME
    assert (exp_dir / "curves.png").is_file() and (exp_dir / "trials.png").stat().st_size > 10_000
    html = (exp_dir / "trials.html").read_text()
    assert html.count('<tr class="') == N_TRIALS
    for c in children:
        assert c.data.tags["ray_trial_id"] in html and c.info.run_id in html
    best = next(c for c in children if c.data.tags.get("mona.best") == "true")

    port = services.free_port()
    base = f"http://127.0.0.1:{port}"
    ui_log = tmp_path / "ui.log"
    ui = services.start([sys.executable, "-m", "mona_tune.cli", "ui", "--tracking-uri",
                         search.uri, "--port", str(port)], ui_log,
                        env={**search.env, "HOME": str(search.home)})
    try:
        services.wait_for(lambda: services.http_ok(f"{base}/health"), 120, "mona-tune ui",
                          proc=ui, log=ui_log)

        # the URL the search printed (on this port): the runs, with the searched values and the
        # metric as columns, not the GenAI traces overview
        page.goto(base + "/#" + printed.split("#", 1)[1])
        expect(_column(page, f"metrics.`{METRIC}`")).to_be_visible()
        assert "/runs" in page.url and "workflowType=machine_learning" in page.url, page.url
        for key in searched:
            expect(_column(page, f"params.`{key}`")).to_be_visible()
        assert page.get_by_text("No data available for the selected time range").count() == 0
        assert page.get_by_text("0 traces").count() == 0
        parent_link = page.locator(f'a[href*="/runs/{parent.info.run_id}"]').first
        expect(parent_link).to_have_text(NAME)
        for c in children:  # collapsed under the parent
            expect(page.locator(f'a[href*="/runs/{c.info.run_id}"]')).to_have_count(0)
        page.screenshot(path=tmp_path / "mlflow-runs-collapsed.png")

        # one click on the parent's expander: every trial nested under it, with its values
        name_cell = page.locator(f'[role="gridcell"]:has(a[href*="/runs/{parent.info.run_id}"])')
        name_cell.locator("button").first.click()
        for c in children:
            expect(page.locator(f'a[href*="/runs/{c.info.run_id}"]').first).to_be_visible()
            row = _row_text(page, c.info.run_id)
            assert c.data.params["lam"] in row, (c.data.params, row)
            value = c.data.metrics[METRIC]
            assert any(math.isclose(x, value, rel_tol=1e-6) for x in _numbers(row)), (value, row)
        page.screenshot(path=tmp_path / "mlflow-runs-expanded.png")

        # the best trial's page: its metric chart
        page.locator(f'a[href*="/runs/{best.info.run_id}"]').first.click()
        page.get_by_role("tab", name="Model metrics").click()
        page.get_by_placeholder("Search metric charts").fill(METRIC)
        legend = page.get_by_text(f"{best.info.run_name} ({METRIC})", exact=True)
        expect(legend).to_be_visible()
        chart = page.locator(".js-plotly-plot", has=page.locator(".scatterlayer .trace"))
        expect(chart.first).to_be_visible()
        page.screenshot(path=tmp_path / "mlflow-trial-metric-chart.png")

        # the parent run's trials comparison, as MLflow shows the artifact
        page.goto(f"{base}/#/experiments/{eid}/runs/{parent.info.run_id}/artifacts/trials.html"
                  "?workflowType=machine_learning")
        table = page.frame_locator("iframe").locator("table#trials")
        expect(table.locator("tbody tr")).to_have_count(N_TRIALS)
        expect(table.locator("tbody tr.best")).to_contain_text(best.data.tags["ray_trial_id"])
        expect(table.locator("thead")).to_contain_text(f"best {METRIC}")
        page.screenshot(path=tmp_path / "mlflow-parent-trials-html.png")

        # the registry: the best trial's embedder, alias best
        page.goto(f"{base}/#/models/mona-darcy-embedder?workflowType=machine_learning")
        expect(page.get_by_text("mona-darcy-embedder", exact=True).first).to_be_visible()
        expect(page.get_by_text("@ best").first).to_be_visible()
        expect(page.get_by_role("link", name="Version 1")).to_be_visible()
        page.screenshot(path=tmp_path / "mlflow-registered-model.png")
    finally:
        services.stop_session(ui)


def test_existing_experiment_is_marked_model_training_once(tmp_path):
    """An experiment made before the kind tag existed gets it; a kind a user chose stays."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mr.get_client(uri)
    old = client.create_experiment("mona-tune-darcy")
    assert mr.ensure_experiment(uri, "darcy") == old
    assert client.get_experiment(old).tags["mlflow.experimentKind"] == "custom_model_development"
    client.set_experiment_tag(old, "mlflow.experimentKind", "genai_development")
    mr.ensure_experiment(uri, "darcy")
    assert client.get_experiment(old).tags["mlflow.experimentKind"] == "genai_development"
    new = mr.ensure_experiment(uri, "other")
    assert client.get_experiment(new).tags["mlflow.experimentKind"] == "custom_model_development"
