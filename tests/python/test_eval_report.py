"""`bantam eval --html`: the report of a real two-model comparison, laid out by a real
headless browser (Chromium, from the distribution's packages): every chart has a size, every
model is a point inside its chart, the Pareto front is marked, and nothing is fetched."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from test_eval import SENTIMENT, eval_, write_jsonl

MEASURE = """<script>
addEventListener('load', () => {
  const box = e => { const b = e.getBoundingClientRect(); return {x: b.x, y: b.y, w: b.width, h: b.height}; };
  const r = {
    svgs: [...document.querySelectorAll('figure svg')].map(s => ({figure: s.closest('figure').className, ...box(s)})),
    points: [...document.querySelectorAll('circle.point')].map(c => ({model: c.dataset.model, figure: c.closest('figure').className, pareto: c.classList.contains('pareto'), ...box(c)})),
    boxes: [...document.querySelectorAll('rect.box')].map(b => ({model: b.dataset.model, ...box(b)})),
    cells: document.querySelectorAll('rect.cell').length,
    rows: document.querySelectorAll('#figures tr').length,
    resources: performance.getEntriesByType('resource').length,
  };
  document.body.setAttribute('data-measured', JSON.stringify(r));
});
</script>"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    raise AssertionError("no Chromium: scripts/test.sh installs it with apt-get (package chromium)")


def browse(page: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
                           "--user-data-dir=" + str(page.parent / "chromium-profile"), *args, page.as_uri()],
                          capture_output=True, text=True, timeout=120)


def test_the_html_report_renders_in_a_real_browser(tmp_path):
    data = write_jsonl(tmp_path / "sentiment.jsonl", [{"input": t, "label": l} for t, l in SENTIMENT])
    report = tmp_path / "report.html"
    models = ["smollm2:135m", "gemma3:270m"]
    eval_(str(data), "--models", ",".join(models), "--kind", "classify", "--labels", "positive,negative",
          "--hardware-cost", "0.5", "--json", str(tmp_path / "s.json"), "--html", str(report))
    html = report.read_text()
    assert "<script" not in html and "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    summary = json.loads((tmp_path / "s.json").read_text())

    measured = tmp_path / "measured.html"
    measured.write_text(html.replace("</body>", MEASURE + "</body>"))
    dom = browse(measured, "--dump-dom", "--virtual-time-budget=2000")
    assert dom.returncode == 0, dom.stderr[-2000:]
    start = dom.stdout.index("data-measured=\"") + len("data-measured=\"")
    raw = dom.stdout[start:dom.stdout.index("\"", start)]
    r = json.loads(raw.replace("&quot;", "\"").replace("&amp;", "&"))

    assert r["resources"] == 0, "the page fetched something"
    assert r["rows"] == 1 + len(models)
    charts = {s["figure"]: s for s in r["svgs"]}
    for name in ("accuracy-cost", "accuracy-latency", "latency", "confusion"):
        assert name in charts and charts[name]["w"] > 100 and charts[name]["h"] > 100, (name, r["svgs"])
    for figure in ("accuracy-cost", "accuracy-latency"):
        points = [p for p in r["points"] if p["figure"] == figure]
        assert sorted(p["model"] for p in points) == sorted(models), points
        chart = charts[figure]
        for p in points:
            assert chart["x"] <= p["x"] and p["x"] + p["w"] <= chart["x"] + chart["w"] + 1, (p, chart)
            assert chart["y"] <= p["y"] and p["y"] + p["h"] <= chart["y"] + chart["h"] + 1, (p, chart)
        # The most accurate model (the cheaper of a tie) is always on the front.
        by = {m["model"]: m for m in summary["models"]}
        key = "cost_per_success_usd" if figure == "accuracy-cost" else "latency_ms"
        x = (lambda m: m[key]) if key == "cost_per_success_usd" else (lambda m: m[key]["p50"])
        best = max(models, key=lambda n: (by[n]["accuracy"], -x(by[n])))
        assert any(p["pareto"] and p["model"] == best for p in points), (figure, points)
    assert sorted(b["model"] for b in r["boxes"]) == sorted(models)
    assert all(b["w"] > 0 for b in r["boxes"])
    assert r["cells"] == 4 * len(models)

    # The picture docs/CHOOSING-A-MODEL.md shows is the same page, screenshotted.
    shot = tmp_path / "report.png"
    p = browse(report, f"--screenshot={shot}", "--window-size=1280,1700", "--hide-scrollbars")
    assert p.returncode == 0 and shot.stat().st_size > 10_000, p.stderr[-2000:]
    if os.environ.get("BANTAM_REPORT_PNG"):
        shutil.copy(shot, os.environ["BANTAM_REPORT_PNG"])
