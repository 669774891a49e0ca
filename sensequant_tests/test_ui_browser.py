"""The Dagster UI as a quant uses it, in a real browser: Debian's chromium driven by Playwright against a
`dagster dev` (webserver + daemon, sensors running) on a temporary instance, synthetic bars, three
windows, two symbols registered.

The README's flow, ordered so that the two backfills share the daemon's 30 s loop:
1. the asset graph opens; `+key:student_model` in its selection shows the student and its upstream;
2. "Materialize all…" of that graph: in the partition dialog a new symbol is added with "Add a
   partition" (the `symbol_universe` sensor backfills its history), then one symbol and one window,
   "Launch 1 run": one run that writes the bars, the teacher and the student, watched to Success on its
   run page;
3. a backfill of 2 symbols x 2 windows of the training assets from the catalog, and the sensor's
   backfill of the new symbol, each watched to Succeeded on its backfill page;
4. the `student_evaluation` partition page and the `promotion_briefing` page (materialised from it)
   show their metadata;
5. automation follows with `production_models` and every symbol's `symbol_briefing` page (one run);
   the link in production's actions opens the added symbol's page, which shows its record.
The partition directories are checked on disk. Every request that leaves 127.0.0.1 is aborted. On a
failure a screenshot is saved under the test's tmp path and its path printed (BROWSER_TEST_SCREENSHOTS=1
also saves one per step).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from dagster import AssetKey, DagsterInstance, DagsterRunStatus
from dagster._core.execution.backfill import BulkActionsFilter, BulkActionStatus

from sensequant_assets.deployment.devserver import DagsterDev, write_instance_yaml

CHROMIUM = Path(os.environ.get("BROWSER_TEST_CHROMIUM", "/usr/bin/chromium"))
if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
    pytest.skip(
        f"no chromium at {CHROMIUM} (`apt-get install chromium`, as .ci/run does; or set "
        "BROWSER_TEST_CHROMIUM)",
        allow_module_level=True,
    )
pytest.importorskip("playwright", reason="playwright is not installed (`pip install -e '.[dev]'`)")
from playwright.sync_api import Locator, Page, Route, expect, sync_playwright  # noqa: E402

pytestmark = pytest.mark.browser

# Registered before the server starts: the universe sensor's first tick takes them as they are.
SYMBOLS = ["RELIANCE", "TCS"]
ADDED = "INFY"  # added in the UI: its history is the sensor's backfill
TRAINING = ["market_bars", "teacher_model", "teacher_labels", "student_model"]
TRAINING_FILES = ["bars.parquet", "model.pkl", "labels.csv.gz", "student/student_model.pkl"]
TIMEOUT_MS = 30_000
RUN_TIMEOUT_MS = 180_000


def _shift(day: date, months: int) -> date:
    m = day.year * 12 + day.month - 1 + months
    return date(m // 12, m % 12 + 1, 1)


def _windows(today: date) -> list[tuple[str, str]]:
    """The three complete half-year windows before today's: (first day, last day) of each."""
    current = date(today.year, 1 if today.month <= 6 else 7, 1)
    return [
        (_shift(current, k).isoformat(), (_shift(current, k + 6) - timedelta(days=1)).isoformat())
        for k in (-18, -12, -6)
    ]


WINDOWS = _windows(datetime.now(ZoneInfo("Asia/Kolkata")).date())  # the windows' timezone
FIRST, SECOND, THIRD = (w for w, _ in WINDOWS)


def _dir(artifacts: Path, symbol: str, window: str) -> Path:
    return artifacts / f"{symbol}_{window}_to_{dict(WINDOWS)[window]}"


