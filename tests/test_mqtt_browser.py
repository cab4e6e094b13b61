"""The page's details panel shows the MQTT connection: unreachable, then connected."""

from __future__ import annotations

from pathlib import Path

import pytest
from mqtt_broker import Mosquitto
from selenium.webdriver.common.by import By
from test_browser import console_problems, make_driver, start_logger, stop_logger, wait_for

pytestmark = pytest.mark.slow


def test_details_panel_shows_the_broker_state(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "broker")
    running = start_logger(
        ["--simulate", "--mqtt", f"mqtt://bob:pw-not-shown@127.0.0.1:{broker.port}",
         "--mqtt-client-id", "page",
         # attempts at most 2 s apart (default: up to 60 s): the page sees the broker come up
         "--mqtt-reconnect-max", "2"],
        tmp_path,
    )  # fmt: skip
    driver = None
    try:
        driver = make_driver()
        driver.get(running.url)
        driver.find_element(By.CSS_SELECTOR, "#details-box summary").click()
        details = driver.find_element(By.ID, "details-body")
        wait_for(driver, 10, "MQTT section", lambda: "unreachable" in details.text)
        assert f"mqtt://bob:***@127.0.0.1:{broker.port}" in details.text
        assert "pw-not-shown" not in driver.page_source
        broker.start()
        # the panel reloads while open (every 10 s)
        wait_for(driver, 30, "connected", lambda: "connected" in details.text.split("MQTT")[-1])
        assert console_problems(driver) == []
    finally:
        if driver is not None:
            driver.quit()
        stop_logger(running)
        broker.stop()
