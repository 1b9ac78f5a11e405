"""The static HTML leaderboard, opened in a real headless browser (Debian's chromium + chromedriver).

The page is built the way ``aimbench report --html`` builds it (records -> DuckDB -> leaderboard and
layer curves -> ``write_html``), then loaded from ``file://`` and checked for what a unit test
of the string cannot see: the inline script runs without errors, nothing is fetched from the
network, the embedded plots decode, and clicking a header sorts the rows numerically. The
module skips only where the browser, its driver or selenium is not installed.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aimbench.report.curves import curves_table, layer_curves
from aimbench.report.filters import Filters
from aimbench.report.html import write_html
from aimbench.report.views import leaderboard_view
from aimbench.store.db import connect
from tests.store.test_db import layer, make_record, save

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")

if not CHROMIUM.is_file() or not CHROMEDRIVER.is_file():
    if os.environ.get("CI"):
        pytest.fail("CI must provide Debian's chromium and chromium-driver (.ci/run installs them)", pytrace=False)
    pytest.skip(f"needs {CHROMIUM} and {CHROMEDRIVER} (apt-get install chromium chromium-driver)", allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip install -e '.[test]')")

# (backbone, task) -> (best-layer test score, last-layer test score); "vit-c" has no t2, so its
# rows have no mean and sort last. Scores under 10% make text order differ from numeric order
# ("9.0" > "60.0" as text), and so do the negative best − last gaps of the curves table
# ("-0.01" < "-0.06" as text): a sort that fell back to text would put rows wrongly.
SCORES = {
    ("vit-a", "t1"): (0.09, 0.10), ("vit-a", "t2"): (0.05, 0.03),
    ("vit-b", "t1"): (0.60, 0.55), ("vit-b", "t2"): (0.70, 0.76),
    ("vit-c <&>", "t1"): (0.90, 0.82),
}  # fmt: skip
BACKBONES = ["vit-a", "vit-b", "vit-c <&>"]


def layers(best: float, last: float) -> list[dict]:
    """Four single-block layers: block 2 wins on val with test ``best``; block 3 (the last) scores ``last``."""
    return [layer(0, 0.10, last / 2), layer(1, 0.20, last * 0.8), layer(2, 0.90, best), layer(3, 0.50, last)]


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("html")
    results = root / "results"
    for i, ((backbone, task), (best, last)) in enumerate(SCORES.items()):
        rows = layers(best, last)
        if backbone == "vit-b":  # vit-b's records kept intervals (±2 points); the others predate them
            rows = [{**row, "test_interval": {"low": row["test_score"] - 0.02, "high": row["test_score"] + 0.02}} for row in rows]
        save(results, make_record(backbone, task, 0, "2026-01-01T00:00:00.000000+00:00", f"{i:032x}", rows))
    con = connect(results)
    board, _ = leaderboard_view(con, Filters(), paper=False)
    curves = layer_curves(con, Filters())
    assert len(curves) == len(SCORES)  # the page really carries plots
    return write_html(root / "site", board, curves_table(curves), curves, "test records")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1024"):
        options.add_argument(argument)
    options.binary_location = str(CHROMIUM)  # with Service's path: selenium-manager never runs (no network)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def loaded(browser: Any, page: Path) -> Any:
    """The page freshly loaded (no sort state left from another test), with the logs of earlier loads drained."""
    browser.get_log("browser")
    browser.get_log("performance")
    browser.get(page.as_uri())
    assert browser.execute_script("return document.readyState") == "complete"
    return browser


def table_rows(driver: Any, table: str) -> list[dict[str, Any]]:
    """Each body row of ``table#<table>``: per header, the cell's text and its data-sort number (None where absent)."""
    return driver.execute_script("""
        var table = document.getElementById(arguments[0]);
        var names = Array.prototype.map.call(table.tHead.rows[0].cells, function (th) { return th.textContent; });
        return Array.prototype.map.call(table.tBodies[0].rows, function (tr) {
          var row = {};
          Array.prototype.forEach.call(tr.cells, function (td, j) {
            var raw = td.getAttribute("data-sort");
            row[names[j]] = {text: td.textContent, sort: raw === null ? null : parseFloat(raw)};
          });
          return row;
        });
    """, table)  # fmt: skip