@pytest.fixture
def page() -> Iterator[Page]:
    """Debian's chromium (Playwright cannot download a browser build here), started and stopped by this
    test: pytest-playwright's session fixtures keep Playwright's event loop running in the worker after
    the test, and every later `asyncio.run` there (Dagster's GraphQL test helper) then fails."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
        try:
            yield browser.new_context(viewport={"width": 1600, "height": 1000}).new_page()
        finally:
            browser.close()


@pytest.fixture
def dagster_ui(tmp_path: Path) -> Iterator[tuple[DagsterDev, Path]]:
    home, artifacts = tmp_path / "home", tmp_path / "models"
    write_instance_yaml(home)
    with DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions("symbols", SYMBOLS)
    env = {
        "SENSEQUANT_DATA_SOURCE": "synthetic",
        "SENSEQUANT_ARTIFACTS_DIR": str(artifacts),
        "SENSEQUANT_SYMBOLS": ",".join(SYMBOLS),
        "SENSEQUANT_START_DATE": FIRST,
        "SENSEQUANT_SENSOR_INTERVAL_SECONDS": "1",
        "SENSEQUANT_RUN_WORKERS": "1",  # two concurrent runs already use both cores of a small machine
    }
    with DagsterDev(home, env=env) as dev:
        yield dev, artifacts


class Flow:
    """The page, the server and the artifacts, with the waits and screenshots of the steps."""

    def __init__(self, page: Page, dev: DagsterDev, artifacts: Path, shots: Path) -> None:
        self.page, self.dev, self.artifacts, self.shots = page, dev, artifacts, shots
        self.every_step = os.environ.get("BROWSER_TEST_SCREENSHOTS") == "1"
        self.steps: list[tuple[str, float]] = []
        self.started = time.monotonic()

    def goto(self, path: str) -> None:
        self.page.goto(f"{self.dev.url}{path}")

    def step(self, name: str) -> None:
        self.steps.append((name, time.monotonic() - self.started))
        if self.every_step:
            self.screenshot(name)

    def screenshot(self, name: str) -> Path:
        self.shots.mkdir(parents=True, exist_ok=True)
        path = self.shots / f"{len(list(self.shots.iterdir())):02d}-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def instance(self) -> DagsterInstance:
        return DagsterInstance.from_config(str(self.dev.home))


def _block_outside(page: Page, blocked: list[str]) -> None:
    """Abort every request that does not go to 127.0.0.1 (only those are routed through Python)."""

    def abort(route: Route) -> None:
        blocked.append(route.request.url)
        route.abort()

    page.context.route(re.compile(r"^(?!https?://127\.0\.0\.1[:/])"), abort)


def _partition_dialog(page: Page) -> Locator:
    return page.get_by_role("dialog").filter(has_text="Launch runs to materialize")


def _choose_partitions(page: Page, symbols: list[str], windows: str) -> Locator:
    """In the open partition dialog: tick `symbols` in the symbol selector, type `windows`."""
    dialog = _partition_dialog(page)
    dialog.get_by_text("Select a partition or create one").first.click()
    dropdown = page.get_by_placeholder("Filter partitions")
    expect(dropdown).to_be_visible()
    for symbol in symbols:
        option = page.locator("label").filter(has_text=symbol).first
        option.click()
        expect(option.get_by_role("checkbox")).to_be_checked()
    dialog.get_by_text("Launch runs to materialize").first.click()  # closes the symbol dropdown
    # Its closing animation overlaps the window input: typing there before it is gone was flaky.
    expect(dropdown).to_be_hidden()
    window_input = dialog.get_by_placeholder(re.compile(r"^ex: "))
    window_input.fill(windows)
    window_input.press("Enter")
    count = len(symbols) * len(windows.split(","))
    expect(dialog.get_by_text(f"{count} partition{'s' if count > 1 else ''}", exact=True)).to_be_visible()
    return dialog


def _add_partition(page: Page, symbol: str) -> None:
    """Add `symbol` with the open partition dialog's "Add a partition" (it is not selected)."""
    _partition_dialog(page).get_by_role("button", name="Add a partition").click()
    create = page.get_by_role("dialog").filter(has=page.get_by_placeholder("name"))
    create.get_by_placeholder("name").fill(symbol)
    create.get_by_role("button", name="Save").click()
    expect(create).to_have_count(0)


