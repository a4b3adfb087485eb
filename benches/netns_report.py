#!/usr/bin/env python3
"""Report of benches/netns_compare.py's results.jsonl (compare or scaling):
markdown tables on stdout, an SVG chart with --svg. Stdlib only.

usage: netns_report.py results.jsonl [--svg chart.svg] [--json-out report.json]
"""
import argparse
import json
import math
import statistics

SIZE_NAME = {64: "64 B", 1024: "1 KiB", 65536: "64 KiB", 1048576: "1 MiB"}
TARGET = {64: 10.0, 1024: 5.0, 65536: 5.0, 1048576: 5.0}


def sname(s):
    return SIZE_NAME.get(s, "%d B" % s)


def n0(x):
    return "-" if x is None else "{:,.0f}".format(x)


def n1(x):
    return "-" if x is None else ("{:,.1f}".format(x) if x < 1000 else "{:,.0f}".format(x))


def load(path):
    rows, metas = [], []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            o = json.loads(line)
            (metas if "meta" in o else rows).append(o.get("meta", o))
    return rows, metas


def best_tp(rows):
    ok = [r for r in rows if r.get("msgs_per_sec") is not None]
    return max(ok, key=lambda r: r["msgs_per_sec"]) if ok else None


def best_lat(rows):
    ok = [r for r in rows if r.get("p99") is not None]
    return min(ok, key=lambda r: r["p99"]) if ok else None


def value(r, size):
    """The figure a row is compared by: msgs/s up to 1 KiB, MB/s above."""
    if r is None:
        return None
    return r["msgs_per_sec"] if size <= 1024 else r["mb_per_sec"]


def vtext(r, size):
    if r is None:
        return "-"
    if size <= 1024:
        return "%s msgs/s" % n0(r["msgs_per_sec"])
    return "%s MB/s" % n1(r["mb_per_sec"])


def errors_of(rows):
    return sorted({"%s %s r%s: %s" % (r["system"], r.get("mtu", ""), r.get("rep"), r["error"])
                   for r in rows if r.get("error")})


def append_errors(out, rows):
    errs = errors_of(rows)
    if errs:
        out.append("")
        out.append("Rows that failed (kept, not dropped):")
        out.extend("- " + e for e in errs)


def meta_lines(metas):
    out = []
    for m in metas:
        out.append("- %s: %s, git %s, corosync %s, kernel %s, %s cpus, `%s`" % (
            m.get("when"), m.get("date"), m.get("git"), m.get("corosync"), m.get("kernel"),
            m.get("cpus"), m.get("uptime")))
    return out