def click_header(driver: Any, table: str, name: str) -> Any:
    """Click the header cell named ``name`` (a real mouse click through the driver) and return it."""
    from selenium.webdriver.common.by import By

    cells = driver.find_elements(By.CSS_SELECTOR, f"table#{table} thead th")
    headers = [th for th in cells if th.get_attribute("textContent") == name]
    assert len(headers) == 1, f"no single header {name!r} in table#{table}"
    headers[0].click()
    return headers[0]


def sort_states(driver: Any, table: str) -> dict[str, str]:
    """aria-sort per header of ``table#<table>``, for the headers that carry one."""
    return driver.execute_script("""
        var states = {};
        document.getElementById(arguments[0]).tHead.querySelectorAll("th").forEach(function (th) {
          if (th.hasAttribute("aria-sort")) { states[th.textContent] = th.getAttribute("aria-sort"); }
        });
        return states;
    """, table)  # fmt: skip


def assert_no_console_errors(driver: Any) -> None:
    severe = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    assert severe == [], f"console errors: {severe}"


def sorted_rows(rows: list[tuple[Any, float | None]], ascending: bool) -> list[Any]:
    """Row ids as the page must order them: by number, empty cells last in their original order."""
    present = sorted((r for r in rows if r[1] is not None), key=lambda r: r[1], reverse=not ascending)
    return [r[0] for r in present] + [r[0] for r in rows if r[1] is None]


def leaderboard_score(backbone: str, which: str, column: str) -> float | None:
    scores = {task: SCORES[(backbone, task)][which == "last layer"] for task in ("t1", "t2") if (backbone, task) in SCORES}
    if column == "mean":
        return sum(scores.values()) / 2 if len(scores) == 2 else None
    return scores.get(column)


def check_sorted(driver: Any, table: str, column: str, ids: tuple[str, str], expected: list[Any], ascending: bool) -> None:
    rows = table_rows(driver, table)
    assert [(row[ids[0]]["text"], row[ids[1]]["text"]) for row in rows] == expected
    keys = [row[column]["sort"] for row in rows]
    numbers = [k for k in keys if k is not None]
    assert not any(math.isnan(k) for k in numbers), keys
    assert numbers == sorted(numbers, reverse=not ascending) and keys == numbers + [None] * (len(keys) - len(numbers)), keys


# ---------------------------------------------------------------------------------------------


def test_page_loads_offline_without_errors(loaded: Any, page: Path) -> None:
    assert_no_console_errors(loaded)
    # every request the browser started (DevTools network log): the page itself and data: URIs only
    requested = []
    for entry in loaded.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            requested.append(message["params"]["request"]["url"])
    assert requested and requested[0] == page.as_uri(), requested
    assert [url for url in requested[1:] if not url.startswith("data:")] == [], requested
    resources = loaded.execute_script("return performance.getEntriesByType('resource').map(function (e) { return e.name; })")
    assert [url for url in resources if not url.startswith("data:")] == [], resources
    assert loaded.title == "aimbench leaderboard"


def test_leaderboard_rows_and_plots(loaded: Any) -> None:
    rows = table_rows(loaded, "leaderboard")
    assert len(rows) == 2 * len(BACKBONES)  # a best-layer and a last-layer row per backbone
    assert [r["backbone"]["text"] for r in rows] == [b for b in BACKBONES for _ in range(2)]  # "<&>" escaped, shown as text
    assert [r["layer"]["text"] for r in rows] == ["best layer", "last layer"] * len(BACKBONES)
    by_row = {(r["backbone"]["text"], r["layer"]["text"]): r for r in rows}
    assert by_row[("vit-b", "best layer")]["t1"] == {"text": "60.0 ±2.0 (L2)", "sort": pytest.approx(0.60)}
    assert by_row[("vit-b", "best layer")]["mean"] == {"text": "65.0 ±1.4", "sort": pytest.approx(0.65)}
    assert by_row[("vit-a", "best layer")]["t1"]["text"] == "9.0 ±? (L2)"
    assert by_row[("vit-c <&>", "best layer")]["t2"] == {"text": "–", "sort": None}
    assert by_row[("vit-c <&>", "best layer")]["mean"] == {"text": "–", "sort": None}
    assert len(table_rows(loaded, "curves")) == len(SCORES)
    images = loaded.execute_script("""
        return Array.prototype.map.call(document.images, function (img) {
          return {complete: img.complete, width: img.naturalWidth, height: img.naturalHeight, alt: img.alt,
                  data: img.src.indexOf("data:image/png;base64,") === 0};
        });
    """)  # fmt: skip
    assert sorted(image["alt"] for image in images) == ["layer curve: t1, linear probe", "layer curve: t2, linear probe"]
    for image in images:
        assert image["data"] and image["complete"] and image["width"] > 0 and image["height"] > 0, image


