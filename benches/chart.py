#!/usr/bin/env python3
"""SVG bar chart of the benchmark rows (standard library only), for benches/load.sh.

    python3 benches/chart.py ROWS.tsv OUT.svg "subtitle"

ROWS.tsv: one row per line, tab-separated: label, req/s, p99 in ms, CPU µs per request.
Draws three panels side by side (req/s, p99, CPU µs/req), one horizontal bar per row, each bar
labelled with its value; the nginx row's bar is drawn in a darker shade as the reference, with a
dashed line at its value across the panel.
"""
import sys
from xml.sax.saxutils import escape

ROW_H = 30
BAR_H = 18
LABEL_W = 250
PANEL_W = 250
GAP = 30
TOP = 70
FONT = "font-family='DejaVu Sans, Helvetica, Arial, sans-serif'"
COLOURS = ["#4c78a8", "#f58518", "#54a24b"]
REFERENCE = "nginx"  # the row whose bars are drawn darker


def nice_max(value):
    """A round axis maximum at or above value."""
    if value <= 0:
        return 1.0
    magnitude = 10 ** (len(str(int(value))) - 1)
    for step in (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude


def fmt(value, kind):
    if kind == "rps":
        return f"{value:,.0f}"
    if kind == "ms":
        return f"{value:.2f} ms"
    return f"{value:.1f} µs"


def darker(colour):
    r, g, b = (int(colour[i:i + 2], 16) for i in (1, 3, 5))
    return "#%02x%02x%02x" % (r * 6 // 10, g * 6 // 10, b * 6 // 10)


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    rows = []
    with open(sys.argv[1], encoding="utf-8") as f:
        for line in f:
            if line.strip():
                label, rps, p99, cpu = line.rstrip("\n").split("\t")
                rows.append((label, float(rps), float(p99), float(cpu)))
    if not rows:
        sys.exit("chart.py: no rows")
    panels = [("throughput, req/s (higher is better)", 1, "rps"),
              ("p99 latency (lower is better)", 2, "ms"),
              ("proxy CPU per request (lower is better)", 3, "us")]
    width = LABEL_W + len(panels) * (PANEL_W + GAP) + 20
    height = TOP + len(rows) * ROW_H + 40
    out = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
           f"viewBox='0 0 {width} {height}' {FONT} font-size='12'>",
           f"<rect width='{width}' height='{height}' fill='white'/>",
           f"<text x='10' y='22' font-size='16' font-weight='bold'>Gateway load benchmark</text>",
           f"<text x='10' y='42' fill='#555'>{escape(sys.argv[3])}</text>"]
    for i, (label, *_rest) in enumerate(rows):
        y = TOP + i * ROW_H + ROW_H / 2 + 4
        out.append(f"<text x='{LABEL_W - 8}' y='{y:.0f}' text-anchor='end'>{escape(label)}</text>")
    for p, (title, col, kind) in enumerate(panels):
        x0 = LABEL_W + p * (PANEL_W + GAP)
        top = nice_max(max(r[col] for r in rows))
        out.append(f"<text x='{x0}' y='{TOP - 10}' font-weight='bold'>{escape(title)}</text>")
        out.append(f"<line x1='{x0}' y1='{TOP - 4}' x2='{x0}' y2='{TOP + len(rows) * ROW_H}' stroke='#999'/>")
        reference = [r[col] for r in rows if r[0].startswith(REFERENCE)]
        if reference:
            x = x0 + max(1.0, reference[0] / top * (PANEL_W - 70))
            out.append(f"<line x1='{x:.1f}' y1='{TOP - 4}' x2='{x:.1f}' y2='{TOP + len(rows) * ROW_H}' "
                       f"stroke='#333' stroke-dasharray='3,3' stroke-width='1'/>")
        for i, row in enumerate(rows):
            value = row[col]
            w = max(1.0, value / top * (PANEL_W - 70))
            y = TOP + i * ROW_H + (ROW_H - BAR_H) / 2
            colour = darker(COLOURS[p]) if row[0].startswith(REFERENCE) else COLOURS[p]
            out.append(f"<rect x='{x0}' y='{y:.0f}' width='{w:.1f}' height='{BAR_H}' fill='{colour}'/>")
            out.append(f"<text x='{x0 + w + 4:.1f}' y='{y + BAR_H - 5:.0f}' fill='#222'>{fmt(value, kind)}</text>")
    out.append(f"<text x='10' y='{height - 12}' fill='#777' font-size='11'>"
               "benches/load.sh: wrk over keep-alive on loopback; all processes share the machine's cores, "
               "compare rows of one run only</text>")
    out.append("</svg>")
    with open(sys.argv[2], "w", encoding="utf-8") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
