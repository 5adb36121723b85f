"""The HTML pages in a real browser: headless Chromium logs in as staff through the admin's
login form and loads the score list and the statistics page from a live server, and loads the
API docs (/docs, Swagger UI; /redoc). A page or asset that is not 200 (or 304), any console
error, any Content-Security-Policy violation (a ``securitypolicyviolation`` listener in every
page) or any request to another origin fails the test.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them); skipped
without them. ``ADMIN_SCREENSHOT_DIR=/some/dir`` keeps the screenshots of both pages there.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

from scores.services import Write, score_write

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
PASSWORD = "browser-test-password"  # a throwaway account of the test database

pytestmark = [
    pytest.mark.skipif(
        CHROMIUM is None or CHROMEDRIVER is None,
        reason="needs Debian's chromium and chromium-driver "
        "(apt-get install -y chromium chromium-driver)",
    ),
    pytest.mark.django_db(transaction=True),  # the live server reads what the test wrote
]


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    options = Options()
    options.binary_location = CHROMIUM or ""
    for flag in [*FLAGS, "--window-size=1280,1000"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    # Injected by the browser before any script of the page, whatever its policy allows.
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": CSP_LISTENER})
    yield driver
    driver.quit()


@pytest.fixture
def staff_account(django_user_model: Any) -> Any:
    account = django_user_model.objects.create_user(
        "staffer", password=PASSWORD, is_staff=True, is_superuser=True
    )
    return account


@pytest.fixture
def graded() -> None:
    for user_id, exercise_id, correct in (
        (1, 3, True),
        (2, 3, True),
        (3, 3, True),
        (4, 3, False),
        (1, 7, False),
        (2, 7, False),
        (3, 7, True),
        (1, 9, True),
    ):
        score_write(
            write=Write(user_id=user_id, exercise_id=exercise_id, correct=correct),
            recorded_by="grader",
        )


CSP_LISTENER = """
window.cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.cspViolations.push(`${event.effectiveDirective} ${event.blockedURI}`);
});
"""


def csp_violations(driver: webdriver.Chrome) -> list[str]:
    """What the page's ``securitypolicyviolation`` listener heard."""
    return list(driver.execute_script("return window.cspViolations || []"))


@dataclass
class Network:
    """What the browser fetched since the last look: (resource type, url, status) of each
    response but the browser's own probe for /favicon.ico (no page of ours links one; the API
    answers it 404), the URL of every request, the response headers of each document."""

    responses: list[tuple[str, str, int]]
    requests: list[str]
    document_headers: dict[str, dict[str, str]]


def network(driver: webdriver.Chrome) -> Network:
    seen = Network(responses=[], requests=[], document_headers={})
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        params = message["params"]
        if message["method"] == "Network.requestWillBeSent":
            seen.requests.append(params["request"]["url"])
        elif message["method"] == "Network.responseReceived":
            url = params["response"]["url"]
            if not url.endswith("/favicon.ico"):
                seen.responses.append((params["type"], url, params["response"]["status"]))
            if params["type"] == "Document":
                headers = params["response"]["headers"]
                seen.document_headers[url] = {k.lower(): v for k, v in headers.items()}
    return seen


def responses(driver: webdriver.Chrome) -> list[tuple[str, str, int]]:
    return network(driver).responses


def elsewhere(urls: list[str], origin: str) -> list[str]:
    """The URLs that leave ``origin`` (the page's own data: and blob: URLs stay)."""
    return [url for url in urls if not url.startswith((f"{origin}/", "data:", "blob:"))]


def console_errors(driver: webdriver.Chrome) -> list[str]:
    return [
        entry["message"]
        for entry in driver.get_log("browser")
        if entry["level"] == "SEVERE" and "/favicon.ico" not in entry["message"]
    ]


def assert_loaded(driver: webdriver.Chrome, url: str, shown: str | None = None) -> None:
    """The page now shown is ``url`` (waiting up to 20 s for the navigation a click started,
    and for an element matching the CSS selector ``shown``, if given), answered 200 under a
    Content-Security-Policy with every asset fine, nothing asked of another origin, no
    violation of the policy and a quiet console."""
    WebDriverWait(driver, 20).until(expected_conditions.url_to_be(url))
    WebDriverWait(driver, 20).until(
        lambda d: d.execute_script("return document.readyState") == "complete"
    )
    if shown is not None:
        WebDriverWait(driver, 20).until(
            expected_conditions.presence_of_element_located((By.CSS_SELECTOR, shown))
        )
    seen = network(driver)
    assert [
        (kind, address, status) for kind, address, status in seen.responses if kind == "Document"
    ][-1] == ("Document", url, 200)
    assert "default-src 'none'" in seen.document_headers[url]["content-security-policy"]
    assert [entry for entry in seen.responses if entry[2] not in (200, 304)] == []
    assert elsewhere(seen.requests, url.split("/", 3)[:3] and "/".join(url.split("/", 3)[:3])) == []
    assert csp_violations(driver) == []
    assert console_errors(driver) == []
    assert driver.current_url == url


def test_staff_browse_the_score_list_and_the_statistics(
    browser, live_server, staff_account, graded, tmp_path
) -> None:
    score_list = f"{live_server.url}/admin/scores/score/"
    statistics = f"{score_list}statistics/"

    browser.get(f"{live_server.url}/admin/login/?next=/admin/scores/score/")
    WebDriverWait(browser, 20).until(
        expected_conditions.element_to_be_clickable((By.CSS_SELECTOR, "input[type=submit]"))
    )
    responses(browser), console_errors(browser)  # the login form itself
    browser.find_element(By.NAME, "username").send_keys("staffer")
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()

    assert_loaded(browser, score_list)
    assert browser.title == "Select score to change | Django site admin"
    assert len(browser.find_elements(By.CSS_SELECTOR, "#result_list tbody tr")) == 8
    shots = Path(os.environ.get("ADMIN_SCREENSHOT_DIR") or tmp_path)
    assert browser.save_screenshot(str(shots / "admin-scores.png"))

    browser.find_element(By.CSS_SELECTOR, ".object-tools a[href$='/statistics/']").click()

    assert_loaded(browser, statistics)
    assert [
        cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "#stats-exercises tbody th")
    ] == ["3", "7", "9"]
    assert [
        bar.get_attribute("aria-label")
        for bar in browser.find_elements(By.CSS_SELECTOR, "svg.stats-bar")
    ] == ["3 of 4 correct", "1 of 3 correct", "1 of 1 correct"]
    assert browser.save_screenshot(str(shots / "admin-statistics.png"))


@pytest.mark.parametrize(
    ("path", "shown"),
    [
        ("/docs", ".swagger-ui .opblock-tag"),  # Swagger UI drew the operations
        ("/redoc", ".api-content h1"),  # Redoc drew the schema
    ],
)
def test_the_api_docs_load_only_from_the_service_without_a_policy_violation(
    browser, live_server, path, shown
) -> None:
    browser.get(f"{live_server.url}{path}")

    assert_loaded(browser, f"{live_server.url}{path}", shown)
    assert browser.find_elements(By.CSS_SELECTOR, shown)
