"""The search page in headless Chromium against ``facesearch serve`` (gunicorn, real models).

Screenshots go to ``test-artifacts/web/``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from harness import running_server

from .conftest import PEOPLE

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "web"
PER_PAGE = 4
WAIT_S = 60

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="needs chromium and chromedriver (scripts/setup.sh --test installs Debian's chromium chromium-driver)",
)


@pytest.fixture(scope="module")
def server(library, tmp_path_factory):
    env = {
        "FACESEARCH_EMBEDDER": "dlib",
        "FACESEARCH_DATA_DIR": str(library.data_dir),
        "FACESEARCH_MEDIA_ROOTS": str(library.root),
        "FACESEARCH_RESULTS_PER_PAGE": str(PER_PAGE),
    }
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with running_server(["--workers", "1", "--threads", "2"], env, log) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for argument in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"):
        options.add_argument(argument)
    options.add_argument("--window-size=1280,1000")
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


def wait_for(driver, condition, what: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S).until(condition, message=f"waited {WAIT_S} s for {what}")


def css(driver, selector: str):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def images_loaded(driver, selector: str) -> bool:
    """Every image the selector matches has arrived and decoded (thumbnails load after the page does)."""
    images = css(driver, selector)
    return bool(images) and all(
        driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", img) for img in images
    )


def people_shown(driver) -> list[str]:
    return [p.text for p in css(driver, "#hits li .person")]


def top_person(driver) -> str:
    """The best labelled hit's person, as shown (spaces for LFW's underscores)."""
    return next(name for name in people_shown(driver) if name != "unlabelled")


def idle(driver) -> bool:
    """No search in flight: the "Searching…" note is gone."""
    note = css(driver, "#message")[0]
    return not note.is_displayed() or "Searching" not in note.text


def test_pick_the_second_face_then_filter_by_person(server, browser, library):
    browser.get(server + "/")
    assert not css(browser, "#tab-similar")  # similar-photo search is off on this server
    css(browser, "#file")[0].send_keys(str(library.queries / "pair.jpg"))
    wait_for(browser, lambda d: len(css(d, "#query-boxes g.face")) == 2 and css(d, "#hits li") and idle(d), "two faces")
    assert "2 faces found" in css(browser, "#query-hint")[0].text
    assert len(css(browser, "#hits li")) == PER_PAGE
    browser.save_screenshot(str(ARTIFACTS / "1-two-faces-found.png"))

    shown = {}
    for face in (1, 2):
        css(browser, f'#query-boxes g.face[data-face="{face - 1}"]')[0].click()
        wait_for(
            browser,
            lambda d: f"searching for face {face}." in css(d, "#query-hint")[0].text and idle(d),
            f"the search for face {face}",
        )
        assert css(browser, "#query-boxes g.face.chosen")[0].get_attribute("data-face") == str(face - 1)
        shown[face] = top_person(browser)
    browser.save_screenshot(str(ARTIFACTS / "2-second-face-picked.png"))
    assert sorted(shown.values()) == sorted(p.replace("_", " ") for p in PEOPLE)

    cards = css(browser, "#hits li")
    assert cards[0].find_element("css selector", ".score").text.split("%")[0].isdigit()
    verdicts = [c.text for c in css(browser, "#hits li .verdict")]
    assert verdicts and set(verdicts) <= {"same person", "possible"}
    assert "Same person from" in css(browser, "#summary")[0].text
    wait_for(browser, lambda d: images_loaded(d, "#hits li img"), "the thumbnails")

    # Filter on the person the second face is not.
    other = next(p for p in PEOPLE if p.replace("_", " ") != shown[2])
    css(browser, "#person")[0].send_keys(other)
    css(browser, "#apply")[0].click()
    wait_for(browser, lambda d: idle(d) and set(people_shown(d)) == {other.replace("_", " ")}, "the person filter")
    assert len(css(browser, "#hits li")) == PER_PAGE
    css(browser, "#more")[0].click()
    wait_for(browser, lambda d: idle(d) and len(css(d, "#hits li")) == 5, "more results")
    assert set(people_shown(browser)) == {other.replace("_", " ")}
    assert not css(browser, "#more")[0].is_displayed()  # all five photos of that person are shown
    browser.save_screenshot(str(ARTIFACTS / "3-person-filter-and-more.png"))

    # A result opens its photo with the face boxed.
    css(browser, "#hits li a.thumb")[0].click()
    wait_for(browser, lambda d: css(d, "#face-box g.face rect"), "the face page")
    image = css(browser, "#face-image")[0]
    wait_for(browser, lambda d: image.get_attribute("naturalWidth") not in (None, "0"), "the photo")
    assert other.replace("_", " ") in css(browser, "h1")[0].text.replace("_", " ")
    browser.save_screenshot(str(ARTIFACTS / "4-face-page.png"))


def test_drop_and_paste_a_photo(server, browser, library):
    browser.get(server + "/")
    photo = "/media" + str(library.root / "Cameraman" / "Cameraman_0003.jpg")
    for event in ("drop", "paste"):
        # A page can't be handed a real OS drag or clipboard; these are the events the browser would fire.
        browser.execute_async_script(
            """
            const [url, kind, done] = arguments;
            fetch(url).then((r) => r.blob()).then((blob) => {
              const data = new DataTransfer();
              data.items.add(new File([blob], "query.jpg", { type: blob.type }));
              const event = kind === "drop"
                ? new DragEvent("drop", { dataTransfer: data, bubbles: true, cancelable: true })
                : new ClipboardEvent("paste", { clipboardData: data, bubbles: true });
              (kind === "drop" ? document.getElementById("drop") : document).dispatchEvent(event);
              done();
            });
            """,
            photo,
            event,
        )
        wait_for(browser, lambda d: css(d, "#hits li") and idle(d), f"results of a {event}ped photo")
        assert top_person(browser) == "Cameraman"
        browser.execute_script("document.getElementById('hits').replaceChildren()")


def test_bad_uploads_show_a_clear_message(server, browser, library):
    browser.get(server + "/")
    for name, words in (("blank.png", "no face found"), ("notes.jpg", "not an image")):
        css(browser, "#file")[0].send_keys(str(library.queries / name))
        wait_for(browser, lambda d: words in css(d, "#message")[0].text, f"the message for {name}")
        assert not css(browser, "#hits li")
    browser.save_screenshot(str(ARTIFACTS / "5-not-an-image.png"))


def test_the_copies_tab_finds_the_same_picture_and_says_when_there_is_none(server, browser, library):
    """No model runs for it, so it is there on a server without similar-photo search: the page
    shows what the API answers for the same upload, nearest first."""
    import requests

    query = library.queries / "eileen.jpg"
    with open(query, "rb") as handle:
        expected = requests.post(f"{server}/api/v1/duplicates", files={"image": handle}, timeout=60).json()
    assert expected["duplicates"]
    browser.get(server + "/")
    css(browser, "#tab-copies")[0].click()
    assert not css(browser, "#filters")[0].is_displayed()
    css(browser, "#file")[0].send_keys(str(query))
    wait_for(browser, lambda d: css(d, "#hits li.copy") and idle(d), "the copies")
    shown = [card.get_attribute("title") for card in css(browser, "#hits li.copy .source")]
    assert shown == [copy["source"] for copy in expected["duplicates"]]
    first = expected["duplicates"][0]["distance"]
    assert css(browser, "#hits li.copy .score")[0].text == (f"{first} bits apart" if first else "identical hash")
    assert "copies of your photo in the archive" in css(browser, "#summary")[0].text
    wait_for(browser, lambda d: images_loaded(d, "#hits li.copy img"), "the copies' photos")
    browser.save_screenshot(str(ARTIFACTS / "7-copies.png"))
    css(browser, "#file")[0].send_keys(str(library.queries / "blank.png"))
    wait_for(browser, lambda d: "No copy of this photo" in css(d, "#summary")[0].text and idle(d), "no copy")
    assert not css(browser, "#hits li")
    css(browser, "#tab-faces")[0].click()
    assert css(browser, "#filters")[0].is_displayed()


def test_the_similar_photos_tab(browser, library, tmp_path, described, resnet50_weights):
    env = {
        "FACESEARCH_EMBEDDER": "dlib",
        "FACESEARCH_DATA_DIR": str(described.settings.index.data_dir),
        "FACESEARCH_MEDIA_ROOTS": str(library.root),
        "FACESEARCH_RESULTS_PER_PAGE": str(PER_PAGE),
        "FACESEARCH_IMAGE_SEARCH": "1",
        "FACESEARCH_RESNET50_WEIGHTS": str(resnet50_weights),
    }
    with running_server(["--workers", "1", "--threads", "2"], env, tmp_path / "serve.log") as url:
        browser.get(url + "/")
        css(browser, "#tab-similar")[0].click()
        assert not css(browser, "#filters")[0].is_displayed()
        css(browser, "#file")[0].send_keys(str(library.root / "Cameraman" / "Cameraman_0003.jpg"))
        wait_for(browser, lambda d: css(d, "#hits li.photo") and idle(d), "similar photos")
        # The photo itself is in the archive, so it is the most similar.
        assert css(browser, "#hits li.photo .source")[0].text == "Cameraman_0003.jpg"
        assert len(css(browser, "#hits li.photo")) == PER_PAGE
        assert "photos that look most like yours" in css(browser, "#summary")[0].text
        wait_for(browser, lambda d: images_loaded(d, "#hits li.photo img"), "the photos")
        browser.save_screenshot(str(ARTIFACTS / "6-similar-photos.png"))
        # Back to faces: the same photo is searched by its face, with the filters shown again.
        css(browser, "#tab-faces")[0].click()
        wait_for(browser, lambda d: idle(d) and css(d, "#hits li .person"), "the face search")
        assert css(browser, "#filters")[0].is_displayed() and not css(browser, "#hits li.photo")
