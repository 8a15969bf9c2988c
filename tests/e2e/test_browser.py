"""A real browser (headless Chromium through chromedriver) signs in and out through the gateway.

Needs the Debian packages chromium and chromium-driver (tests/deps.sh installs them).
Leaves a screenshot of the signed-in dashboard at tests/artifacts/logged-in.png.
"""
import pathlib
import shutil
import tempfile
from urllib.parse import urlsplit

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from conftest import ROOT, USERS

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = ROOT / "tests" / "artifacts"


@pytest.fixture
def browser():
    for path in (CHROMIUM, CHROMEDRIVER):
        if not pathlib.Path(path).exists():
            pytest.fail(f"{path} missing: apt-get install chromium chromium-driver (or bash tests/deps.sh)",
                        pytrace=False)
    profile = tempfile.mkdtemp(prefix="e2e-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,800", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def path_of(driver):
    parts = urlsplit(driver.current_url)
    return parts.path + ("?" + parts.query if parts.query else "")


def test_sign_in_and_out_in_a_browser(gateway, browser):
    wait = WebDriverWait(browser, 15)
    alice = USERS["alice"]

    browser.get(gateway.url + "/")
    wait.until(EC.presence_of_element_located((By.NAME, "password")))
    assert path_of(browser) == "/login?next=%2F"
    assert browser.title == "Sign in"

    browser.find_element(By.NAME, "username").send_keys(alice.username)
    browser.find_element(By.NAME, "password").send_keys(alice.password)
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()

    who = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "p.who")))
    assert path_of(browser) == "/"
    assert who.text == "Signed in as alice"
    assert browser.find_element(By.CSS_SELECTOR, ".navbar .user").text == "alice"
    # The stylesheet came through the gateway's public path: the navbar is styled.
    navbar = browser.find_element(By.CSS_SELECTOR, ".navbar")
    assert navbar.value_of_css_property("background-color") == "rgba(18, 53, 91, 1)"
    # The session cookie is HttpOnly: page scripts cannot read it.
    assert "whalefall_session" not in browser.execute_script("return document.cookie")

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(ARTIFACTS / "logged-in.png"))

    browser.find_element(By.CSS_SELECTOR, ".navbar a.logout").click()
    wait.until(EC.title_is("Sign out"))
    assert path_of(browser) == "/logout"
    buttons = browser.find_elements(By.CSS_SELECTOR, "form button[type=submit]")
    sign_out = next(b for b in buttons if b.text == "Sign out")
    sign_out.click()

    wait.until(EC.presence_of_element_located((By.NAME, "password")))
    assert path_of(browser) == "/login"

    # Signed out for real: the dashboard sends us back to the login page.
    browser.get(gateway.url + "/")
    wait.until(EC.presence_of_element_located((By.NAME, "password")))
    assert path_of(browser) == "/login?next=%2F"
