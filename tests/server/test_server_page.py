"""The web page in a real browser: Debian's headless Chromium driven by selenium loads the page,
submits a prompt, sees progress with a preview, and the image arrives in the gallery; then a picture
set on the file input starts an img2img run.

With LATENTDIFF_SCREENSHOT=PATH the test serves the shipped model instead of the tiny one and saves
its screenshot there (how docs/server-page.png is made)."""

import os
import shutil

import pytest

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium (test extra) is not installed")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM, DRIVER = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")


@pytest.fixture
def browser(tmp_path):
    if not (CHROMIUM and DRIVER):
        pytest.skip("headless Chromium is not installed (Debian: apt-get install chromium chromium-driver)")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1100,820",
        f"--user-data-dir={tmp_path / 'chromium'}",
    ):
        opts.add_argument(arg)
    driver = webdriver.Chrome(options=opts, service=Service(DRIVER))
    yield driver
    driver.quit()


@pytest.fixture
def page_server(request, tmp_path):
    if not os.environ.get("LATENTDIFF_SCREENSHOT"):
        return request.getfixturevalue("served"), dict(steps=40, width=64, height=64, seed=0)
    from latentdiff.server.process import ServerProcess

    server = ServerProcess(tmp_path, "--out", tmp_path / "out", token="screenshot-token").wait_ready()
    request.addfinalizer(server.stop)
    return server, dict(steps=None, width=None, height=None, seed=0)  # the quick start's image


def _fill(driver, field, value):
    el = driver.find_element(By.ID, field)
    el.clear()
    if value is not None:
        el.send_keys(str(value))


def test_page_generates_with_progress_and_gallery(browser, page_server, tmp_path):
    server, params = page_server
    wait = WebDriverWait(browser, 180, poll_frequency=0.05)
    browser.get(f"{server.url}/#token={server.token}")
    wait.until(lambda d: "default model" in d.find_element(By.ID, "health").text)
    _fill(browser, "prompt", "cat face")
    for field, value in params.items():
        _fill(browser, field, value)
    before = len(browser.find_elements(By.CSS_SELECTOR, "#gallery .card"))
    browser.find_element(By.ID, "generate").click()
    # Progress shows while the job runs: a step count and a partly filled bar, before "done".
    wait.until(
        lambda d: (
            d.find_element(By.ID, "status").text.startswith("step ")
            and 0 < float(d.find_element(By.ID, "progress").get_attribute("value")) < 1
        )
    )
    wait.until(lambda d: d.find_element(By.ID, "status").text == "done")
    assert browser.find_element(By.ID, "preview").is_displayed()
    cards = browser.find_elements(By.CSS_SELECTOR, "#gallery .card")
    assert len(cards) == before + 1
    img = cards[0].find_element(By.TAG_NAME, "img")
    wait.until(lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img))
    assert img.get_attribute("src").startswith("blob:")
    assert "cat face" in cards[0].text and "seed 0" in cards[0].text
    browser.save_screenshot(str(tmp_path / "page.png"))
    if os.environ.get("LATENTDIFF_SCREENSHOT"):
        shutil.copy(tmp_path / "page.png", os.environ["LATENTDIFF_SCREENSHOT"])
    _fill(browser, "seed", 99)
    cards[0].find_element(By.TAG_NAME, "button").click()  # "Use these parameters"
    assert browser.find_element(By.ID, "seed").get_attribute("value") == "0"
    # img2img: a picture chosen with the file input (as a drop would give it) starts the next run.
    from PIL import Image

    picture = tmp_path / "start.png"
    Image.effect_noise((64, 64), 60).convert("RGB").save(picture)
    browser.find_element(By.ID, "init_file").send_keys(str(picture))
    wait.until(
        lambda d: (
            d.find_element(By.ID, "init-box").is_displayed()
            and d.find_element(By.ID, "generate").text == "Generate from picture"
        )
    )
    _fill(browser, "steps", 3)
    browser.find_element(By.ID, "generate").click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#gallery .card")) == before + 2)
    wait.until(lambda d: d.find_element(By.ID, "status").text == "done")
    card = browser.find_elements(By.CSS_SELECTOR, "#gallery .card")[0]
    assert "from a picture, strength 0.75" in card.text


