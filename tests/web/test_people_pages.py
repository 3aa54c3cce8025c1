"""People on the web: the ``/api/v1/persons`` API (Flask's test client) and the people pages in
headless Chromium against ``facesearch serve``, on a copy of the session's library grouped into
people (the decisions made here must not reach the other tests' index)."""

from __future__ import annotations

import shutil

import pytest

from harness import running_server
from search_engine.people import cluster_index, grouping_threshold
from web import create_app

from .conftest import PEOPLE, PHOTOS_EACH, Library, service_for
from .test_browser import (
    ARTIFACTS,
    CHROMEDRIVER,
    CHROMIUM,
    browser,  # noqa: F401 (the fixture)
    css,
    images_loaded,
    wait_for,
)


def grouped_copy(library: Library, target, detector, embedder) -> Library:
    """The library's index copied to ``target`` and grouped into people."""
    shutil.copytree(library.data_dir, target)
    copy = Library(library.root, target, library.queries)
    service = service_for(copy.settings, detector, embedder)
    cluster_index(service.index, grouping_threshold(copy.settings.search, service.index))
    service.close()
    return copy


@pytest.fixture()
def people_client(library, tmp_path, detector, dlib_embedder):
    copy = grouped_copy(library, tmp_path / "data", detector, dlib_embedder)
    service = service_for(copy.settings, detector, dlib_embedder)
    yield create_app(copy.settings, service=service).test_client()
    service.close()


def by_name(client) -> dict[str, dict]:
    return {p["name"]: p for p in client.get("/api/v1/persons").get_json()["persons"]}


def test_persons_are_listed_and_decided_through_the_api(people_client):
    client = people_client
    listing = client.get("/api/v1/persons").get_json()
    # Each folder's photos plus that person's face in the group photo.
    assert listing["total"] == 2
    assert sorted((p["name"], p["face_count"]) for p in listing["persons"]) == sorted(
        (name, PHOTOS_EACH + 1) for name in PEOPLE
    )
    eileen = by_name(client)["Eileen_Collins"]
    shown = client.get(f"/api/v1/persons/{eileen['id']}").get_json()
    assert len(shown["faces"]) == PHOTOS_EACH + 1 and all(f["thumbnail_url"] for f in shown["faces"])
    assert client.get(eileen["cover_url"]).status_code == 200

    post = lambda url, body: client.post(url, json=body)  # noqa: E731
    split = post(f"/api/v1/persons/{eileen['id']}/split", {"face_ids": eileen["face_ids"][:2]})
    assert split.status_code == 200
    twin = split.get_json()["person"]
    assert (twin["face_count"], twin["name"]) == (2, None)
    assert client.get("/api/v1/persons").get_json()["persons"][0]["id"] == twin["id"]  # unnamed first
    named = post(f"/api/v1/persons/{twin['id']}/name", {"name": "Eileen in orange"}).get_json()["person"]
    assert named["name"] == "Eileen in orange"
    refused = post(f"/api/v1/persons/{twin['id']}/name", {"name": "Cameraman"})
    assert refused.status_code == 409 and refused.get_json()["error"]["code"] == "conflict"
    merged = post(f"/api/v1/persons/{eileen['id']}/merge", {"others": [twin["id"]]}).get_json()["person"]
    assert merged["face_count"] == PHOTOS_EACH + 1 and merged["name"] == "Eileen_Collins"
    out = post(f"/api/v1/faces/{eileen['face_ids'][0]}/person", {"person_id": None}).get_json()
    assert out == {"face_id": eileen["face_ids"][0], "person": None}
    more = client.get(f"/api/v1/persons/{eileen['id']}/more?k=3").get_json()
    assert more["hits"][0]["face_id"] == eileen["face_ids"][0] and more["hits"][0]["thumbnail_url"]
    back = post(f"/api/v1/faces/{eileen['face_ids'][0]}/person", {"person_id": eileen["id"]}).get_json()
    assert back["person"]["face_count"] == PHOTOS_EACH + 1
    hidden = post(f"/api/v1/persons/{eileen['id']}/hide", {"hidden": True}).get_json()["person"]
    assert hidden["hidden"] and client.get("/api/v1/persons").get_json()["total"] == 1
    assert client.get("/api/v1/persons?hidden=1").get_json()["total"] == 2

    assert client.get("/api/v1/persons/nobody").status_code == 404
    assert post("/api/v1/persons/nobody/name", {"name": "x"}).status_code == 404
    assert post(f"/api/v1/persons/{eileen['id']}/explode", {}).status_code == 404
    form = client.post(f"/api/v1/persons/{eileen['id']}/name", data={"name": "x"})
    assert form.status_code == 415 and form.get_json()["error"]["code"] == "unsupported_media_type"
    bad = post(f"/api/v1/persons/{eileen['id']}/split", {"face_ids": "all"})
    assert bad.status_code == 400 and "face_ids" in bad.get_json()["error"]["message"]
    stranger = post(f"/api/v1/persons/{eileen['id']}/split", {"face_ids": ["not-hers"]})
    assert stranger.status_code == 409 and "not one of" in stranger.get_json()["error"]["message"]
    # A move names where the face goes, null included: a body without it moves nothing.
    unnamed = post(f"/api/v1/faces/{eileen['face_ids'][0]}/person", {})
    assert unnamed.status_code == 400 and "person_id is required" in unnamed.get_json()["error"]["message"]
    assert client.get(f"/api/v1/persons/{eileen['id']}").get_json()["face_count"] == PHOTOS_EACH + 1
    assert client.get("/api/v1/persons?limit=2&limit=x").status_code == 400
    assert client.get("/api/v1/persons?hidden=").status_code == 400  # empty is not absent


