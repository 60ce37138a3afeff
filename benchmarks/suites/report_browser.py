"""See a report as a person does: render an edgekd HTML report in a real browser (headless Chromium) and save
a screenshot, with a few checks of what a reader would notice (a blank page, raw markdown, missing plots).

Run (Debian: ``sudo apt-get install chromium``):
    edgekd report a.json b.json --out merged && \\
    python -m edgekd.benchmarks.suites.report_browser merged/report.html --png merged/report.png

Then look at the PNG. ``tests/test_report.py`` runs the same check on a freshly merged report when Chromium
is installed.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_browser() -> str | None:
    """The first Chromium-family browser on PATH."""
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def screenshot(html: Path, png: Path, width: int = 1400, height: int = 3000, timeout_s: float = 120.0) -> Path:
    """Render ``html`` in headless Chromium at ``width``×``height`` CSS pixels and write ``png``.

    Raises:
        RuntimeError: no browser on PATH, or it failed / wrote nothing.
    """
    browser = find_browser()
    if browser is None:
        raise RuntimeError(f"no Chromium browser found (looked for {', '.join(BROWSERS)}); "
                           "install one, e.g. sudo apt-get install chromium")
    png = Path(png).resolve()
    png.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="edgekd-chromium-") as profile:
        cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--hide-scrollbars", f"--user-data-dir={profile}", f"--window-size={width},{height}",
               f"--screenshot={png}", Path(html).resolve().as_uri()]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    if not png.is_file():
        raise RuntimeError(f"{browser} wrote no screenshot (exit {proc.returncode}): {proc.stderr.strip()[-400:]}")
    return png


def page_checks(html: Path, png: Path) -> list[str]:
    """What a reader would see wrong: raw markdown in the page, images that are not rendered, a blank shot.
    Returns the problems found (empty: none)."""
    import numpy as np
    from PIL import Image

    text = Path(html).read_text()
    problems = []
    visible = re.sub(r"<[^>]+>|data:image/[^\"']+", " ", text)
    for mark, what in (("**", "bold markers"), ("|---", "a markdown table"), ("](", "a markdown link/image")):
        if mark in visible:
            problems.append(f"raw markdown in the page: {what} ({mark!r})")
    with Image.open(png) as im:
        rgb = im.convert("RGB")
        w, h = rgb.size
        pixels = np.asarray(rgb.resize((w // 4, h // 4))).reshape(-1, 3)
    ink = float((pixels.min(axis=1) < 200).mean())
    colours = len(np.unique(pixels // 32, axis=0))
    if ink < 0.01:
        problems.append(f"the page looks blank ({ink:.1%} of it has ink)")
    if "<img" in text and colours < 6:
        problems.append(f"the page has images but the shot has only {colours} colour bins: plots not rendered?")
    return problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("html", type=Path, help="an edgekd report.html")
    p.add_argument("--png", type=Path, default=None, help="screenshot path (default: next to the HTML)")
    p.add_argument("--width", type=int, default=1400)
    p.add_argument("--height", type=int, default=3000)
    args = p.parse_args(argv)
    png = screenshot(args.html, args.png or args.html.with_suffix(".png"), args.width, args.height)
    problems = page_checks(args.html, png)
    for line in problems:
        print(f"problem: {line}")
    print(f"screenshot: {png} — look at it")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