def _follow_toast(page: Page, text: str) -> str:
    """Follow the "View" link of the toast that says `text` (a launched run or backfill); its path."""
    expect(page.get_by_text(re.compile(rf"^{re.escape(text)}")).first).to_be_visible()
    view = page.get_by_role("link", name="View", exact=True)
    path = view.get_attribute("href")
    view.click()
    return path


def _run_status(page: Page, timeout_ms: int) -> str:
    """The status on a run's page once it is terminal."""
    status = page.get_by_text(re.compile(r"^(Success|Failure|Canceled)$")).first
    expect(status).to_be_visible(timeout=timeout_ms)
    return status.inner_text().strip()


def _backfill_status(page: Page, timeout_ms: int) -> str:
    """The status on a backfill's page (its "Status" detail) once it is terminal."""
    detail = page.get_by_text("Status", exact=True).first.locator("xpath=..")
    status = detail.get_by_text(re.compile(r"^(Completed|Succeeded|Failed|Canceled)$"))
    expect(status).to_be_visible(timeout=timeout_ms)
    return status.inner_text().strip()


def _wait_for(condition: Callable[[], Any], timeout: float, what: str, step: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(step)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")


def _sensor_ticked(flow: Flow, name: str) -> bool:
    """Whether the daemon has finished a tick of sensor `name` (its state records the tick's end)."""
    with flow.instance() as instance:
        for state in instance.all_instigator_state():
            data = state.instigator_data
            if state.name == name and getattr(data, "last_tick_success_timestamp", None):
                return True
    return False


def _materialised_in_run(instance: DagsterInstance, run_id: str) -> set[str]:
    return {
        event.dagster_event.asset_key.to_user_string()
        for event in instance.all_logs(run_id)
        if event.dagster_event is not None and event.dagster_event.is_step_materialization
    }


def test_the_ui_materialises_backfills_adds_a_symbol_and_shows_the_results(
    page: Page, dagster_ui: tuple[DagsterDev, Path], tmp_path: Path
) -> None:
    dev, artifacts = dagster_ui
    flow = Flow(page, dev, artifacts, tmp_path / "screenshots")
    blocked: list[str] = []
    _block_outside(page, blocked)
    page.set_default_timeout(TIMEOUT_MS)
    # Assertions too (their default is 5 s): the graph is laid out in the browser, and the suite runs
    # two workers on two cores (pytest-xdist), so a page can take longer than that to draw.
    expect.set_options(timeout=TIMEOUT_MS)
    # A fresh instance greets its first visitor with a newsletter dialog, a second after any page loads;
    # "Skip" records that it was seen, as this does.
    dev.graphql("mutation { setNuxSeen }")
    try:
        _run_the_flow(flow)
    except BaseException:
        try:
            for dialog in page.get_by_role("dialog").all():
                print(f"\nopen dialog: {dialog.inner_text(timeout=2_000)!r}")
            print(f"\nscreenshot of the failure: {flow.screenshot('failure')}")
        except Exception as exc:  # a crashed page: the original error matters more
            print(f"\nno screenshot of the failure: {exc}")
        print(f"dagster dev log: {dev.log}")
        raise
    finally:
        print("\n" + "\n".join(f"{seconds:6.1f}s {name}" for name, seconds in flow.steps))
        print(f"requests blocked (not to 127.0.0.1): {sorted(set(blocked)) or 'none'}")


def _run_the_flow(flow: Flow) -> None:
    page = flow.page
    # 1. The asset graph: its two groups, then student_model and everything upstream of it.
    flow.goto("/asset-groups")
    graph = page.locator("foreignObject")
    for group in ("training", "evaluation"):
        expect(graph.get_by_text(group, exact=True).first).to_be_visible()
    flow.step("asset-graph")
    page.locator(".CodeMirror").first.click()  # the "Search and filter assets" selection
    page.keyboard.type("+key:student_model")
    page.keyboard.press("Enter")
    for name in TRAINING:
        expect(graph.get_by_text(name, exact=True).first).to_be_visible()
    expect(graph.get_by_text("student_evaluation", exact=True)).to_have_count(0)
    flow.step("upstream-graph")

    # 2. The README's one-click flow: "Materialize all…" of that graph, for one partition. First, in the
    # same dialog, a new symbol with "Add a partition": the symbol_universe sensor backfills its whole
    # history (added first, so that its backfill and step 3's wait for the same daemon iteration).
    # Symbols registered before the universe sensor's first tick count as already handled (they are
    # the deployment's starting universe), so wait for that tick before adding one.
    _wait_for(lambda: _sensor_ticked(flow, "symbol_universe"), 90, "the symbol_universe sensor's first tick")
    page.get_by_role("button", name=re.compile(r"Materialize all")).click()
    expect(
        _partition_dialog(page).get_by_text(f"Launch runs to materialize {len(TRAINING)} assets")
    ).to_be_visible()
    _add_partition(page, ADDED)
    with flow.instance() as instance:
        assert instance.get_dynamic_partitions("symbols") == [*SYMBOLS, ADDED]
    dialog = _choose_partitions(page, ["RELIANCE"], FIRST)
    flow.step("partition-dialog")
    dialog.get_by_role("button", name="Launch 1 run").click()
    run_id = _follow_toast(page, "Launched run").rsplit("/", 1)[-1]
    assert _run_status(page, RUN_TIMEOUT_MS) == "Success"
    flow.step("single-run")
    with flow.instance() as instance:
        run = instance.get_run_by_id(run_id)
        assert run is not None and run.status == DagsterRunStatus.SUCCESS
        assert run.tags["dagster/partition"] == f"RELIANCE|{FIRST}"
        assert _materialised_in_run(instance, run_id) == set(TRAINING)
    for name in TRAINING_FILES:
        assert (_dir(flow.artifacts, "RELIANCE", FIRST) / name).is_file(), name

    # 3. From the catalog, a backfill of 2 symbols x 2 windows of the training assets.
    flow.goto("/assets")
    for name in TRAINING:
        row = page.locator("[class*=VirtualizedAssetRow]").filter(has=page.get_by_text(name, exact=True))
        row.locator("label").first.click()  # its checkbox
        expect(row.get_by_role("checkbox")).to_be_checked()
    page.get_by_role("button", name=re.compile(rf"Materialize selected \({len(TRAINING)}\)")).click()
    dialog = _choose_partitions(page, SYMBOLS, f"{SECOND}, {THIRD}")
    flow.step("catalog-backfill-dialog")
    dialog.get_by_role("button", name="Launch backfill").click()
    backfill_path = _follow_toast(page, "Created backfill")
    flow.step("catalog-backfill-launched")
    flow.goto(backfill_path)
    assert _backfill_status(page, RUN_TIMEOUT_MS) == "Succeeded"
    flow.step("catalog-backfill-done")

    def sensor_backfill() -> str | None:
        with flow.instance() as instance:
            found = instance.get_backfills(
                filters=BulkActionsFilter(tags={"sensequant/trigger": "symbol_universe"}), limit=1
            )
        return found[0].backfill_id if found else None

    history = _wait_for(sensor_backfill, 60, f"the symbol_universe sensor's backfill of {ADDED}")
    flow.goto(f"/runs/b/{history}")
    assert _backfill_status(page, RUN_TIMEOUT_MS) == "Succeeded"
    flow.step("sensor-backfill-done")
    with flow.instance() as instance:
        catalog_backfill = instance.get_backfill(backfill_path.rstrip("/").rsplit("/", 1)[-1])
        assert catalog_backfill.status == BulkActionStatus.COMPLETED_SUCCESS
        assert catalog_backfill.tags.get("dagster/from_ui") == "true"
        sensor = instance.get_backfill(history)
        assert sensor.status == BulkActionStatus.COMPLETED_SUCCESS
        assert sensor.tags["sensequant/reason"] == f"history of new symbols {ADDED}"
    for symbol, windows in (("RELIANCE", WINDOWS), ("TCS", WINDOWS[1:]), (ADDED, WINDOWS)):
        for window, _ in windows:
            for name in TRAINING_FILES:
                assert (_dir(flow.artifacts, symbol, window) / name).is_file(), (symbol, window, name)
    assert not _dir(flow.artifacts, "TCS", FIRST).exists()  # never asked for
    for window in (SECOND, THIRD):  # the previous window's student scored on this one
        assert (_dir(flow.artifacts, ADDED, window) / "evaluation" / "metrics.json").is_file()

    # 4. The evaluation and briefing pages show their metadata.
    flow.goto(f"/assets/student_evaluation?view=partitions&partition={ADDED}%7C{SECOND}")
    expect(page.get_by_text(f"{ADDED}|{SECOND}", exact=True).first).to_be_visible()
    for label in ("auc", "ic", "log_loss", "model_partition"):
        expect(page.get_by_text(label, exact=True).first).to_be_visible()
    expect(page.get_by_text(f"{ADDED}|{FIRST}", exact=True).first).to_be_visible()  # the model scored
    flow.step("evaluation-page")
    flow.goto("/assets/promotion_briefing")
    page.get_by_role("button", name=re.compile(r"Materialize$")).click()
    _follow_toast(page, "Launched run")
    assert _run_status(page, RUN_TIMEOUT_MS) == "Success"
    flow.goto("/assets/promotion_briefing")
    for label in ("symbols", "decision_insufficient_data", "config_id", "briefing"):
        expect(page.get_by_text(label, exact=True).first).to_be_visible()
    page.get_by_text("[Show Markdown]").first.click()  # the briefing itself, per symbol
    markdown = page.get_by_role("dialog")
    expect(markdown.get_by_text(ADDED).first).to_be_visible()
    expect(markdown.get_by_text("INSUFFICIENT_DATA").first).to_be_visible()
    flow.step("briefing-page")
    assert (flow.artifacts / "briefings" / "promotion_briefing.md").is_file()

    # 5. Automation follows the briefing with production_models, then every symbol's page in one run;
    # production's actions link to them.
    def symbol_pages() -> dict[str, str] | None:
        with flow.instance() as instance:
            records = instance.fetch_materializations(AssetKey("symbol_briefing"), limit=10).records
        newest: dict[str, str] = {}
        for record in records:  # newest first
            newest.setdefault(record.partition_key, record.run_id)
        # All symbols, and from one run (a run writes every symbol's page).
        return newest if set(newest) == {*SYMBOLS, ADDED} and len(set(newest.values())) == 1 else None

    _wait_for(
        symbol_pages, 120, "every symbol's page (symbol_briefing), from one run, after production_models"
    )
    flow.goto("/assets/production_models")
    # The description is markdown: a bare <SYMBOL> was taken for an HTML tag and vanished.
    # (The page also holds the description where it is not shown: the first match may be hidden.)
    shown = page.get_by_text(re.compile(r"production/<SYMBOL>/current")).filter(visible=True)
    expect(shown.first).to_be_visible()
    page.get_by_role("link", name=ADDED, exact=True).click()  # the actions table, rendered inline
    expect(page).to_have_url(re.compile(rf"/assets/symbol_briefing\?view=partitions&partition={ADDED}$"))
    for label in ("decision", "page"):
        expect(page.get_by_text(label, exact=True).first).to_be_visible()
    expect(page.get_by_text("INSUFFICIENT_DATA", exact=True).first).to_be_visible()
    page.get_by_text("[Show Markdown]").first.click()
    symbol_page = page.get_by_role("dialog")
    expect(symbol_page.get_by_text("Out of sample, window by window").first).to_be_visible()
    expect(symbol_page.get_by_text("never promoted").first).to_be_visible()
    flow.step("symbol-page")
