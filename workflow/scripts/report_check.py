#!/usr/bin/env python3
"""Check a Snakemake HTML report (`snakemake --report report.html`): every entry has a
caption of its own and every figure is there.

Two levels:

* without a browser (:func:`static_problems`, always): the report's embedded `results`
  and `categories` tables are read from the HTML; every entry listed in a category exists,
  every entry has a non-empty caption and no two captions are the same, and every PNG
  decodes to a non-zero size (its header);
* in a real headless Chromium (`--browser`, needs the `playwright` Python package and a
  Chromium: the system's `chromium`, or `--chromium PATH`, or one installed by
  `playwright install chromium`): every category and subcategory is opened in the report's
  own menu, every entry's description (its caption) is read as displayed and every entry is
  viewed: an image must be loaded with a non-zero natural size, an HTML table must show in
  its frame. A screenshot of each view is written to `--screenshots DIR`.

Usage::

    python workflow/scripts/report_check.py results/report.html
    python workflow/scripts/report_check.py results/report.html --browser --screenshots shots/

Exit status 0 when the report passes, 1 with one line per problem otherwise, 2 when the
browser check was asked for but no browser can be started (the reason is printed).
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import shutil
import struct
import sys
from pathlib import Path

#: Executables tried for Chromium, in order (Debian: chromium; others: chromium-browser...).
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _json_after(html: str, marker: str):
    """The JSON value that follows the first ``marker`` (e.g. ``"categories = "``)."""
    i = html.find(marker)
    if i < 0:
        raise ValueError(f"no {marker.strip()!r} table in the report (not a Snakemake report?)")
    value, _ = json.JSONDecoder().raw_decode(html[i + len(marker) :])
    return value


def read_report(path) -> tuple[dict, dict]:
    """``(results, categories)`` embedded in a Snakemake HTML report: ``results`` maps each
    entry's path to its record (``caption`` HTML, ``mime_type``, ``data_uri``, ...),
    ``categories`` maps category -> subcategory -> entry paths."""
    html = Path(path).read_text(encoding="utf-8", errors="replace")
    m = re.search(r"\bresults = \{\"", html)
    if m is None:
        raise ValueError(f"{path}: no embedded results table (not a Snakemake report?)")
    results = _json_after(html[m.start() :], "results = ")
    categories = _json_after(html, "categories = ")
    return results, categories


def caption_text(caption_html: str) -> str:
    """A caption's text: tags removed, whitespace collapsed."""
    return " ".join(re.sub(r"<[^>]+>", " ", caption_html or "").split())


def png_size(data_uri: str) -> tuple[int, int] | None:
    """``(width, height)`` from the IHDR header of a base64 PNG data URI, or None."""
    _, _, payload = data_uri.partition("base64,")
    try:
        head = base64.b64decode(payload[:64] + "=" * (-len(payload[:64]) % 4))
    except ValueError:
        return None
    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", head[16:24])


def duplicate_captions(results: dict) -> list[list[str]]:
    """Groups of entries (paths) that share one caption text."""
    by_text: dict[str, list[str]] = {}
    for path, rec in results.items():
        by_text.setdefault(caption_text(rec.get("caption", "")), []).append(path)
    return [sorted(paths) for text, paths in by_text.items() if text and len(paths) > 1]


def static_problems(results: dict, categories: dict) -> list[str]:
    """What is wrong with the embedded tables of a report (empty when nothing)."""
    problems = []
    listed = [p for subs in categories.values() for paths in subs.values() for p in paths]
    problems += [
        f"{p}: listed in a category but not in the report" for p in listed if p not in results
    ]
    problems += [f"{p}: in no category" for p in results if p not in listed]
    for path, rec in results.items():
        if not caption_text(rec.get("caption", "")):
            problems.append(f"{path}: no caption")
        if rec.get("mime_type") == "image/png":
            size = png_size(rec.get("data_uri", ""))
            if not size or 0 in size:
                problems.append(f"{path}: the embedded PNG does not decode (size {size})")
        elif not rec.get("data_uri"):
            problems.append(f"{path}: no embedded content")
    for paths in duplicate_captions(results):
        problems.append(f"one caption for {len(paths)} entries: {', '.join(paths)}")
    return problems


def find_chromium(explicit: str | None = None) -> str | None:
    """The Chromium executable to use: ``explicit``, else the first of
    :data:`CHROMIUM_NAMES` on PATH; None: playwright's own download, if any."""
    if explicit:
        return explicit
    return next((shutil.which(n) for n in CHROMIUM_NAMES if shutil.which(n)), None)


def browser_unavailable(chromium: str | None = None) -> str | None:
    """Why the browser check cannot run here (None when it can)."""
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        return "the playwright Python package is not installed (pip install playwright)"
    try:
        with sync_playwright() as p:
            p.chromium.launch(
                executable_path=find_chromium(chromium), args=["--no-sandbox"]
            ).close()
    except Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return (
            f"no headless Chromium can be started ({first}); "
            "install one (Debian: apt-get install chromium)"
        )
    return None


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")


