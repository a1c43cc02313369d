"""The page at / in a real browser (Debian's chromium driven by selenium): choose a photo,
read the top 5 and the similar images from the page."""

import shutil

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from conftest import CHELSEA, SHARED, need


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium")
    driver_path = shutil.which("chromedriver")
    need(chromium and driver_path, "chromium and chromium-driver are missing (scripts/setup-test-tools.sh installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1200,1600"]:
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def open_page(browser, server):
    browser.get(server.url + "/")
    WebDriverWait(browser, 30).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true")


def test_upload_shows_top5_and_similar_thumbnails(browser, server):
    open_page(browser, server)
    models = [o.get_attribute("value") for o in browser.find_elements(By.CSS_SELECTOR, "#model option")]
    assert models == ["imagenet"], models  # the embedder is not a classifier
    assert browser.find_element(By.ID, "index").get_attribute("value") == "photos"

    browser.find_element(By.ID, "file").send_keys(str(CHELSEA))
    WebDriverWait(browser, 60).until(lambda d: d.find_element(By.ID, "status").text in ("done",) or "error" in d.find_element(By.ID, "status").get_attribute("class"))
    assert browser.find_element(By.ID, "status").text == "done", browser.find_element(By.ID, "status").text
    rows = browser.find_elements(By.CSS_SELECTOR, "#predictions tr")
    assert len(rows) == 5
    first = [cell.text for cell in rows[0].find_elements(By.TAG_NAME, "td")]
    assert first[0] == "1." and first[1] == "Egyptian_cat", first
    assert float(first[2].rstrip("%")) > 50

    figures = browser.find_elements(By.CSS_SELECTOR, "#similar figure")
    assert len(figures) == 8
    # The thumbnails are the indexed files, loaded by the browser.
    WebDriverWait(browser, 30).until(lambda d: all(d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", img)
                                                    for img in d.find_elements(By.CSS_SELECTOR, "#similar img")))
    best = figures[0].find_element(By.TAG_NAME, "figcaption").text
    assert best.split()[1].startswith("cat"), best  # the shared cat photos are the nearest to chelsea


def test_a_file_that_is_not_an_image_shows_the_servers_message(browser, server, workdir):
    open_page(browser, server)
    bogus = workdir / "not-an-image.jpg"
    bogus.write_bytes(b"this is text, not a JPEG\n" * 10)
    browser.find_element(By.ID, "file").send_keys(str(bogus))
    WebDriverWait(browser, 60).until(lambda d: "error" in (d.find_element(By.ID, "status").get_attribute("class") or ""))
    message = browser.find_element(By.ID, "status").text
    assert "body" in message and "image" in message.lower(), message
    assert browser.find_elements(By.CSS_SELECTOR, "#predictions tr") == []
