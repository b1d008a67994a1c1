"""The console page in a real browser: Debian's headless Chromium driven by Playwright,
during a real crawl (server and worker processes, the demo catalogue on a local site).
``.ci/run`` installs ``chromium``; ``playwright install`` is not needed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from spiderfarm.console import console_token
from spiderfarm.security import decode_key
from tests.console_farm import console_farm, demo_site, non_loopback_ip, wait_for
from tests.farm import KEY_HEX, write_key

CHROMIUM = Path("/usr/bin/chromium")
SLOW = ["-s", "delay_s=0.05", "-s", "autothrottle=false"]

playwright_api = pytest.importorskip("playwright.sync_api")
if not CHROMIUM.exists():  # pragma: no cover - .ci/run installs it
    pytest.skip("needs Debian's chromium: apt-get install -y chromium", allow_module_level=True)


@pytest.fixture
def browser() -> Iterator[object]:
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


def shown(page: object, element: str) -> int:
    return int(page.inner_text(f"#{element}").replace(",", ""))  # type: ignore[attr-defined]


def test_the_page_shows_what_status_says_during_a_crawl(tmp_path: Path, browser: object) -> None:
    key = write_key(tmp_path)
    with demo_site(2000) as site, console_farm(
        tmp_path, key, ["spiders/catalogue.py", "-a", f"start_url={site}", *SLOW],
    ) as farm:  # fmt: skip
        farm.start_workers(1)
        page = browser.new_page(viewport={"width": 1280, "height": 1100})  # type: ignore[attr-defined]
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(farm.url)
        wait_for(lambda: shown(page, "pages") >= 30, 30, "30 pages on the page")
        wait_for(lambda: int(page.get_attribute("#chart", "data-points") or 0) >= 3, 10, "chart")
        points = page.get_attribute("#chart polyline.pages", "points") or ""
        assert len(points.split()) >= 3

        # Pause through the page's own button; then every number stands still.
        page.click("#pause-farm")
        wait_for(lambda: page.is_visible("#paused-badge"), 10, "the paused badge")
        wait_for(lambda: farm.status()["in_flight"] == 0, 30, "in-flight requests to end")
        time.sleep(3.5)  # a detailed snapshot after that, and the page's next polls
        status = farm.status(detail=True)
        stats = status["stats"]
        assert shown(page, "pages") == stats["pages"]
        assert shown(page, "items") == stats["items"]
        assert shown(page, "queued") == status["queued"]
        assert shown(page, "in-flight") == 0
        assert shown(page, "workers") == status["workers"] == 1
        assert shown(page, "dead-letters") == stats.get("dead_letters", 0)
        assert page.inner_text("#eta") != ""
        (host,) = status["hosts"]
        row = page.locator("#hosts-table tbody tr").first
        cells = row.locator("td").all_inner_texts()
        assert cells[0] == host
        assert int(cells[1].replace(",", "")) == status["hosts"][host]["queued"]
        assert int(cells[3].replace(",", "")) == status["hosts"][host]["pages"]
        (worker_row,) = page.locator("#workers-table tbody tr").all()
        worker_cells = worker_row.locator("td").all_inner_texts()
        assert worker_cells[0] in status["worker_detail"]
        assert int(worker_cells[3].replace(",", "")) == stats["pages"]
        assert worker_cells[7] == "idle"
        page.screenshot(path=str(tmp_path / "console.png"), full_page=True)
        assert (tmp_path / "console.png").stat().st_size > 10_000

        # Resume from the page: pages come again.
        page.click("#resume-farm")
        wait_for(lambda: shown(page, "pages") > stats["pages"], 30, "pages after resume")
        assert errors == []


def test_the_page_asks_for_the_token_off_loopback(tmp_path: Path, browser: object) -> None:
    key = write_key(tmp_path)
    ip = non_loopback_ip()
    with demo_site(500) as site, console_farm(
        tmp_path, key,
        ["spiders/catalogue.py", "-a", f"start_url={site}", *SLOW, "--console", f"{ip}:0"],
    ) as farm:  # fmt: skip
        farm.start_workers(1)
        base = farm.url.replace("0.0.0.0", "127.0.0.1")
        page = browser.new_page()  # type: ignore[attr-defined]
        page.goto(base)
        assert page.is_visible("#token-form") and not page.is_visible("#main")
        page.fill("#token-input", "wrong" * 10)
        page.click("#token-form button")
        wait_for(lambda: "refused" in page.inner_text("#token-error"), 10, "the refusal")
        assert not page.is_visible("#main")
        page.fill("#token-input", console_token(decode_key(KEY_HEX)))
        page.click("#token-form button")
        wait_for(lambda: page.is_visible("#main") and shown(page, "pages") > 0, 30, "data")
        page.screenshot(path=str(tmp_path / "console-token.png"))
        # Asked once: a reload keeps it (the browser stored it).
        page.reload()
        wait_for(lambda: page.is_visible("#main") and shown(page, "pages") > 0, 30, "data again")
