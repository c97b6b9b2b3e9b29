"""A shopper in a real browser: Debian's chromium driven by the ``playwright`` package.

``bash .ci/bootstrap test`` installs chromium when it is missing (and sets
SEARCHCORE_REQUIRE_BROWSER=1, so CI fails instead of skipping). Elsewhere the test skips, with
the reason, when there is no chromium. ``playwright install`` is never needed: the system
browser is driven through ``executable_path``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_app import make_shop, running_app

CHROMIUM = Path(os.environ.get("SEARCHCORE_CHROMIUM", "/usr/bin/chromium"))
# Without the networking flags chromium keeps calling home, which a closed network answers slowly.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
]
REQUIRED = os.environ.get("SEARCHCORE_REQUIRE_BROWSER") == "1"
pytestmark = pytest.mark.slow


def _unavailable() -> str | None:
    if not CHROMIUM.is_file():
        return (
            f"{CHROMIUM} is missing (`apt-get install -y chromium`, "
            "or run `bash .ci/bootstrap test` as root)"
        )
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -e '.[test]')"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator:
    why = _unavailable()
    if why:
        if REQUIRED:
            pytest.fail(f"SEARCHCORE_REQUIRE_BROWSER=1 but {why}")
        pytest.skip(why)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def shop(tmp_path_factory, tiny_clip: str, browser) -> dict[str, Path]:
    """The small shop, its model folder given attribute heads (``searchcore model heads``)."""
    from searchcore.cli import main

    shop = make_shop(tmp_path_factory.mktemp("browser"), tiny_clip)
    args = ["model", "heads", "--model", str(shop["model"]), "--catalog", str(shop["csv"])]
    assert main([*args, "--test-fraction", "0"]) == 0
    return shop


@pytest.fixture(scope="module")
def app_url(shop: dict[str, Path]) -> Iterator[str]:
    with running_app(shop) as (url, _):
        yield url


def test_search_by_photo_in_a_browser(
    browser, app_url: str, shop: dict[str, Path], tmp_path: Path
) -> None:
    # each step's screenshot: in SEARCHCORE_SCREENSHOTS when set (CI keeps them), else tmp_path
    shots = Path(os.environ.get("SEARCHCORE_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1360, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(app_url, wait_until="load")  # never "networkidle": the queue keeps a stream open
    page.locator("#search").wait_for(timeout=30_000)

    photo = Path(__file__).resolve().parents[1] / "assets" / "examples" / "tiny-red-sneakers.png"
    page.locator("#photo input[type=file]").set_input_files(str(photo))
    # the upload searches by itself: results come without pressing Search
    captions = page.locator("#results .caption-label")
    captions.first.wait_for(timeout=30_000)
    page.locator("#photo img").first.wait_for(timeout=10_000)
    first = captions.first.inner_text()
    title, price, score = first.split(" — ")[0].split(" · ")
    assert title.strip() and price.startswith("€") and 0.0 <= float(score) <= 1.0001, first
    assert captions.count() == 12
    # every result photo loaded, served from Gradio's cache (never by its path in the shop)
    page.wait_for_function("[...document.querySelectorAll('#results img')].every(i => i.complete)")
    photos = page.locator("#results img").evaluate_all(
        "imgs => imgs.map(i => [i.naturalWidth, i.getAttribute('src')])"
    )
    assert len(photos) == 12 and all(w > 0 for w, _ in photos), photos
    assert all("searchcore-catalog" in src and "/shop/" not in src for _, src in photos), photos
    # the query as the system saw it: the 40 px photo, and why it was (not) upscaled
    assert "40×40 px" in page.locator("body").inner_text()
    page.screenshot(path=str(shots / "search.png"), full_page=True)
    page.locator("#search").click()  # Search still searches (the same photo, the same answer)
    page.wait_for_timeout(500)
    captions.first.wait_for(timeout=30_000)
    assert captions.first.inner_text().split(" · ")[0] == title

    # "we think this is...": a chip per predicted attribute; one click filters by it
    chip = page.locator("#chip-0")
    chip.wait_for(state="visible", timeout=10_000)
    column, value = chip.inner_text().split(" · ")[0].split(": ", 1)
    assert "We think this is" in page.locator("#guess").inner_text()
    before = captions.all_inner_texts()
    chip.click()
    page.locator("#attributes").get_by_text(f"{column}: {value}").wait_for(timeout=30_000)
    page.wait_for_function(
        "before => [...document.querySelectorAll('#results .caption-label')]"
        ".map(c => c.innerText).join('|') !== before.join('|')",
        arg=before,
        timeout=30_000,
    )
    values, count = _values_by_title(shop["csv"], column, value)
    found = [c.split(" · ")[0] for c in captions.all_inner_texts()]
    assert len(found) == min(12, count), (found, count)  # k results whenever k have it
    assert all(value.casefold() in values[t] for t in found), (value, found)
    page.screenshot(path=str(shots / "chip.png"), full_page=True)

    # a box drawn on the photo (two clicks on opposite corners) searches just that part
    seen = page.locator("#seen-original img")
    seen.scroll_into_view_if_needed()
    box = seen.bounding_box()
    assert box is not None
    chosen = captions.all_inner_texts()
    seen.click(position={"x": box["width"] * 0.1, "y": box["height"] * 0.1})
    page.get_by_text("Now click the opposite corner").wait_for(timeout=30_000)
    seen.click(position={"x": box["width"] * 0.6, "y": box["height"] * 0.7})
    page.get_by_text("Searched the boxed part").wait_for(timeout=30_000)
    assert "the part you boxed" in page.locator("#seen-model").inner_text()
    # the 40 px photo boxed from (0.1, 0.1) to (0.6, 0.7): a 20x24 px part was searched
    assert "Your photo: 20×24 px" in page.locator("#seen").inner_text()
    assert captions.count() >= 1 and captions.all_inner_texts() != chosen
    page.screenshot(path=str(shots / "crop.png"), full_page=True)
    page.locator("#whole").click()  # the whole photo again: the chip's filter still applies
    page.get_by_text("Click two opposite corners").wait_for(timeout=30_000)

    # "more like this" from a result
    page.locator("#results .thumbnail-item").nth(1).click()
    page.locator("#more").wait_for(state="visible", timeout=10_000)
    picked = captions.nth(1).inner_text().split(" · ")[0]
    page.locator("#attributes .token-remove").first.click()  # the filter off again
    page.locator("#more").click()
    page.get_by_text(f"“{picked}”").first.wait_for(timeout=30_000)
    assert captions.count() == 12
    page.screenshot(path=str(shots / "more-like-this.png"), full_page=True)
    assert all((shots / f"{n}.png").stat().st_size > 20_000 for n in ("search", "chip", "crop"))
    assert not errors, errors


def _values_by_title(csv: Path, column: str, value: str) -> tuple[dict[str, set[str]], int]:
    """Each title's values of ``column`` in the shop, and how many products have ``value``."""
    import pandas as pd

    df = pd.read_csv(csv, dtype=str, keep_default_na=False)
    out: dict[str, set[str]] = {}
    for title, v in zip(df["title"], df[column], strict=True):
        out.setdefault(title, set()).add(v.casefold())
    return out, int((df[column].str.casefold() == value.casefold()).sum())