def test_page_adds_a_control_unit(browser, served, tmp_path):
    """A control picture, model, preprocessor and weight chosen on the page become the request's
    unit (formParams is what the page posts), and the run's card names the unit."""
    from PIL import Image
    from selenium.webdriver.support.ui import Select

    wait = WebDriverWait(browser, 180, poll_frequency=0.05)
    browser.get(f"{served.url}/#token={served.token}")
    wait.until(lambda d: d.find_element(By.ID, "control-box").is_displayed())
    picture = tmp_path / "edges.png"
    Image.radial_gradient("L").resize((64, 64)).convert("RGB").save(picture)
    browser.find_element(By.ID, "control_file").send_keys(str(picture))
    wait.until(lambda d: d.find_element(By.ID, "control_preview").is_displayed())
    title = Select(browser.find_element(By.ID, "control_model")).first_selected_option.text
    Select(browser.find_element(By.ID, "control_module")).select_by_value("canny")
    _fill(browser, "control_weight", 0.6)
    for field, value in dict(prompt="edges", steps=3, width=32, height=32, seed=4).items():
        _fill(browser, field, value)
    sent = browser.execute_script("return formParams()")
    (unit,) = sent["controls"]
    assert unit["model"] == title and title.startswith("cn-tiny [")
    assert unit["module"] == "canny" and unit["weight"] == 0.6 and unit["image"].startswith("data:image/png;base64,")
    before = len(browser.find_elements(By.CSS_SELECTOR, "#gallery .card"))
    browser.find_element(By.ID, "generate").click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#gallery .card")) == before + 1)
    card = browser.find_elements(By.CSS_SELECTOR, "#gallery .card")[0]
    assert "control cn-tiny (canny, weight 0.6)" in card.text


def test_page_adds_an_image_prompt(browser, served, tmp_path):
    """With IP-Adapters in the server's folder the image prompt box shows; a picture, adapter and
    scale chosen there become the request's image prompt, and the run finishes."""
    from PIL import Image
    from selenium.webdriver.support.ui import Select

    wait = WebDriverWait(browser, 180, poll_frequency=0.05)
    browser.get(f"{served.url}/#token={served.token}")
    wait.until(lambda d: d.find_element(By.ID, "ip-box").is_displayed())
    picture = tmp_path / "style.png"
    Image.linear_gradient("L").resize((48, 48)).convert("RGB").save(picture)
    browser.find_element(By.ID, "ip_file").send_keys(str(picture))
    wait.until(lambda d: d.find_element(By.ID, "ip_preview").is_displayed())
    Select(browser.find_element(By.ID, "ip_adapter")).select_by_value("ip-adapter_sd15.safetensors")
    _fill(browser, "ip_scale", 0.7)
    for field, value in dict(prompt="styled", steps=3, width=32, height=32, seed=4).items():
        _fill(browser, field, value)
    sent = browser.execute_script("return formParams()")
    (prompt,) = sent["image_prompts"]
    assert prompt["adapter"] == "ip-adapter_sd15.safetensors" and prompt["scale"] == 0.7
    assert prompt["image"].startswith("data:image/png;base64,")
    before = len(browser.find_elements(By.CSS_SELECTOR, "#gallery .card"))
    browser.find_element(By.ID, "generate").click()
    wait.until(
        lambda d: (
            d.find_element(By.ID, "status").text in ("done",)
            or "error" in d.find_element(By.ID, "status").get_attribute("class")
        )
    )
    assert browser.find_element(By.ID, "status").text == "done"
    assert len(browser.find_elements(By.CSS_SELECTOR, "#gallery .card")) == before + 1
