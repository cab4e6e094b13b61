"""The live page in headless Chromium, against a real `smlogger run --simulate` process.

Needs Debian's `chromium` and `chromium-driver`; Selenium is pointed at both explicitly so it
never tries to download a browser or a driver.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote

import pytest
from helpers import MIN_WAIT_S, free_port
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver import Chrome as WebDriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from smlogger.live import LiveState
from smlogger.reading import Reading
from smlogger.simulate import make_meter
from smlogger.store import Store, open_database
from smlogger.web import WebServer, build_app

pytestmark = pytest.mark.slow  # headless Chromium against a real `smlogger run` process

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SEED = "browser-test"
TOKEN = "page-t\u00f6ken"
PREFILL_DAYS = 8


@dataclass
class Logger:
    url: str  # page URL including the token
    base: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path


def prefill(data_dir: Path, days: int) -> str:
    """`days` of one-minute readings of the simulated meter that the logger will then run, so
    the charts have a history; the registers are shifted to end where the live meter starts."""
    meter = make_meter("full", seed=SEED)
    end = datetime.now(timezone.utc).replace(second=0, microsecond=0) - timedelta(minutes=2)
    samples = []
    for minute in range(days * 1440, -1, -1):
        when = end - timedelta(minutes=minute)
        state = meter.sample(when)
        samples.append((when, state, meter.registers.import_wh, meter.registers.export_wh))
    shift = samples[-1][2] / 1000 - meter.profile.start_import_kwh

    def readings() -> Iterator[Reading]:
        for when, state, import_wh, _ in samples:
            yield Reading(
                meter_id=meter.meter_id,
                time=when,
                values={},
                e_sum=import_wh / 1000 - shift,
                p_sum=state.total,
                p_L1=state.power[0],
                p_L2=state.power[1],
                p_L3=state.power[2],
                u_L1=state.voltage[0],
                u_L2=state.voltage[1],
                u_L3=state.voltage[2],
                i_L1=state.current[0],
                i_L2=state.current[1],
                i_L3=state.current[2],
                freq=state.frequency,
            )

    store = Store(open_database(None, data_dir), spool_dir=data_dir / "prefill-spool")
    try:
        assert store.bulk_load(readings()) == len(samples)
    finally:
        store.close()
    return meter.meter_id


def start_logger(args: list[str], data_dir: Path, token: str | None = None) -> Logger:
    port = free_port()
    log = data_dir / "logger.log"
    command = [
        sys.executable,
        "-m",
        "smlogger",
        "run",
        *args,
        "--data-dir",
        str(data_dir),
        "--http",
        f"127.0.0.1:{port}",
    ]
    if token:
        command += ["--http-token", token]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            pytest.fail(f"smlogger run exited with {process.returncode}:\n{log.read_text()}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz", headers={"X-Token": token or ""})
            status = conn.getresponse().status
            conn.close()
            if status == 200:
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"smlogger run did not serve /healthz in 30 s:\n{log.read_text()}")
        time.sleep(0.1)
    url = base + "/" + (f"?token={quote(token)}" if token else "")
    return Logger(url, base, port, process, log)


def stop_logger(logger: Logger) -> None:
    logger.process.terminate()
    try:
        code = logger.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        logger.process.kill()
        logger.process.wait()
        pytest.fail(f"smlogger run did not stop on SIGTERM:\n{logger.log.read_text()}")
    assert code == 0, logger.log.read_text()


@pytest.fixture(scope="module")
def logger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Logger]:
    data = tmp_path_factory.mktemp("logger")
    prefill(data, PREFILL_DAYS)
    args = ["--simulate", "--profile", "full", "--seed", SEED, "--interval", "1"]
    running = start_logger(args, data, TOKEN)
    yield running
    stop_logger(running)


def make_driver(*, javascript: bool = True, width: int = 1280, height: int = 1600) -> WebDriver:
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            pytest.fail(f"{path} missing: apt-get install {package}")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--window-size={width},{height}",
        "--lang=en-US",
        "--disable-extensions",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-sync",
    ):
        options.add_argument(arg)
    if not javascript:
        options.add_experimental_option(
            "prefs", {"profile.managed_default_content_settings.javascript": 2}
        )
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    driver = make_driver()
    yield driver
    driver.quit()


def console_problems(driver: WebDriver) -> list[dict[str, Any]]:
    """The console's warnings and errors, except requests the browser itself cancelled.

    net::ERR_ABORTED is Chromium's word for a request cancelled on the client: the page never
    aborts one (no AbortController), so it is a navigation or reload cutting off the event
    stream or a fetch under way, which a loaded machine makes likelier. A request the server
    fails or refuses reads differently (a status, ERR_CONNECTION_REFUSED, ...) and still counts.
    """
    entries: list[dict[str, Any]] = driver.get_log("browser")  # type: ignore[no-untyped-call]
    return [
        e
        for e in entries
        if e.get("level") in ("SEVERE", "WARNING")
        and "net::ERR_ABORTED" not in str(e.get("message", ""))
    ]


def wait_for(driver: WebDriver, timeout: float, what: str, check: Callable[[], Any]) -> Any:
    # (at least MIN_WAIT_S: the wait ends when the page is there; Chromium, the logger and
    # pytest share two cores in CI)
    timeout = max(timeout, MIN_WAIT_S)
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.05).until(lambda _: check())
    except TimeoutException:
        logs = driver.get_log("browser")  # type: ignore[no-untyped-call]
        pytest.fail(f"within {timeout} s: {what}; console: {logs}")


def tile_texts(driver: WebDriver) -> dict[str, str]:
    texts: dict[str, str] = driver.execute_script(
        "const o = {}; document.querySelectorAll('[data-f]').forEach("
        "  (e) => { o[e.dataset.f] = e.textContent; }); return o;"
    )
    return texts


def transport(driver: WebDriver) -> str | None:
    return driver.find_element(By.TAG_NAME, "body").get_attribute("data-transport")


def displayed(driver: WebDriver, css: str) -> bool:
    return bool(driver.find_element(By.CSS_SELECTOR, css).is_displayed())


def option_values(select: Select) -> list[str]:
    return sorted(str(o.get_attribute("value")) for o in select.options)


def chart_points(driver: WebDriver, chart: str) -> int:
    value = driver.find_element(By.CSS_SELECTOR, f"#{chart} canvas").get_attribute("data-points")
    return int(value or 0)


# the light theme's accent colour #2563eb: pixels of that colour are drawn data, not axes
INK_PIXELS = """
const canvas = document.querySelector(arguments[0] + ' canvas');
const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
let n = 0;
for (let i = 0; i < data.length; i += 4) {
  if (data[i + 3] > 200 && Math.abs(data[i] - 37) < 40 && Math.abs(data[i + 1] - 99) < 40
      && Math.abs(data[i + 2] - 235) < 40) n++;
}
return n;
"""


def history_span_loaded(driver: WebDriver, seconds: float) -> Callable[[], bool]:
    """True once the page fetched /api/history for a range `seconds` long and drew it."""

    def check() -> bool:
        spans: list[float] = driver.execute_script(
            "return performance.getEntriesByType('resource')"
            "  .filter((r) => r.name.includes('/api/history?'))"
            "  .map((r) => new URL(r.name).searchParams)"
            "  .map((q) => Number(q.get('to')) - Number(q.get('from')));"
        )
        chart = driver.find_element(By.ID, "history-chart")
        loading = "loading" in (chart.get_attribute("class") or "")
        return bool(spans) and abs(spans[-1] - seconds) < 5 and not loading

    return check


def test_live_page(browser: WebDriver, logger: Logger, tmp_path: Path) -> None:
    browser.get(logger.url)
    # first paint comes from the server: numbers before any script ran
    first = tile_texts(browser)
    assert first["p_sum"] not in ("", "\u2013")
    assert first["u_L1"] not in ("", "\u2013") and first["freq"] not in ("", "\u2013")
    meter_id = make_meter("full", seed=SEED).meter_id
    assert browser.find_element(By.ID, "meter").get_attribute("value") == meter_id

    # live tiles change within 3 s (pushed over SSE)
    wait_for(browser, 3, "live tiles change", lambda: tile_texts(browser) != first)
    wait_for(browser, 5, "the page uses SSE", lambda: transport(browser) == "sse")
    link = browser.find_element(By.ID, "link")
    assert link.get_attribute("data-state") == "connected"
    assert "CRC errors 0.00 %" in link.text
    assert "updated" in browser.find_element(By.ID, "age").text

    # the history chart draws the stored data (default range: 24 h)
    wait_for(browser, 10, "history chart", lambda: chart_points(browser, "history-chart") > 0)
    assert browser.execute_script(INK_PIXELS, "#history-chart") > 200
    day_points = chart_points(browser, "history-chart")
    assert day_points >= 1000  # one reading a minute for a day, at most 2000 points

    # switching range fetches and draws that range
    for name, span in [("week", 7 * 86400), ("hour", 3600), ("year", 365 * 86400)]:
        browser.find_element(By.CSS_SELECTOR, f'[data-range="{name}"]').click()
        wait_for(browser, 10, f"range {name} loaded", history_span_loaded(browser, span))
        button = browser.find_element(By.CSS_SELECTOR, f'[data-range="{name}"]')
        assert button.get_attribute("aria-pressed") == "true"
        wait_for(browser, 5, f"{name} chart", lambda: chart_points(browser, "history-chart") > 0)
    assert 0 < chart_points(browser, "history-chart") < day_points  # a year is coarser

    # energy view of the same range
    browser.find_element(By.CSS_SELECTOR, '[data-range="day"]').click()
    browser.find_element(By.CSS_SELECTOR, '[data-series="energy"]').click()
    wait_for(browser, 10, "energy chart", lambda: chart_points(browser, "history-chart") > 0)
    browser.find_element(By.CSS_SELECTOR, '[data-series="power"]').click()

    # drag to zoom, then reset
    wait_for(browser, 10, "day chart", lambda: chart_points(browser, "history-chart") >= 1000)
    canvas = browser.find_element(By.CSS_SELECTOR, "#history-chart canvas")
    drag = ActionChains(browser).move_to_element_with_offset(canvas, -200, 0)
    drag.click_and_hold().move_by_offset(250, 0).release().perform()
    reset = browser.find_element(By.ID, "zoom-reset")
    wait_for(browser, 5, "zoomed in", reset.is_displayed)
    wait_for(
        browser, 10, "zoomed chart", lambda: 0 < chart_points(browser, "history-chart") < day_points
    )
    reset.click()
    wait_for(browser, 5, "zoom reset", lambda: not reset.is_displayed())

    # consumption bars, daily and monthly
    wait_for(browser, 10, "daily bars", lambda: chart_points(browser, "consumption-chart") >= 8)
    assert browser.execute_script(INK_PIXELS, "#consumption-chart") > 200
    assert "Total" in browser.find_element(By.ID, "consumption-summary").text
    browser.find_element(By.CSS_SELECTOR, '[data-period="month"]').click()
    # one or two months, each with import and, once the live meter exported, export
    wait_for(
        browser, 10, "monthly bars", lambda: 1 <= chart_points(browser, "consumption-chart") <= 4
    )
    browser.find_element(By.CSS_SELECTOR, '[data-period="day"]').click()
    wait_for(
        browser, 10, "daily bars again", lambda: chart_points(browser, "consumption-chart") >= 8
    )

    # today's import next to the meter reading
    wait_for(browser, 10, "today's import", lambda: displayed(browser, "#today-row"))

    # details: sources and sinks from /api/status
    browser.find_element(By.CSS_SELECTOR, "#details-box summary").click()
    details = browser.find_element(By.ID, "details-body")
    wait_for(browser, 5, "status tables", lambda: "simulated meter" in details.text)
    assert "sql" in details.text

    browser.execute_script("window.scrollTo(0, 0)")
    shot = tmp_path / "smlogger-page.png"
    assert browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 20_000
    print(f"screenshot: {shot}")
    assert console_problems(browser) == []


def test_polling_fallback(logger: Logger) -> None:
    driver = make_driver()
    try:
        # a browser (or proxy) without working EventSource
        driver.execute_cdp_cmd(
            "Page.addScriptToEvaluateOnNewDocument", {"source": "delete window.EventSource;"}
        )
        driver.get(logger.url)
        first = tile_texts(driver)
        wait_for(driver, 5, "polling", lambda: transport(driver) == "polling")
        wait_for(driver, 5, "tiles change while polling", lambda: tile_texts(driver) != first)
        assert console_problems(driver) == []
    finally:
        driver.quit()


def test_page_without_javascript(logger: Logger) -> None:
    driver = make_driver(javascript=False)
    try:
        driver.get(logger.url)
        texts = {  # scripts are off, also for execute_script: read the elements one by one
            e.get_attribute("data-f"): e.text
            for e in driver.find_elements(By.CSS_SELECTOR, "[data-f]")
            if e.is_displayed()
        }
        assert texts["p_sum"] not in ("", "\u2013")
        assert texts["e_sum"].replace(",", "").replace(".", "").isdigit()
        assert "Connected" in driver.find_element(By.ID, "link").text
        assert "refresh every 10 s" in driver.find_element(By.ID, "history").text
        refresh = driver.find_element(By.CSS_SELECTOR, "meta[http-equiv='refresh']")
        assert refresh.get_attribute("content") == "10"
    finally:
        driver.quit()


def test_logger_pushes_frames_within_one_second(logger: Logger) -> None:
    """End to end: a frame read and decoded by the logger reaches an SSE client within 1 s."""
    conn = http.client.HTTPConnection("127.0.0.1", logger.port, timeout=10)
    try:
        conn.request("GET", "/api/stream?token=" + quote(TOKEN))
        resp = conn.getresponse()
        assert resp.status == 200
        delays: list[float] = []
        event = None
        while len(delays) < 8:
            line = resp.readline().decode().rstrip("\n")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "reading":
                reading = json.loads(line[6:])
                delays.append(time.time() - reading["ts"])  # ts: when the frame was received
        delays = sorted(delays[1:])  # the first is the snapshot sent on connect
        # pushed as they come (a poll would lag up to 2 s on every one); a loaded machine
        # may hold one of them back for a moment, so the bound for each is looser
        assert delays[0] >= 0 and delays[len(delays) // 2] < 1.0 and delays[-1] < 5.0, delays
    finally:
        conn.close()


def test_token_is_required(logger: Logger) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", logger.port, timeout=5)
    try:
        conn.request("GET", "/")
        resp = conn.getresponse()
        assert resp.status == 401
        assert json.loads(resp.read())["error"]
    finally:
        conn.close()


@pytest.mark.slow
def test_several_meters_selectable(tmp_path: Path) -> None:
    config = tmp_path / "two.toml"
    config.write_text(
        '[[meter]]\nname = "house"\nsimulate = true\nprofile = "household"\nseed = "one"\n\n'
        '[[meter]]\nname = "garage"\nsimulate = true\nprofile = "pv"\nseed = "two"\n',
        encoding="utf-8",
    )
    # readings in the database at once (default: every 5 minutes): the page's history
    running = start_logger(["--config", str(config), "--sync-interval", "0"], tmp_path)
    driver = None
    try:
        # (in the try: a browser that fails to start must not leave the logger running)
        driver = make_driver(width=420, height=1800)  # a phone-sized window
        ids = [make_meter("household", seed="one").meter_id, make_meter("pv", seed="two").meter_id]
        driver.get(running.url)
        select = Select(driver.find_element(By.ID, "meter"))
        wait_for(driver, 5, "both meters listed", lambda: option_values(select) == sorted(ids))
        names = dict(zip(ids, ("house", "garage")))

        def labels() -> dict[str, str]:
            return {str(o.get_attribute("value")): o.text for o in select.options}

        # the configured names are what people see, with the meter number after them
        wait_for(
            driver,
            5,
            "named meters",
            lambda: all(labels()[i].startswith(names[i] + " \u00b7 ") for i in ids),
        )
        shown = str(select.first_selected_option.get_attribute("value"))
        wait_for(
            driver,
            5,
            "the shown meter's name in the power tile",
            lambda: (
                driver.find_element(By.ID, "meter-name").get_attribute("textContent")
                == f" \u00b7 {names[shown]}"
            ),
        )
        other = ids[1] if shown == ids[0] else ids[0]
        select.select_by_value(other)
        wait_for(
            driver,
            3,
            "the other meter's name in the power tile",
            lambda: (
                driver.find_element(By.ID, "meter-name").get_attribute("textContent")
                == f" \u00b7 {names[other]}"
            ),
        )
        first = tile_texts(driver)
        wait_for(driver, 3, "the other meter's values", lambda: tile_texts(driver) != first)
        assert f"meter={other}" in driver.current_url
        # the pv meter sends export registers, the household one does not
        export_tile = driver.find_element(By.CSS_SELECTOR, '[data-group="export"]')
        pv_shown = other == ids[1]
        wait_for(driver, 3, "export tile", lambda: export_tile.is_displayed() == pv_shown)
        wait_for(
            driver, 10, "other meter's chart", lambda: chart_points(driver, "history-chart") > 0
        )
        # the page fits a phone: no horizontal scrolling
        assert driver.execute_script(
            "return document.documentElement.scrollWidth <= window.innerWidth"
        )
        shot = tmp_path / "smlogger-phone.png"
        assert driver.save_screenshot(str(shot))
        print(f"screenshot: {shot}")
        assert console_problems(driver) == []
    finally:
        if driver is not None:
            driver.quit()
        stop_logger(running)


def test_server_restart_shows_and_recovers(tmp_path: Path) -> None:
    """The logger restarts: the page says so, then reconnects by itself."""
    live = LiveState()
    live.set_source("sim", "connected", stats={"frames_ok": 1, "crc_errors": 0})
    stop = threading.Event()

    def feed() -> None:
        watts = 100.0
        while not stop.is_set():
            watts += 1
            live.update(
                Reading(meter_id="abc123", time=datetime.now(timezone.utc), values={}, p_sum=watts),
                source="sim",
            )
            stop.wait(0.3)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    port = free_port()  # a fixed port: cheroot sets SO_REUSEADDR only for those
    server = WebServer(build_app(live, None), "127.0.0.1", port)
    driver = None
    try:
        # (in the try: the feeder thread and the server end however the start goes)
        server.start()
        driver = make_driver()
        driver.get(server.url)
        wait_for(driver, 5, "connected over SSE", lambda: transport(driver) == "sse")
        link = driver.find_element(By.ID, "link")
        server.stop()
        wait_for(
            driver, 10, "server loss shown", lambda: link.get_attribute("data-state") == "offline"
        )
        assert "unreachable" in link.text
        server = WebServer(build_app(live, None), "127.0.0.1", port)
        server.start()
        wait_for(driver, 15, "reconnected", lambda: link.get_attribute("data-state") == "connected")
        first = tile_texts(driver)
        wait_for(driver, 3, "live again", lambda: tile_texts(driver) != first)
        # the broken connection logs a network error; nothing else may appear
        problems = [p for p in console_problems(driver) if "/api/stream" not in p["message"]]
        assert problems == []
    finally:
        if driver is not None:
            driver.quit()
        server.stop()
        stop.set()
        feeder.join()


@pytest.mark.slow
def test_history_opens_on_a_range_with_data_and_keeps_it_in_the_url(tmp_path: Path) -> None:
    # a fresh install: minutes of data, so the page opens on the last hour, not a near-empty day
    # readings in the database at once (default: every 5 minutes): the history has data
    running = start_logger(["--simulate", "--interval", "0.5", "--sync-interval", "0"], tmp_path)
    driver = None
    try:
        driver = make_driver()  # (in the try: see test_several_meters_selectable)
        driver.get(running.url)
        wait_for(driver, 15, "the hour range chosen", lambda: "range=hour" in driver.current_url)
        button = driver.find_element(By.CSS_SELECTOR, '[data-range="hour"]')
        wait_for(driver, 5, "hour pressed", lambda: button.get_attribute("aria-pressed") == "true")
        wait_for(driver, 15, "history drawn", lambda: chart_points(driver, "history-chart") > 0)
        # a chosen range goes into the address ...
        driver.find_element(By.CSS_SELECTOR, '[data-range="week"]').click()
        wait_for(driver, 5, "range in the URL", lambda: "range=week" in driver.current_url)
        # ... and a reload (or a bookmark) opens on it
        driver.get(driver.current_url)
        week = driver.find_element(By.CSS_SELECTOR, '[data-range="week"]')
        spans = (
            "return performance.getEntriesByType('resource')"
            "  .filter((r) => r.name.includes('/api/history?'))"
            "  .map((r) => new URL(r.name).searchParams)"
            "  .map((q) => Number(q.get('to')) - Number(q.get('from')));"
        )
        wait_for(
            driver,
            10,
            "a week of history asked for",
            lambda: any(abs(s - 7 * 86400) < 5 for s in driver.execute_script(spans)),
        )
        assert week.get_attribute("aria-pressed") == "true"
        assert "range=week" in driver.current_url
        assert console_problems(driver) == []
    finally:
        if driver is not None:
            driver.quit()
        stop_logger(running)


def test_history_while_the_database_cannot_be_read(tmp_path: Path) -> None:
    """A database that fails every history query (here: its readings table is gone): the
    chart still draws the readings waiting to be stored and the hint says why only those."""
    import sqlite3

    from smlogger.store import StoreReader
    from smlogger.store.pending import PendingReadings

    meter = "abc123"
    store = Store(open_database(None, tmp_path), spool_dir=tmp_path / "spool")
    now = datetime.now(timezone.utc)
    try:
        store.bulk_load([Reading(meter_id=meter, time=now - timedelta(hours=2), values={})])
        with sqlite3.connect(tmp_path / "smlogger.db") as con:
            con.execute('DROP TABLE "readings"')
        pending = PendingReadings()
        pending.add_many(
            [
                Reading(
                    meter_id=meter,
                    time=now - timedelta(seconds=s),
                    values={},
                    p_sum=400.0 + s,
                    e_sum=5.0 - s / 1000,
                )
                for s in range(300, 0, -2)
            ]
        )
        live = LiveState()
        live.set_source("sim", "connected", stats={"frames_ok": 1, "crc_errors": 0})
        live.update(Reading(meter_id=meter, time=now, values={}, p_sum=401.0), source="sim")
        with WebServer(build_app(live, StoreReader(store.db, pending)), "127.0.0.1", 0) as server:
            driver = make_driver()
            try:
                driver.get(server.url + "?range=hour")
                hint = driver.find_element(By.ID, "history-hint")
                wait_for(
                    driver,
                    15,
                    "the hint about the database",
                    lambda: "database cannot be read" in hint.text,
                )
                assert "warn" in (hint.get_attribute("class") or "")
                wait_for(
                    driver,
                    15,
                    "the waiting readings drawn",
                    lambda: chart_points(driver, "history-chart") > 0,
                )
                # (the consumption bars need the stored counters: their 503 is expected)
                problems = [
                    p for p in console_problems(driver) if "/api/consumption" not in p["message"]
                ]
                assert problems == []
            finally:
                driver.quit()
    finally:
        store.close()
