"""Geometry helpers for the steady-page tests (the static page and the served app share the view's layout)."""

import math

#: what must not move or change size when the slider or the measure moves
STEADY = (
    "header",
    "#grid-wrap",
    "#grid",
    "#grid-note",
    "#lines-wrap",
    "#lines-title",
    "#lines",
    "#breakdown-wrap",
    ".scaling",
    "#scale",
    "#scale-t",
    "#scale-reset",
    "#scale-max",
    "#scale-entropy",
    "#breakdown-title",
    "#breakdown",
)


def boxes(page, selectors=STEADY) -> dict:
    """``{selector: (x, y, width, height)}`` of the first match, rounded to 0.01 px."""
    return {
        s: tuple(
            round(v, 2)
            for v in page.locator(s).first.evaluate(
                "e => { const r = e.getBoundingClientRect(); return [r.x, r.y, r.width, r.height]; }"
            )
        )
        for s in selectors
    }


def label_sizes(page) -> list[float]:
    """The rendered font size of every label of the lines panel, in CSS px (font size x the drawing's scale)."""
    return page.evaluate(
        """() => { const svg = document.getElementById('lines');
                   const scale = svg.getBoundingClientRect().width / svg.viewBox.baseVal.width;
                   return [...svg.querySelectorAll('text')].map(
                       t => parseFloat(getComputedStyle(t).fontSize) * scale); }"""
    )


def one_line(page, selector) -> bool:
    """Whether the element's text sits on one line (its content is no taller than one line box)."""
    return page.eval_on_selector(
        selector, "e => e.scrollHeight <= parseFloat(getComputedStyle(e).lineHeight) * 1.5 + 1"
    )


def lines_and_labels(page) -> tuple[list[dict], list[dict]]:
    """The lines panel's lines (x1, y1, x2, y2, w) and label boxes (x, y, width, height, text) in SVG units."""
    return page.evaluate(
        """() => {
          const svg = document.getElementById('lines');
          const lines = [...svg.querySelectorAll('line')].map(l => ({
            x1: +l.getAttribute('x1'), y1: +l.getAttribute('y1'), x2: +l.getAttribute('x2'),
            y2: +l.getAttribute('y2'), w: +l.getAttribute('stroke-width') }));
          const labels = [...svg.querySelectorAll('text')].map(t => { const b = t.getBBox();
            return { x: b.x, y: b.y, width: b.width, height: b.height, text: t.textContent }; });
          return [lines, labels]; }"""
    )


def _point_segment(px, py, ax, ay, bx, by) -> float:
    dx, dy = bx - ax, by - ay
    t = 0.0 if dx == dy == 0 else max(0.0, min(1.0, ((px - ax) * dx + (py - ay) * dy) / (dx * dx + dy * dy)))
    return math.hypot(px - (ax + t * dx), py - (ay + t * dy))


def _segments_cross(a, b, c, d) -> bool:
    def orient(p, q, r):
        return (q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0])

    return orient(a, b, c) * orient(a, b, d) < 0 and orient(c, d, a) * orient(c, d, b) < 0


def segment_box_distance(line: dict, box: dict) -> float:
    """Distance between the segment (x1, y1)-(x2, y2) and the rectangle ``box`` (0 when they meet)."""
    a, b = (line["x1"], line["y1"]), (line["x2"], line["y2"])
    x0, y0, x1, y1 = box["x"], box["y"], box["x"] + box["width"], box["y"] + box["height"]
    if any(x0 <= p[0] <= x1 and y0 <= p[1] <= y1 for p in (a, b)):
        return 0.0
    corners = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    edges = list(zip(corners, corners[1:] + corners[:1]))
    if any(_segments_cross(a, b, c, d) for c, d in edges):
        return 0.0
    d1 = min(_point_segment(*c, *a, *b) for c in corners)
    d2 = min(_point_segment(*p, *c, *d) for p in (a, b) for c, d in edges)
    return min(d1, d2)


def covered_labels(page) -> list[tuple[str, float]]:
    """Labels that some line's stroke (a capsule of radius width/2 around it, round ends) reaches:
    ``[(label, overlap in px)]``."""
    lines, labels = lines_and_labels(page)
    hits = []
    for line in lines:
        for box in labels:
            gap = segment_box_distance(line, box) - line["w"] / 2
            if gap < 0:
                hits.append((box["text"], round(-gap, 2)))
    return hits
