"""A real browser (headless Chromium through chromedriver) signs in and out through the gateway.

Needs the Debian packages chromium and chromium-driver (tests/deps.sh installs them).
Leaves screenshots at tests/artifacts/: the signed-in dashboard (logged-in.png) and the
gateway's login page as a Chinese-language browser sees it (login-zh-CN.png).
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


def start_chromium(language="en-US"):
    for path in (CHROMIUM, CHROMEDRIVER):
        if not pathlib.Path(path).exists():
            pytest.fail(f"{path} missing: apt-get install chromium chromium-driver (or bash tests/deps.sh)",
                        pytrace=False)
    profile = tempfile.mkdtemp(prefix="e2e-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,800", f"--user-data-dir={profile}",
                 f"--lang={language}"):
        options.add_argument(flag)
    # What the browser puts in Accept-Language.
    options.add_experimental_option("prefs", {"intl.accept_languages": language})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    return driver, profile


@pytest.fixture
def browser():
    driver, profile = start_chromium()
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def chinese_browser():
    driver, profile = start_chromium("zh-CN")
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
    assert path_of(browser) == "/auth/login?next=%2F"
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

    # The app's own logout button: a form posting the app's CSRF token to /auth/logout. The
    # gateway ends its session on the way; the app logs out and sends us to its login URL.
    browser.find_element(By.CSS_SELECTOR, ".navbar button.logout").click()
    wait.until(EC.presence_of_element_located((By.NAME, "password")))
    assert path_of(browser) == "/auth/login"
    assert browser.get_cookie("gateway_session") is None

    # Signed out for real: the dashboard sends us back to the login page.
    browser.get(gateway.url + "/")
    wait.until(EC.presence_of_element_located((By.NAME, "password")))
    assert path_of(browser) == "/auth/login?next=%2F"


def test_the_login_page_speaks_chinese(gateway, chinese_browser):
    browser = chinese_browser
    wait = WebDriverWait(browser, 15)
    browser.get(gateway.url + "/admin")
    wait.until(EC.presence_of_element_located((By.NAME, "password")))
    assert path_of(browser) == "/auth/login?next=%2Fadmin"
    assert browser.title == "登录"
    assert browser.find_element(By.CSS_SELECTOR, "label[for=username]").text == "用户名"
    assert browser.find_element(By.CSS_SELECTOR, "label[for=password]").text == "密码"

    browser.find_element(By.NAME, "username").send_keys("alice")
    browser.find_element(By.NAME, "password").send_keys("not-her-password")
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    error = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "p.error")))
    assert error.text == "用户名或密码错误。"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(ARTIFACTS / "login-zh-CN.png"))

    browser.find_element(By.NAME, "password").send_keys(USERS["alice"].password)
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait.until(EC.text_to_be_present_in_element((By.TAG_NAME, "h1"), "Administration"))
    assert path_of(browser) == "/admin"