# ------------------------------------------------------------------ compare
def compare_report(rows, metas):
    out = []
    m0 = metas[0] if metas else {}
    out.append("# netns comparison: %s cpg-rs nodes vs %s Corosync nodes, one per namespace" % (
        m0.get("nodes", "?"), m0.get("nodes", "?")))
    out.append("")
    out.append("Per member, AGREED, `%s` sends, %s s windows, best of %s; ratio = ours / best Corosync "
               "(round trip: Corosync p99 / ours p99 is the speed-up; the issue's target is ours p99 <= 1/2 of "
               "Corosync's, i.e. >= 2x here). Targets: 64 B >= 10x, larger >= 5x." % (
                   m0.get("send", "copy"), m0.get("seconds"), m0.get("repeat")))
    out.append("")
    out.extend(meta_lines(metas))
    out.append("")
    transports = sorted({r["system"] for r in rows if r["system"].startswith("corosync-")})
    configs = sorted({(r["crypto"], r["mtu"]) for r in rows})
    summary = []
    head = "| crypto | MTU | row | cpg-rs | " + " | ".join(transports) + " | ratio | target |"
    out.append(head)
    out.append("|" + "---|" * (head.count("|") - 1))
    for crypto, mtu in configs:
        sel = [r for r in rows if r["crypto"] == crypto and r["mtu"] == mtu]
        sizes = sorted({r["size"] for r in sel if not r["latency"]})
        for size in sizes:
            ours = best_tp([r for r in sel if r["system"] == "cpg-rs" and r["size"] == size and not r["latency"]])
            theirs = {t: best_tp([r for r in sel if r["system"] == t and r["size"] == size and not r["latency"]])
                      for t in transports}
            bt = max((x for x in theirs.values() if x), key=lambda r: value(r, size), default=None)
            ratio = value(ours, size) / value(bt, size) if ours and bt and value(bt, size) else None
            met = "" if ratio is None else ("met" if ratio >= TARGET.get(size, 5) else "not met (>= %gx)" % TARGET.get(size, 5))
            out.append("| %s | %d | %s AGREED | %s | %s | %s | %s |" % (
                crypto, mtu, sname(size), vtext(ours, size),
                " | ".join(vtext(theirs[t], size) for t in transports),
                "-" if ratio is None else "%.1fx" % ratio, met))
            summary.append({"crypto": crypto, "mtu": mtu, "row": "%s AGREED" % sname(size), "ratio": ratio,
                            "target": TARGET.get(size, 5), "ours": value(ours, size),
                            "corosync": value(bt, size), "corosync_system": bt and bt["system"]})
        lat = [r for r in sel if r["latency"]]
        if lat:
            ours = best_lat([r for r in lat if r["system"] == "cpg-rs"])
            theirs = {t: best_lat([r for r in lat if r["system"] == t]) for t in transports}
            bt = min((x for x in theirs.values() if x), key=lambda r: r["p99"], default=None)
            ratio = bt["p99"] / ours["p99"] if ours and bt and ours["p99"] else None
            lt = lambda r: "-" if r is None else "%s/%s µs" % (n0(r["p50"]), n0(r["p99"]))
            met = "" if ratio is None else ("met" if ratio >= 2 else "not met (>= 2x)")
            out.append("| %s | %d | 64 B round trip p50/p99 | %s | %s | %s | %s |" % (
                crypto, mtu, lt(ours), " | ".join(lt(theirs[t]) for t in transports),
                "-" if ratio is None else "%.2fx (ours p99 = %.2f of theirs)" % (ratio, 1 / ratio), met))
            summary.append({"crypto": crypto, "mtu": mtu, "row": "64 B round trip p99", "ratio": ratio,
                            "target": 2.0, "ours": ours and ours["p99"], "corosync": bt and bt["p99"],
                            "corosync_system": bt and bt["system"]})
    append_errors(out, rows)
    lost = [r for r in rows if (r.get("lost") or 0) > 0]
    if lost:
        out.append("")
        out.append("Rows with lost > 0: " + ", ".join("%s %d %s %s r%d (%d)" % (
            r["system"], r["mtu"], r["crypto"], sname(r["size"]), r["rep"], r["lost"]) for r in lost))
    return "\n".join(out), summary


def compare_svg(summary, path):
    configs = []
    for s in summary:
        k = (s["crypto"], s["mtu"])
        if k not in configs:
            configs.append(k)
    labels = []
    for s in summary:
        if s["row"] not in labels:
            labels.append(s["row"])
    bw, gap, left, top = 16, 14, 70, 50
    gw = len(labels) * bw + gap
    width = left + len(configs) * gw + 200
    height = 360
    lo, hi = 0.1, 100.0
    ph = height - top - 80

    def y(v):
        v = min(max(v, lo), hi)
        return top + ph - (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) * ph

    colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd"]
    e = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="11">' % (width, height),
         '<rect width="100%" height="100%" fill="white"/>',
         '<text x="%d" y="20" font-size="14">cpg-rs / Corosync per member, N namespaces (log scale; round trip: Corosync p99 / ours)</text>' % left]
    for v in (0.1, 0.5, 1, 2, 5, 10, 20, 50, 100):
        e.append('<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="%s"/>' % (
            left, left + len(configs) * gw, y(v), y(v), "#444" if v == 1 else "#ddd"))
        e.append('<text x="%d" y="%.1f" text-anchor="end">%gx</text>' % (left - 5, y(v) + 4, v))
    for ci, (crypto, mtu) in enumerate(configs):
        x0 = left + ci * gw + gap / 2
        for li, lab in enumerate(labels):
            s = next((s for s in summary if s["crypto"] == crypto and s["mtu"] == mtu and s["row"] == lab), None)
            x = x0 + li * bw
            if s and s["ratio"]:
                yy = y(s["ratio"])
                e.append('<rect x="%.1f" y="%.1f" width="%d" height="%.1f" fill="%s"><title>%s %s %s: %.2fx</title></rect>' % (
                    x, min(yy, y(1)), bw - 2, abs(y(1) - yy), colors[li % len(colors)], crypto, mtu, lab, s["ratio"]))
                e.append('<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="black" stroke-dasharray="2,2"/>' % (
                    x, x + bw - 2, y(s["target"]), y(s["target"])))
            else:
                e.append('<text x="%.1f" y="%.1f" font-size="9">n/a</text>' % (x, y(1) - 3))
        e.append('<text x="%.1f" y="%d" text-anchor="middle">MTU %d, crypto %s</text>' % (
            x0 + len(labels) * bw / 2, top + ph + 18, mtu, crypto))
    lx = left + len(configs) * gw + 10
    for li, lab in enumerate(labels):
        e.append('<rect x="%d" y="%d" width="10" height="10" fill="%s"/><text x="%d" y="%d">%s</text>' % (
            lx, top + li * 16, colors[li % len(colors)], lx + 14, top + li * 16 + 9, lab))
    e.append('<text x="%d" y="%d">dashed: target</text>' % (lx, top + len(labels) * 16 + 12))
    e.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(e) + "\n")