@pytest.mark.parametrize("column", ["mean", "t1", "t2"])
def test_clicking_a_leaderboard_header_sorts_numerically_and_clicking_again_reverses(loaded: Any, column: str) -> None:
    assert sort_states(loaded, "leaderboard") == {}
    rows = [((b, which), leaderboard_score(b, which, column)) for b in BACKBONES for which in ("best layer", "last layer")]
    for ascending in (True, False, True):
        header = click_header(loaded, "leaderboard", column)
        assert sort_states(loaded, "leaderboard") == {column: "ascending" if ascending else "descending"}  # the clicked one only
        assert header.get_attribute("aria-sort") == ("ascending" if ascending else "descending")
        check_sorted(loaded, "leaderboard", column, ("backbone", "layer"), sorted_rows(rows, ascending), ascending)
    assert_no_console_errors(loaded)


def test_the_curves_table_sorts_negative_gaps_numerically(loaded: Any) -> None:
    by_task = sorted(SCORES.items(), key=lambda item: (item[0][1], item[0][0]))  # the table's order: task, then backbone
    # make_record writes schema-2 records: their curves say their probe defaults predate protocol cards
    rows = [((task, f"{backbone} · protocol legacy"), best - last) for (backbone, task), (best, last) in by_task]
    assert [r[0] for r in rows] == [(r["task"]["text"], r["backbone"]["text"]) for r in table_rows(loaded, "curves")]
    for ascending in (True, False):
        click_header(loaded, "curves", "best − last")
        check_sorted(loaded, "curves", "best − last", ("task", "backbone"), sorted_rows(rows, ascending), ascending)
    assert sort_states(loaded, "leaderboard") == {}  # each table sorts on its own
    assert_no_console_errors(loaded)


def test_sorting_another_column_moves_the_marker(loaded: Any) -> None:
    click_header(loaded, "leaderboard", "mean")
    click_header(loaded, "leaderboard", "backbone")  # a text column: by name
    assert sort_states(loaded, "leaderboard") == {"backbone": "ascending"}
    names = [b for b in BACKBONES for _ in range(2)]
    assert [r["backbone"]["text"] for r in table_rows(loaded, "leaderboard")] == sorted(names)
    click_header(loaded, "leaderboard", "backbone")
    assert sort_states(loaded, "leaderboard") == {"backbone": "descending"}
    assert [r["backbone"]["text"] for r in table_rows(loaded, "leaderboard")] == sorted(names, reverse=True)
    assert_no_console_errors(loaded)


def test_the_heading_appears_once_and_a_score_shows_its_interval_on_hover(loaded: Any) -> None:
    headings = loaded.execute_script(
        "return Array.prototype.map.call(document.querySelectorAll('h1, h2'), function (h) { return h.textContent; })"
    )
    assert headings.count("aimbench leaderboard") == 1, headings
    hovers = loaded.execute_script("""
        return Array.prototype.map.call(document.querySelectorAll('table#leaderboard tbody td[title]'), function (td) { return td.title; });
    """)  # fmt: skip
    assert "95% interval 58.00–62.00 (bootstrap over test examples)" in hovers  # vit-b on t1, in full
    assert sum(text.startswith("no interval") for text in hovers) == 6  # vit-a and vit-c: records from before intervals