needs_chromium = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="needs chromium and chromedriver (scripts/setup.sh --test installs Debian's chromium chromium-driver)",
)


@pytest.fixture()
def people_server(library, tmp_path, detector, dlib_embedder):
    copy = grouped_copy(library, tmp_path / "data", detector, dlib_embedder)
    env = {
        "FACESEARCH_EMBEDDER": "dlib",
        "FACESEARCH_DATA_DIR": str(copy.data_dir),
        "FACESEARCH_MEDIA_ROOTS": str(copy.root),
    }
    with running_server(["--workers", "1", "--threads", "2"], env, tmp_path / "serve.log") as url:
        yield url


def cards(driver) -> dict[str, object]:
    """The people grid's cards by the name typed in them."""
    return {
        card.find_element("css selector", ".rename").get_attribute("value"): card
        for card in css(driver, ".person-card")
    }


@needs_chromium
def test_split_name_and_merge_people_in_the_browser(people_server, browser):  # noqa: F811
    browser.get(people_server + "/people")
    wait_for(browser, lambda d: len(css(d, ".person-card")) == 2, "the people grid")
    wait_for(browser, lambda d: images_loaded(d, ".person-card img"), "the people's covers")
    browser.save_screenshot(str(ARTIFACTS / "people-1-grid.png"))

    # Split: two of Eileen's faces become a person of their own.
    cards(browser)["Eileen_Collins"].find_element("css selector", "a").click()
    wait_for(browser, lambda d: len(css(d, ".face-card")) == PHOTOS_EACH + 1, "Eileen's faces")
    split = css(browser, "#split")[0]
    assert not split.is_enabled()
    for box in css(browser, ".face-card input.pick")[:2]:
        box.click()
    split.click()
    wait_for(browser, lambda d: len(css(d, ".face-card")) == 2, "the new person's page")
    browser.save_screenshot(str(ARTIFACTS / "people-2-split.png"))

    # Name the new person inline.
    name = css(browser, "#name")[0]
    name.send_keys("Eileen in orange\n")
    wait_for(browser, lambda d: "saved" in css(d, "#name")[0].get_attribute("class"), "the name to be saved")
    browser.get(people_server + "/people")
    wait_for(browser, lambda d: len(css(d, ".person-card")) == 3, "three people")
    assert set(cards(browser)) == {"Eileen in orange", *PEOPLE}
    assert "2 faces" in cards(browser)["Eileen in orange"].text

    # A name another person has is refused, with the reason shown.
    from selenium.webdriver.common.keys import Keys

    rename = cards(browser)["Eileen in orange"].find_element("css selector", ".rename")
    rename.send_keys(Keys.CONTROL, "a")
    rename.send_keys("Cameraman\n")
    wait_for(browser, lambda d: css(d, "#message")[0].is_displayed(), "the refusal")
    assert "merge the two people" in css(browser, "#message")[0].text
    browser.save_screenshot(str(ARTIFACTS / "people-3-refused.png"))

    # Merge them back: tick both, merge into the named one with the most faces.
    browser.get(people_server + "/people")
    wait_for(browser, lambda d: len(css(d, ".person-card")) == 3, "three people")
    shown = cards(browser)
    for name in ("Eileen in orange", "Eileen_Collins"):
        shown[name].find_element("css selector", "input.pick").click()
    css(browser, "#merge")[0].click()
    wait_for(browser, lambda d: len(css(d, ".person-card")) == 2, "two people after the merge")
    shown = cards(browser)
    assert set(shown) == {"Eileen_Collins", "Cameraman"} and f"{PHOTOS_EACH + 1} faces" in shown["Eileen_Collins"].text
    browser.save_screenshot(str(ARTIFACTS / "people-4-merged.png"))

    # Not this person, then find it again among the faces most like her, and add it back.
    shown["Eileen_Collins"].find_element("css selector", "a").click()
    wait_for(browser, lambda d: len(css(d, ".face-card")) == PHOTOS_EACH + 1, "Eileen's faces")
    taken = css(browser, ".face-card")[-1].get_attribute("data-face")
    css(browser, f'.not-this[data-face="{taken}"]')[0].click()
    wait_for(browser, lambda d: len(css(d, ".face-card")) == PHOTOS_EACH, "one face fewer")
    css(browser, "#more")[0].click()
    wait_for(browser, lambda d: css(d, "#candidate-list li"), "the faces most like her")
    assert css(browser, "#candidate-list li")[0].get_attribute("data-face") == taken
    browser.save_screenshot(str(ARTIFACTS / "people-5-more-of-her.png"))
    css(browser, f'.add-face[data-face="{taken}"]')[0].click()
    wait_for(browser, lambda d: not css(d, f'#candidate-list li[data-face="{taken}"]'), "the face to be added")
    browser.refresh()
    wait_for(browser, lambda d: len(css(d, ".face-card")) == PHOTOS_EACH + 1, "her faces, whole again")