# ------------------------------------------------------------------ scaling
def scaling_report(rows, metas):
    out = ["# netns scaling: one node per namespace on a bridge", ""]
    m0 = metas[0] if metas else {}
    tp = [r for r in rows if r.get("kind") == "throughput"]
    fo = [r for r in rows if r.get("kind") == "failover"]
    mtu = tp[0]["mtu"] if tp else (m0.get("mtus") or ["?"])[0]
    tok = fo[0]["token_ms"] if fo else "?"
    coef = fo[0]["token_coefficient_ms"] if fo else "?"
    out.append("MTU %s, crypto off, AGREED, %s s windows, best of %s; token %s ms, token_coefficient %s ms on both "
               "systems (consensus: the default, 1.2 x the effective token). Rotation = window / token rotations "
               "seen by the member (median over members, 64 B row). Failover = SIGKILL of the highest node id "
               "-> the confchg without it on every survivor (ours: the `cpgtool node` event's arrival at the "
               "driver; Corosync: the survivors' `A new membership` / `Members left` log line, `timestamp: hires`); "
               "the slowest survivor, median over %s tries. Formula: Corosync's failover time, "
               "token + (N - 2) x token_coefficient + consensus." % (
                   mtu, m0.get("seconds"), m0.get("repeat"), tok, coef, max([r["rep"] for r in fo] or [0])))
    out.append("")
    out.extend(meta_lines(metas))
    out.append("")
    ns = sorted({r["nodes"] for r in rows if "nodes" in r})
    sizes = sorted({r["size"] for r in tp})
    head = "| nodes | " + " | ".join("%s msgs/s per member: ours / Corosync" % sname(s) for s in sizes) + \
        " | rotation (64 B) | failover ours | failover Corosync | Corosync's formula |"
    out.append(head)
    out.append("|" + "---:|" * (head.count("|") - 1))
    summ = []
    for n in ns:
        cells = []
        srow = {"nodes": n}
        for s in sizes:
            o = best_tp([r for r in tp if r["nodes"] == n and r["size"] == s and r["system"] == "cpg-rs"])
            c = best_tp([r for r in tp if r["nodes"] == n and r["size"] == s and r["system"] != "cpg-rs"])
            cells.append("%s / %s%s" % (n0(o and o["msgs_per_sec"]), n0(c and c["msgs_per_sec"]),
                                        (" (%.1fx)" % (o["msgs_per_sec"] / c["msgs_per_sec"])) if o and c and c["msgs_per_sec"] else ""))
            srow["ours_%d" % s] = o and o["msgs_per_sec"]
            srow["cs_%d" % s] = c and c["msgs_per_sec"]
        o64 = best_tp([r for r in tp if r["nodes"] == n and r["size"] == min(sizes or [64]) and r["system"] == "cpg-rs"])
        rot = o64.get("rotation_us") if o64 else None

        def fov(system):
            xs = sorted(r["max_ms"] for r in fo if r["nodes"] == n and r["system"] == system and "max_ms" in r)
            return statistics.median(xs) if xs else None
        fo_o, fo_c = fov("cpg-rs"), fov("corosync-knet")
        formula = next((r["formula_ms"] for r in fo if r["nodes"] == n), None)
        cells.append("-" if rot is None else "%s µs" % n0(rot))
        cells.append("-" if fo_o is None else "%s ms" % n0(fo_o))
        cells.append("-" if fo_c is None else "%s ms" % n0(fo_c))
        cells.append("-" if formula is None else "%s ms" % n0(formula))
        srow.update({"rotation_us": rot, "failover_ours_ms": fo_o, "failover_cs_ms": fo_c, "formula_ms": formula})
        summ.append(srow)
        out.append("| %d | %s |" % (n, " | ".join(cells)))
    append_errors(out, rows)
    lost = [r for r in tp if (r.get("lost") or 0) > 0]
    if lost:
        out.append("")
        out.append("Rows where messages accepted in the window were not all delivered within the 10 s drain "
                   "(`lost` > 0, `drained` false): " + "; ".join(
                       "%s N=%d %s r%d: lost %s, %s msgs/s, rotation %s µs" % (
                           r["system"], r["nodes"], sname(r["size"]), r["rep"], n0(r["lost"]),
                           n0(r.get("msgs_per_sec")), n0(r.get("rotation_us"))) for r in lost))
    out.append("")
    out.append("Every failover try (slowest survivor, ms): " + "; ".join(
        "%s N=%d: %s" % (r["system"], r["nodes"], n0(r.get("max_ms")) if "max_ms" in r else "ERROR " + r.get("error", ""))
        for r in fo))
    return "\n".join(out), summ


