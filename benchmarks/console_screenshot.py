"""The README's screenshot of the console: ``python -m spiderfarm demo`` (slowed down so
there is something to see), its console opened in Debian's headless Chromium through
Playwright a few seconds in, saved as a small JPEG.

    python benchmarks/console_screenshot.py            # writes benchmarks/console.jpg
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "console.jpg")
    parser.add_argument("--after-s", type=float, default=8.0, help="crawl time before the shot")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        demo = subprocess.Popen(
            [sys.executable, "-m", "spiderfarm", "demo", "--pages", "3000", "--workers", "2",
             "-o", str(Path(tmp) / "demo.jsonl"), "-s", "delay_s=0.004",
             "-s", "per_host_concurrency=2"],
            cwd=ROOT, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert demo.stderr is not None
        url = ""
        for line in demo.stderr:
            match = re.search(r"console: (http://\S+?/)[ ;]", line)
            if match:
                url = match.group(1)
                break
        if not url:
            demo.kill()
            print("error: the demo printed no console URL", file=sys.stderr)
            return 1
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
                page = browser.new_page(viewport={"width": 1200, "height": 1000})
                page.goto(url)
                time.sleep(args.after_s)
                args.out.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(args.out), type="jpeg", quality=80, full_page=True)
                browser.close()
        finally:
            demo.terminate()
            demo.wait(30)
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