def browser_check(
    report, screenshots=None, chromium=None, timeout_ms=15000
) -> tuple[list[str], dict]:
    """Open ``report`` in headless Chromium and walk its menu (see the module doc).

    Returns ``(problems, seen)``: ``seen`` maps every entry path reached to what the browser
    showed (``caption`` text, ``natural_size`` of an image, ``screenshot`` path)."""
    from playwright.sync_api import sync_playwright

    report = Path(report).resolve()
    url = report.as_uri()
    results, categories = read_report(report)
    shots = Path(screenshots) if screenshots else None
    if shots:
        shots.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    seen: dict[str, dict] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=find_chromium(chromium), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1600, "height": 1100})
        page.set_default_timeout(timeout_ms)
        page.goto(url)
        if shots:
            page.screenshot(path=str(shots / "00-front-page.png"))
        for category, subs in categories.items():
            for sub, paths in subs.items():
                for i in range(len(paths)):
                    page.goto(url)
                    nav = page.locator("nav").first
                    nav.get_by_text(category, exact=True).click()
                    if len(subs) > 1:
                        nav.get_by_text(sub, exact=True).click()
                    rows = nav.locator("tbody tr")
                    if rows.count() != len(paths):
                        problems.append(
                            f"{category}/{sub}: the menu lists {rows.count()} entries, "
                            f"the report holds {len(paths)}"
                        )
                        break
                    rows.nth(i).locator("a[iconname=information-circle]").click()
                    crumbs = nav.locator("ol li a")
                    path = crumbs.nth(crumbs.count() - 1).inner_text().strip()
                    description = nav.locator("li.prose").first
                    caption = (
                        " ".join(description.inner_text().split()) if description.count() else ""
                    )
                    info = {"category": category, "subcategory": sub, "caption": caption}
                    if not caption:
                        problems.append(f"{path}: no caption shown")
                    nav.locator("li.prose").first.locator("xpath=..").locator(
                        "a[iconname=eye]"
                    ).first.click()
                    mime = results.get(path, {}).get("mime_type", "")
                    if mime.startswith("image/"):
                        img = page.locator("#app img[src^='data:image']").last
                        img.wait_for(state="visible")
                        page.wait_for_function(
                            "el => el.complete && el.naturalWidth > 0", arg=img.element_handle()
                        )
                        size = img.evaluate("el => [el.naturalWidth, el.naturalHeight]")
                        info["natural_size"] = size
                        if 0 in size:
                            problems.append(f"{path}: the image did not load ({size})")
                    elif mime == "text/html":
                        frame = page.locator("#app iframe").last
                        frame.wait_for(state="attached")
                        rows_shown = frame.content_frame.locator("tr").count()
                        info["table_rows"] = rows_shown
                        if rows_shown < 2:
                            problems.append(f"{path}: the HTML page shows no table rows")
                    if shots:
                        shot = (
                            shots / f"{_safe(category)}-{_safe(sub)}-{_safe(Path(path).name)}.png"
                        )
                        page.screenshot(path=str(shot))
                        info["screenshot"] = str(shot)
                    seen[path] = info
        browser.close()
    problems += [f"{p}: not reachable from the report's menu" for p in results if p not in seen]
    captions: dict[str, list[str]] = {}
    for path, info in seen.items():
        captions.setdefault(info["caption"], []).append(path)
    problems += [
        f"one caption shown for {len(v)} entries: {', '.join(sorted(v))}"
        for k, v in captions.items()
        if k and len(v) > 1
    ]
    return problems, seen


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", help="the HTML report of snakemake --report")
    parser.add_argument("--browser", action="store_true", help="also check in headless Chromium")
    parser.add_argument("--screenshots", metavar="DIR", help="write a screenshot per entry")
    parser.add_argument("--chromium", metavar="PATH", help="Chromium executable")
    parser.add_argument("--json", metavar="FILE", help="write what was checked as JSON")
    args = parser.parse_args(argv)
    results, categories = read_report(args.report)
    problems = static_problems(results, categories)
    summary = {"entries": sorted(results), "categories": categories, "browser": None}
    if args.browser:
        why = browser_unavailable(args.chromium)
        if why:
            print(f"report_check: browser check not run: {why}", file=sys.stderr)
            return 2
        found, seen = browser_check(args.report, args.screenshots, args.chromium)
        problems += found
        summary["browser"] = seen
    if args.json:
        Path(args.json).write_text(json.dumps({**summary, "problems": problems}, indent=2))
    for line in problems:
        print(f"report_check: {line}")
    n = len(results)
    print(
        f"report_check: {n} entries, {len(problems)} problems"
        + (" (checked in headless Chromium)" if args.browser else "")
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