def scaling_svg(summ, path):
    W, H = 900, 360
    e = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="11">' % (W, H),
         '<rect width="100%" height="100%" fill="white"/>']
    ns = [s["nodes"] for s in summ]
    if not ns:
        e.append("</svg>")
        open(path, "w").write("\n".join(e))
        return

    def panel(x0, title, series, logy, unit):
        pw, ph, top = 360, 240, 50
        vals = [v for _, _, pts in series for _, v in pts if v]
        if not vals:
            return
        lo, hi = min(vals), max(vals)
        if logy:
            lo, hi = 10 ** math.floor(math.log10(lo)), 10 ** math.ceil(math.log10(hi))
            fy = lambda v: top + ph - (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) * ph
            ticks = [10 ** k for k in range(int(math.log10(lo)), int(math.log10(hi)) + 1)]
        else:
            lo, hi = 0, hi * 1.1
            fy = lambda v: top + ph - (v - lo) / (hi - lo) * ph
            ticks = [hi * k / 5 for k in range(6)]
        xs = sorted(set(ns))
        fx = lambda n: x0 + 50 + (xs.index(n) / max(len(xs) - 1, 1)) * (pw - 60)
        e.append('<text x="%d" y="30" font-size="13">%s</text>' % (x0 + 50, title))
        for t in ticks:
            e.append('<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/><text x="%d" y="%.1f" text-anchor="end">%s</text>' % (
                x0 + 50, x0 + pw, fy(t), fy(t), x0 + 45, fy(t) + 4, "{:,.0f}".format(t)))
        for n in xs:
            e.append('<text x="%.1f" y="%d" text-anchor="middle">%d</text>' % (fx(n), top + ph + 15, n))
        e.append('<text x="%d" y="%d">nodes (%s)</text>' % (x0 + pw // 2, top + ph + 32, unit))
        for li, (name, color, pts) in enumerate(series):
            pts = [(n, v) for n, v in pts if v]
            if not pts:
                continue
            e.append('<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>' % (
                color, " ".join("%.1f,%.1f" % (fx(n), fy(v)) for n, v in pts)))
            for n, v in pts:
                e.append('<circle cx="%.1f" cy="%.1f" r="3" fill="%s"><title>%s N=%d: %.0f</title></circle>' % (
                    fx(n), fy(v), color, name, n, v))
            e.append('<text x="%d" y="%d" fill="%s">%s</text>' % (x0 + 60, top + 12 + li * 14, color, name))

    panel(0, "throughput per member (msgs/s, log)", [
        ("ours 64 B", "#1f77b4", [(s["nodes"], s.get("ours_64")) for s in summ]),
        ("ours 1 KiB", "#2ca02c", [(s["nodes"], s.get("ours_1024")) for s in summ]),
        ("Corosync 64 B", "#ff7f0e", [(s["nodes"], s.get("cs_64")) for s in summ]),
        ("Corosync 1 KiB", "#d62728", [(s["nodes"], s.get("cs_1024")) for s in summ]),
    ], True, "msgs/s")
    panel(450, "failover: SIGKILL -> confchg on survivors (ms)", [
        ("ours", "#1f77b4", [(s["nodes"], s.get("failover_ours_ms")) for s in summ]),
        ("Corosync measured", "#ff7f0e", [(s["nodes"], s.get("failover_cs_ms")) for s in summ]),
        ("Corosync formula", "#999", [(s["nodes"], s.get("formula_ms")) for s in summ]),
    ], False, "ms")
    e.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(e) + "\n")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("results")
    p.add_argument("--svg")
    p.add_argument("--json-out")
    a = p.parse_args()
    rows, metas = load(a.results)
    if any(r.get("kind") for r in rows):
        text, summ = scaling_report(rows, metas)
        if a.svg:
            scaling_svg(summ, a.svg)
    else:
        text, summ = compare_report(rows, metas)
        if a.svg:
            compare_svg(summ, a.svg)
    print(text)
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump(summ, f, indent=1)


if __name__ == "__main__":
    main()
