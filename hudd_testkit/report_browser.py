"""Opens a report in headless Chromium (Debian's ``chromium``) and says what happened:
console errors and uncaught exceptions, images that did not load, the sections and the
engineer's entries as the browser shows them, and the page's load time. Shared by the
browser test and ``benchmarks/bench_report.py``.

How: a copy of the page beside it (so its relative links resolve) gets a probe script at
the start of ``<head>``; it records errors as they happen and, after the load event,
makes every lazy image load, waits for them, and writes its findings into the DOM, which
``--dump-dom`` prints.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

PROBE = """<script>
window.__probe = {errors: [], t0: performance.now()};
(function () {
  const p = window.__probe, err = console.error.bind(console);
  console.error = (...a) => { p.errors.push("console.error: " + a.join(" ")); err(...a); };
  addEventListener("error", (e) => {
    const t = e.target;
    p.errors.push(t && t.tagName ? "failed to load " + t.tagName + " " + (t.alt || t.src)
                                 : "uncaught: " + e.message);
  }, true);
  addEventListener("unhandledrejection", (e) => p.errors.push("unhandled rejection: " + e.reason));
  addEventListener("load", async () => {
    const nav = performance.getEntriesByType("navigation")[0];
    p.load_ms = nav ? nav.loadEventStart : null;
    p.dom_ms = nav ? nav.domContentLoadedEventEnd : null;
    const imgs = Array.from(document.images);
    for (const im of imgs) im.loading = "eager";
    const settled = (im) => im.complete ? null : new Promise((done) => {
      im.addEventListener("load", done);
      im.addEventListener("error", done);
    });
    await Promise.race([Promise.all(imgs.map(settled)), new Promise((r) => setTimeout(r, 15000))]);
    await new Promise((r) => setTimeout(r, 200));  // the page's own load handlers run first
    p.images = imgs.length;
    p.broken = imgs.filter((im) => !im.complete || !im.naturalWidth).map((im) => im.alt);
    p.sections = Array.from(document.querySelectorAll("section[id]")).map((s) => s.id);
    p.root_causes = Array.from(document.querySelectorAll(".root-cause")).map((e) => e.textContent);
    p.toc = Array.from(document.querySelectorAll("#toc a")).map((a) => a.getAttribute("href"));
    p.canvases_drawn = Array.from(document.querySelectorAll("canvas.anim")).filter((c) => {
      const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
      for (let i = 0; i < d.length; i += 4) if (d[i] || d[i + 1] || d[i + 2]) return true;
      return false;
    }).length;
    const sel = document.getElementById("sort-key"), min = document.getElementById("min-size");
    if (sel && min) {  // the clusters' navigation: default order, then sorted by id and filtered
      const ids = () => Array.from(document.querySelectorAll("#cluster-table tbody tr"))
        .filter((r) => !r.hidden).map((r) => Number(r.dataset.id));
      const cards = () => Array.from(document.querySelectorAll("#cluster-cards .card"))
        .filter((c) => !c.hidden).map((c) => Number(c.dataset.id));
      p.order = {default: ids()};
      sel.value = "id";
      sel.dispatchEvent(new Event("input"));
      min.value = String(window.__probe_min_size || 0);
      min.dispatchEvent(new Event("input"));
      p.order.by_id_filtered = ids();
      p.order.cards_by_id_filtered = cards();
    }
    const plot = document.getElementById("embedding-plot");
    if (plot) {  // point at the embedding's first sampled point: its image shows
      const pt = JSON.parse(document.getElementById("embedding-points").textContent)[0];
      const q = plot.createSVGPoint();
      q.x = pt[0]; q.y = pt[1];
      const at = q.matrixTransform(plot.getScreenCTM());
      const move = {clientX: at.x, clientY: at.y, bubbles: true};
      plot.dispatchEvent(new MouseEvent("mousemove", move));
      const tip = document.getElementById("embedding-tip"), c = tip.querySelector("canvas");
      const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
      p.hover = {shown: !tip.hidden, text: tip.textContent, point: pt,
                 drawn: d.some((v, i) => i % 4 !== 3 && v > 0)};
    }
    document.documentElement.setAttribute("data-probe", JSON.stringify(p));
  });
})();
</script>"""


def find_chromium() -> str | None:
    """The Chromium binary on PATH (Debian: ``chromium``), or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _run(browser: str, args: list[str], timeout: float) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [browser, *FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def probe(
    page: Path, browser: str, *, min_size: int = 0, budget_ms: int = 20000, timeout: float = 120
) -> dict:
    """Loads ``page`` with the probe; returns its findings plus ``console`` (Chromium's
    console lines that read as errors) and ``wall_s`` (the browser's run, start to exit).
    ``order``: the clusters shown (overview rows, ids) as the page first sorts them, then
    sorted by id and filtered to ``min_size`` members or more (rows, and the cards);
    ``hover``: what pointing at the embedding's first sampled point shows."""
    page = Path(page).resolve()
    text = page.read_text()
    copy = page.with_name(page.stem + ".probe.html")
    setting = f"<script>window.__probe_min_size = {int(min_size)};</script>"
    copy.write_text(text.replace("<head>", "<head>" + setting + PROBE, 1))
    try:
        t = time.perf_counter()
        res = _run(
            browser,
            [
                "--enable-logging=stderr",
                "--v=0",
                f"--virtual-time-budget={budget_ms}",
                "--dump-dom",
                copy.as_uri(),
            ],
            timeout,
        )
        wall = time.perf_counter() - t
    finally:
        copy.unlink()
    m = re.search(r'data-probe="([^"]*)"', res.stdout)
    if not m:
        raise RuntimeError(
            f"the probe did not report (exit {res.returncode}): {res.stderr[-2000:]}"
        )
    found = json.loads(html.unescape(m.group(1)))
    console = [
        line
        for line in res.stderr.splitlines()
        if ":CONSOLE" in line and re.search(r"Uncaught|Error|error", line)
    ]
    found.update(console=console, wall_s=wall)
    return found


def load_seconds(page: Path, browser: str, timeout: float = 120) -> dict:
    """How long the page takes to open: the browser's wall time to load and print it
    (``--dump-dom`` without virtual time: start, parse, load event, exit) and the same for
    an empty page (the browser's own start and exit), in seconds."""
    empty = Path(tempfile.mkdtemp()) / "empty.html"
    empty.write_text("<!DOCTYPE html><title>empty</title>")
    times = {}
    for name, target in (("page", Path(page).resolve()), ("empty", empty)):
        t = time.perf_counter()
        res = _run(browser, ["--dump-dom", target.as_uri()], timeout)
        times[name] = time.perf_counter() - t
        if res.returncode != 0:
            raise RuntimeError(f"chromium failed on {target}: {res.stderr[-2000:]}")
    shutil.rmtree(empty.parent)
    return {
        "wall_s": times["page"],
        "browser_start_s": times["empty"],
        "load_s": times["page"] - times["empty"],
    }


def screenshot(page: Path, png: Path, browser: str, size: str = "1400,3000") -> Path:
    """A PNG of the page's top ``size`` (width,height) pixels."""
    res = _run(
        browser,
        [
            f"--screenshot={png}",
            f"--window-size={size}",
            "--virtual-time-budget=5000",
            Path(page).resolve().as_uri(),
        ],
        120,
    )
    if not png.is_file():
        raise RuntimeError(f"no screenshot (exit {res.returncode}): {res.stderr[-2000:]}")
    return png
