"""Seeing a sweep: `trials`, `studies`, the HTML report and the MLflow UI, checked in a real browser."""

import csv
import io
import json
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from .conftest import ROOT, free_port, sweeper

#: Screenshots of the browser tests are kept here (git-ignored) for a person to look at.
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
#: A closed network: nothing in the browser may try to reach the internet.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-dev-shm-usage"]
needs_browser = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make test installs "
                                                            "Debian's chromium package with apt-get)")


@pytest.fixture(scope="module")
def report(fashion_study, tmp_path_factory):
    workdir, _ = fashion_study
    out = tmp_path_factory.mktemp("report") / "report.html"
    result = sweeper("report", "fashion", "--out", out, cwd=workdir)
    assert result.exit_code == 0, result.output
    return out, result


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def _page_with_error_log(browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors = []
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    page.on("pageerror", lambda error: errors.append(str(error)))
    return page, errors


def test_trials_lists_every_trial_best_first(fashion_study, store):
    workdir, _ = fashion_study
    rows = json.loads(sweeper("trials", "fashion", "--json", cwd=workdir).output)
    runs = store.search_runs([store.get_experiment_by_name("fashion").experiment_id], "tags.run_kind = 'trial'")
    assert sorted(r["run_id"] for r in rows) == sorted(r.info.run_id for r in runs)
    values = [r["objective"] for r in rows]
    assert values == sorted(values, reverse=True) and all(r["state"] == "complete" for r in rows)
    assert {"number", "seconds", "epochs", "learning_rate", "n_layers", "units_0"} <= set(rows[0])
    by_number = list(csv.DictReader(io.StringIO(sweeper("trials", "fashion", "--sort", "number", "--csv",
                                                        cwd=workdir).output)))
    assert [r["number"] for r in by_number] == ["0", "1", "2"]
    table = sweeper("trials", "fashion", cwd=workdir).output
    assert "Study fashion: maximize val_accuracy" in table and "complete" in table


def test_trials_refuses_json_and_csv_together(fashion_study):
    workdir, _ = fashion_study
    result = sweeper("trials", "fashion", "--json", "--csv", cwd=workdir)
    assert result.exit_code == 2 and result.output.strip().endswith("Error: --json and --csv cannot be used together")


def test_studies_lists_each_study_with_counts_and_best(fashion_study, store):
    workdir, _ = fashion_study
    [row] = json.loads(sweeper("studies", "--json", cwd=workdir).output)
    parent = store.search_runs([store.get_experiment_by_name("fashion").experiment_id], "tags.run_kind = 'search'")[0]
    assert row["study"] == "fashion" and row["engine"] == "optuna" and row["complete"] == 3
    assert row["best"] == pytest.approx(parent.data.metrics["best_val_accuracy"])
    assert str(row["best_trial"]) == parent.data.tags["best_trial_number"]


def test_report_draws_every_figure_and_logs_the_page_on_the_search_run(report, store):
    out, result = report
    page = out.read_text()
    for key in ("optimization_history", "param_importances", "parallel_coordinate", "slice", "learning_curves",
                "confusion_matrix", "per_class_accuracy"):
        assert f'id="plot-{key}"' in page, key
    assert not re.search(r"<(script|link)[^>]+(src|href)=", page)  # plotly.js inlined: opens without a network
    assert "Not drawn" not in page and f"Wrote {out}: 7 figures" in result.output
    parent = store.search_runs([store.get_experiment_by_name("fashion").experiment_id], "tags.run_kind = 'search'",
                               order_by=["attributes.start_time DESC"])[0]
    assert [a.path for a in store.list_artifacts(parent.info.run_id, "report")] == ["report/report.html"]


@needs_browser
def test_the_report_renders_in_a_browser_without_errors(report, browser):
    out, _ = report
    page, errors = _page_with_error_log(browser)
    page.goto(out.as_uri())
    plots = page.locator(".js-plotly-plot")
    plots.last.locator(".main-svg").first.wait_for(timeout=30_000)
    assert plots.count() == 7
    for i in range(plots.count()):  # no empty plot container: each drew its SVG and has marks in it
        assert plots.nth(i).locator(".main-svg").count() >= 1
        assert plots.nth(i).locator("path, rect, text").count() > 10
    assert page.locator("#page-errors").is_hidden()
    page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
    assert errors == []


@needs_browser
def test_sweeper_ui_shows_the_search_run_with_its_trials_and_the_report(fashion_study, store, report, browser,
                                                                        tmp_path):
    workdir, _ = fashion_study
    port, log = free_port(), tmp_path / "ui.log"
    with open(log, "w") as output:
        server = subprocess.Popen([sys.executable, "-m", "sweeper", "ui", "--port", str(port), "--study", "fashion"],
                                  cwd=workdir, stdout=output, stderr=subprocess.STDOUT)
    try:
        url = _wait_for_study_url(server, port, log)
        experiment = store.get_experiment_by_name("fashion")
        assert url == f"http://127.0.0.1:{port}/#/experiments/{experiment.experiment_id}/runs"
        parent = store.search_runs([experiment.experiment_id], "tags.run_kind = 'search'")[0]
        page, _ = _page_with_error_log(browser)
        page.goto(url)
        page.get_by_text(parent.info.run_name).first.wait_for(timeout=60_000)
        page.locator("[data-component-id*='runnamecellrenderer']").first.click()  # expand the search run
        for number in range(3):
            page.get_by_text(f"trial-{number:03d}", exact=True).first.wait_for(timeout=30_000)
        page.screenshot(path=str(ARTIFACTS / "mlflow-ui.png"))
        run_id = re.search(r"search run (\w+)", report[1].output).group(1)
        page.goto(f"{url.removesuffix('/runs')}/runs/{run_id}/artifacts/report/report.html")
        assert _plots_drawn_in_frames(page) == 7  # the report's figures, drawn inside the UI's artifact view
        page.screenshot(path=str(ARTIFACTS / "mlflow-ui-report.png"))
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert _stops_answering(port), "the MLflow server outlived `sweeper ui`"


def _stops_answering(port: int, within_s: float = 30) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            return True
        time.sleep(0.5)
    return False


def _plots_drawn_in_frames(page, within_s: float = 60) -> int:
    """Plot containers that drew their SVG, in any frame of the page, once they stop increasing."""
    deadline, drawn = time.monotonic() + within_s, -1
    while time.monotonic() < deadline:
        now = sum(frame.locator(".js-plotly-plot:has(.main-svg)").count() for frame in page.frames)
        if now == drawn and now > 0:
            return now
        drawn = now
        time.sleep(2)
    return drawn


def _wait_for_study_url(server, port: int, log: Path) -> str:
    """The study's URL as `sweeper ui` printed it, once the server answers."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert server.poll() is None, f"sweeper ui exited: {log.read_text()}"
        found = re.search(r"Study fashion: (\S+)", log.read_text())
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read()
        except OSError:
            time.sleep(0.5)
            continue
        assert found, log.read_text()
        return found.group(1)
    raise AssertionError(f"the MLflow UI did not answer within 2 minutes: {log.read_text()}")


def test_ui_on_a_taken_port_is_one_error_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = sweeper("ui", "--port", port, cwd=tmp_path)
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: port {port} on 127.0.0.1 is already in use; choose another with --port"


def test_report_of_an_unknown_study(fashion_study, tmp_path):
    workdir, _ = fashion_study
    result = sweeper("report", "nope", "--out", tmp_path / "r.html", cwd=workdir)
    assert result.exit_code == 1 and not (tmp_path / "r.html").exists()
    assert result.output.startswith("Error: no study 'nope' in the MLflow store")


def test_optuna_dashboard_reads_the_study_storage(fashion_study, tmp_path):
    workdir, _ = fashion_study
    port = free_port()
    with open(tmp_path / "dashboard.log", "w") as output:
        dashboard = subprocess.Popen([str(Path(sys.executable).parent / "optuna-dashboard"),
                                      "mlruns/optuna/journal.log", "--host", "127.0.0.1", "--port", str(port)],
                                     cwd=workdir, stdout=output, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                studies = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5).read())
                break
            except OSError:
                assert time.monotonic() < deadline and dashboard.poll() is None, (tmp_path / "dashboard.log").read_text()
                time.sleep(0.5)
        [study] = studies["study_summaries"]
        assert study["study_name"] == "fashion" and study["directions"] == ["maximize"]
    finally:
        dashboard.terminate()
        dashboard.wait(timeout=30)
