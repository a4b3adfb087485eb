#!/usr/bin/env python3
"""Report for the side-by-side benchmark (issue 4): cpg-rs against Corosync.

Reads the JSON lines of benches/compare.sh (one per member process and row,
from `cpgtool bench --json`, benches/corosync/cpgload and
benches/loopback_ceiling) and prints ONE comparison table, a latency table,
the Corosync figures per transport and the loopback ceiling; optionally
writes the table as JSON and an SVG chart (msgs/s and MB/s by size, log
scale, both systems, AGREED copy rows).

  report.py results.jsonl [--json] [--json-out FILE] [--svg FILE]
  report.py --summary-lines < lines     (one short line per row, for progress)

Rules:
* A row is (members, size, guarantee, send); latency rows are separate.
* Figures are per member: the mean over that row's member processes; if a
  row was repeated (compare.sh --repeat), its best repeat.
* Corosync's figure for a row is the faster of its transports (corosync-knet,
  corosync-udpu); ours likewise if several cpg-rs systems are present.
* Our zcb rows are compared with Corosync's *copying* path (same members,
  size, guarantee); Corosync's own zcb figure is shown beside it.
* Rows that lost messages or failed are marked; a row with an error never
  wins the "best transport" choice over one without.
Standard library only.
"""
import argparse
import json
import math
import sys

SIZE_ORDER = [64, 1024, 65536, 1048576]
G_ORDER = {"agreed": 0, "safe": 1}
S_ORDER = {"copy": 0, "zcb": 1}


def load(lines):
    out = []
    for ln in lines:
        ln = ln.strip()
        if not ln.startswith("{"):
            continue
        try:
            out.append(json.loads(ln))
        except json.JSONDecodeError:
            continue
    return out


# --ours-system: compare only this cpg-rs system (e.g. cpg-rs-cpgd, the
# same topology as Corosync's rows: one node, M client processes).
OURS_ONLY = None


def kind(system):
    s = str(system or "")
    if s == "loopback":
        return "loopback"
    if s.startswith("corosync"):
        return "corosync"
    if OURS_ONLY is not None and s != OURS_ONLY:
        return "other"
    return "ours"


def is_latency(r):
    return bool(r.get("latency")) or r.get("latency_us") not in (None, {})


def row_key(r):
    return (int(r.get("members", 0)), int(r.get("size", 0)), str(r.get("guarantee", "")),
            str(r.get("send", "")), is_latency(r))


def aggregate(records):
    """(system, key) -> aggregated figures over member processes; with several
    repeats of a row (compare.sh --repeat), the best repeat."""
    per_rep = aggregate_reps(records)
    agg = {}
    for (system, key, rep), a in per_rep.items():
        a["rep"] = rep
        cur = agg.get((system, key))
        if cur is None:
            agg[(system, key)] = a
            a["reps"] = 1
            continue
        reps = cur["reps"] + 1
        if rep_score(a, key[4]) > rep_score(cur, key[4]):
            agg[(system, key)] = a
        agg[(system, key)]["reps"] = reps
    return agg


def rep_score(a, latency):
    if not usable(a):
        return (0, 0, 0.0)
    clean = 1 if a.get("lost", 0) == 0 else 0
    if latency:
        p50 = a.get("latency_us", {}).get("p50")
        return (1, clean, -p50 if p50 is not None else -math.inf)
    return (1, clean, a["msgs_per_sec"])


def aggregate_reps(records):
    groups = {}
    for r in records:
        if kind(r.get("system")) == "loopback" or "members" not in r:
            continue
        groups.setdefault((r["system"], row_key(r), int(r.get("rep", 1))), []).append(r)
    agg = {}
    for (system, key, rep), rs in groups.items():
        ok = [r for r in rs if "error" not in r]
        errors = sorted({r["error"] for r in rs if "error" in r})
        a = {"system": system, "procs": len(rs), "ok": len(ok), "errors": errors}
        if ok:
            a["msgs_per_sec"] = sum(float(r.get("msgs_per_sec", 0)) for r in ok) / len(ok)
            a["mb_per_sec"] = sum(float(r.get("mb_per_sec", 0)) for r in ok) / len(ok)
            a["lost"] = sum(int(r.get("lost", 0) or 0) for r in ok)
            a["delivered"] = sum(int(r.get("delivered", 0) or 0) for r in ok)
            lats = [r["latency_us"] for r in ok if isinstance(r.get("latency_us"), dict)]
            if lats:
                a["latency_us"] = {
                    p: sum(float(l.get(p, 0)) for l in lats) / len(lats) for p in ("p50", "p99", "p999")
                }
                a["latency_us"]["samples"] = sum(int(l.get("samples", 0)) for l in lats)
        agg[(system, key, rep)] = a
    return agg


def usable(a):
    return a is not None and a.get("ok", 0) > 0 and not a["errors"] and "msgs_per_sec" in a


def best(agg, which, key, latency=False):
    """Best system of a kind for a row: highest msgs/s (lowest p50 for latency).
    Clean rows (no error, nothing lost) win over flawed ones."""
    cands = [a for (s, k), a in agg.items() if k == key and kind(s) == which]
    if not cands:
        return None

    return max(cands, key=lambda a: rep_score(a, latency))


def loopback_ceiling(records):
    big = [r for r in records if kind(r.get("system")) == "loopback" and int(r.get("size", 0)) >= 60000]
    small = [r for r in records if kind(r.get("system")) == "loopback" and int(r.get("size", 0)) <= 64]
    c = {}
    if big:
        r = max(big, key=lambda r: r.get("mb_per_sec", 0))
        c["big"] = r
    if small:
        c["small"] = max(small, key=lambda r: r.get("datagrams_per_sec", 0))
    return c


def fmt_num(x, digits=0):
    if x is None:
        return "n/a"
    if digits == 0:
        return f"{x:,.0f}"
    return f"{x:,.{digits}f}"


def fmt_mb(x):
    if x is None:
        return "n/a"
    if x >= 100:
        return f"{x:,.0f}"
    if x >= 1:
        return f"{x:.1f}"
    return f"{x:.2f}"


def size_label(n):
    if n >= 1048576 and n % 1048576 == 0:
        return f"{n // 1048576} MiB"
    if n >= 1024 and n % 1024 == 0:
        return f"{n // 1024} KiB"
    return f"{n} B"


def build_table(records):
    agg = aggregate(records)
    ceiling = loopback_ceiling(records)
    ceil_mb = ceiling["big"]["mb_per_sec"] if "big" in ceiling else None
    keys = sorted({k for (_, k) in agg},
                  key=lambda k: (k[4], k[0], SIZE_ORDER.index(k[1]) if k[1] in SIZE_ORDER else 99, k[1],
                                 G_ORDER.get(k[2], 9), S_ORDER.get(k[3], 9)))
    rows, lat_rows, cs_rows = [], [], []
    for key in keys:
        m, size, g, send, lat = key
        ours = best(agg, "ours", key, latency=lat)
        cs_key = (m, size, g, "copy", lat)
        cs = best(agg, "corosync", cs_key, latency=lat)
        cs_same = best(agg, "corosync", key, latency=lat) if send != "copy" else None
        if not lat:
            o_ok, c_ok = usable(ours), usable(cs)
            row = {
                "members": m, "size": size, "guarantee": g, "send": send,
                "ours_system": ours["system"] if ours else None,
                "ours_msgs_per_sec": ours.get("msgs_per_sec") if o_ok else None,
                "ours_mb_per_sec": ours.get("mb_per_sec") if o_ok else None,
                "ours_lost": ours.get("lost") if o_ok else None,
                "ours_error": (ours["errors"][0] if ours and ours["errors"] else None),
                "corosync_system": cs["system"] if cs else None,
                "corosync_send": "copy",
                "corosync_msgs_per_sec": cs.get("msgs_per_sec") if c_ok else None,
                "corosync_mb_per_sec": cs.get("mb_per_sec") if c_ok else None,
                "corosync_lost": cs.get("lost") if c_ok else None,
                "corosync_error": (cs["errors"][0] if cs and cs["errors"] else None),
            }
            if send != "copy":
                row["corosync_same_send_system"] = cs_same["system"] if cs_same else None
                row["corosync_same_send_msgs_per_sec"] = cs_same.get("msgs_per_sec") if usable(cs_same) else None
                row["corosync_same_send_mb_per_sec"] = cs_same.get("mb_per_sec") if usable(cs_same) else None
                row["corosync_same_send_lost"] = cs_same.get("lost") if usable(cs_same) else None
            r_o, r_c = row["ours_msgs_per_sec"], row["corosync_msgs_per_sec"]
            row["ratio"] = (r_o / r_c) if (r_o is not None and r_c) else None
            if ceil_mb and size >= 65536:
                row["ours_fraction_of_loopback"] = (row["ours_mb_per_sec"] / ceil_mb
                                                    if row["ours_mb_per_sec"] is not None else None)
                row["corosync_fraction_of_loopback"] = (row["corosync_mb_per_sec"] / ceil_mb
                                                        if row["corosync_mb_per_sec"] is not None else None)
            rows.append(row)
            # Corosync by transport, its own send path
            per = {}
            for (s, k), a in agg.items():
                if k == key and kind(s) == "corosync":
                    per[s] = {"msgs_per_sec": a.get("msgs_per_sec"), "mb_per_sec": a.get("mb_per_sec"),
                              "lost": a.get("lost"), "errors": a["errors"], "procs": a["procs"]}
            if per:
                cs_rows.append({"members": m, "size": size, "guarantee": g, "send": send, "latency": False,
                                "by_transport": per})
        else:
            def lat_of(a):
                return a.get("latency_us") if usable(a) else None
            lo, lc = lat_of(ours), lat_of(cs)
            row = {
                "members": m, "size": size, "guarantee": g, "send": send,
                "ours_system": ours["system"] if ours else None,
                "ours_latency_us": lo,
                "ours_error": (ours["errors"][0] if ours and ours["errors"] else None),
                "corosync_system": cs["system"] if cs else None,
                "corosync_latency_us": lc,
                "corosync_error": (cs["errors"][0] if cs and cs["errors"] else None),
            }
            for p in ("p50", "p99", "p999"):
                row[f"ratio_{p}"] = (lo[p] / lc[p]) if (lo and lc and lc.get(p)) else None
            lat_rows.append(row)
            per = {}
            for (s, k), a in agg.items():
                if k == key and kind(s) == "corosync":
                    per[s] = {"latency_us": a.get("latency_us"), "msgs_per_sec": a.get("msgs_per_sec"),
                              "mb_per_sec": a.get("mb_per_sec"),
                              "lost": a.get("lost"), "errors": a["errors"], "procs": a["procs"]}
            if per:
                cs_rows.append({"members": m, "size": size, "guarantee": g, "send": send, "latency": True,
                                "by_transport": per})
    loop = {}
    if "big" in ceiling:
        b = ceiling["big"]
        loop["big"] = {"size": b["size"], "datagrams_per_sec": b.get("datagrams_per_sec"),
                       "mb_per_sec": b.get("mb_per_sec"), "gb_per_sec": b.get("gb_per_sec")}
    if "small" in ceiling:
        s = ceiling["small"]
        loop["small"] = {"size": s["size"], "datagrams_per_sec": s.get("datagrams_per_sec"),
                         "mb_per_sec": s.get("mb_per_sec")}
    meta = [r["meta"] for r in records if isinstance(r.get("meta"), dict)]
    return {"meta": meta, "throughput": rows, "latency": lat_rows, "corosync_by_transport": cs_rows,
            "loopback": loop}


def render_text(t):
    out = []

    def table(header, body):
        widths = [max(len(str(x)) for x in col) for col in zip(header, *body)] if body else [len(h) for h in header]
        fmt_row = lambda r: "  ".join(str(c).rjust(w) for c, w in zip(r, widths))
        out.append(fmt_row(header))
        out.append("  ".join("-" * w for w in widths))
        for r in body:
            out.append(fmt_row(r))

    def lost_mark(v):
        return "" if not v else f" !lost {v}"

    out.append("Throughput per member (unique application payload delivered, own messages included;"
               " MB = 10^6 B)")
    out.append("Corosync = faster of its transports; our zcb rows are compared with Corosync's copying path.")
    header = ["M", "size", "guar", "send", "cpg-rs msgs/s", "cpg-rs MB/s", "Corosync", "msgs/s", "MB/s",
              "us/Corosync", "loopback us", "loopback CS", "notes"]
    body = []
    for r in t["throughput"]:
        notes = []
        if r["ours_error"]:
            notes.append(r["ours_error"])
        if r.get("ours_lost"):
            notes.append(f"cpg-rs lost {r['ours_lost']}")
        if r["corosync_error"]:
            notes.append(f"Corosync: {r['corosync_error']}")
        if r.get("corosync_lost"):
            notes.append(f"Corosync lost {r['corosync_lost']}")
        if r["send"] != "copy":
            sm = r.get("corosync_same_send_msgs_per_sec")
            if sm is not None or r.get("corosync_same_send_system"):
                notes.append(f"Corosync zcb ({(r.get('corosync_same_send_system') or '?').replace('corosync-', '')}):"
                             f" {fmt_num(sm)} msgs/s{lost_mark(r.get('corosync_same_send_lost'))}")
        fo = r.get("ours_fraction_of_loopback")
        fc = r.get("corosync_fraction_of_loopback")
        body.append([
            r["members"], size_label(r["size"]), r["guarantee"], r["send"],
            fmt_num(r["ours_msgs_per_sec"]), fmt_mb(r["ours_mb_per_sec"]),
            (r["corosync_system"] or "n/a").replace("corosync-", ""),
            fmt_num(r["corosync_msgs_per_sec"]), fmt_mb(r["corosync_mb_per_sec"]),
            f"{r['ratio']:.2f}x" if r["ratio"] is not None else "n/a",
            f"{fo:.2f}" if fo is not None else ("" if r["size"] < 65536 else "n/a"),
            f"{fc:.2f}" if fc is not None else ("" if r["size"] < 65536 else "n/a"),
            "; ".join(notes),
        ])
    table(header, body)

    if t["latency"]:
        out.append("")
        out.append("Latency: one 64 B message in flight, send -> own delivery, microseconds"
                   " (mean over members of each member's percentile); ratio = us/Corosync, lower is better")
        header = ["M", "guar", "send", "cpg-rs p50", "p99", "p99.9", "Corosync", "p50", "p99", "p99.9",
                  "ratio p50", "ratio p99", "ratio p99.9", "notes"]
        body = []
        for r in t["latency"]:
            lo, lc = r["ours_latency_us"] or {}, r["corosync_latency_us"] or {}
            notes = [x for x in (r["ours_error"], ("Corosync: " + r["corosync_error"]) if r["corosync_error"] else None) if x]
            body.append([
                r["members"], r["guarantee"], r["send"],
                fmt_num(lo.get("p50"), 1), fmt_num(lo.get("p99"), 1), fmt_num(lo.get("p999"), 1),
                (r["corosync_system"] or "n/a").replace("corosync-", ""),
                fmt_num(lc.get("p50"), 1), fmt_num(lc.get("p99"), 1), fmt_num(lc.get("p999"), 1),
                *[f"{r[f'ratio_{p}']:.2f}x" if r[f"ratio_{p}"] is not None else "n/a" for p in ("p50", "p99", "p999")],
                "; ".join(notes),
            ])
        table(header, body)

    if t["corosync_by_transport"]:
        out.append("")
        out.append("Corosync by transport (its own send path for every row)")
        systems = sorted({s for r in t["corosync_by_transport"] for s in r["by_transport"]})
        header = ["M", "size", "guar", "send", "kind"]
        for s in systems:
            tname = s.replace("corosync-", "")
            header += [f"{tname} msgs/s", f"{tname} MB/s", f"{tname} p50/p99/p99.9 us", f"{tname} lost"]
        body = []
        for r in t["corosync_by_transport"]:
            line = [r["members"], size_label(r["size"]), r["guarantee"], r["send"],
                    "latency" if r["latency"] else "tput"]
            for s in systems:
                a = r["by_transport"].get(s)
                if a is None:
                    line += ["", "", "", ""]
                    continue
                if a["errors"]:
                    line += ["error", "", "", a["errors"][0][:40]]
                    continue
                lat = a.get("latency_us")
                line += [fmt_num(a.get("msgs_per_sec")), fmt_mb(a.get("mb_per_sec")),
                         f"{lat['p50']:.1f}/{lat['p99']:.1f}/{lat['p999']:.1f}" if lat else "",
                         a.get("lost", "")]
            body.append(line)
        table(header, body)

    for m in t.get("meta", []):
        if m.get("when") == "start":
            out.insert(0, f"Run {m.get('date')} git {m.get('git')}, kernel {m.get('kernel')}, {m.get('cpus')} CPUs,"
                          f" Corosync {m.get('corosync')} (sched_rr {m.get('sched_rr')}), {m.get('seconds')} s per row,"
                          f" {m.get('repeat', 1)} repeat(s) (best kept)")
    loads = [f"{m.get('when')} {m.get('loadavg')}" for m in t.get("meta", []) if m.get("loadavg")]
    if loads:
        out.insert(1, "Load average (1/5/15 min): " + ", ".join(loads)
                   + " -- figures taken on a loaded machine are indicative only")
        out.insert(2, "")
    lp = t["loopback"]
    if lp:
        out.append("")
        if "big" in lp:
            b = lp["big"]
            out.append(f"Loopback ceiling (UDP 127.0.0.1, one sender -> one receiver): {b['size']} B datagrams:"
                       f" {fmt_num(b['datagrams_per_sec'])}/s = {b['gb_per_sec']:.2f} GB/s")
        if "small" in lp:
            s = lp["small"]
            out.append(f"Loopback ceiling: {s['size']} B datagrams: {fmt_num(s['datagrams_per_sec'])}/s")
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------ SVG chart
def render_svg(records, t):
    agg = aggregate(records)
    series = []  # (label, color, dash, [(size, msgs, mb)])
    sizes_present = sorted({k[1] for (_, k) in agg if not k[4]})
    members = sorted({k[0] for (_, k) in agg if not k[4]})
    colors = {"ours": "#1f6fd1", "corosync": "#e0701b"}
    for which, name in (("ours", "cpg-rs"), ("corosync", "Corosync")):
        for i, m in enumerate(members):
            pts = []
            for size in sizes_present:
                a = best(agg, which, (m, size, "agreed", "copy", False))
                if usable(a) and a.get("msgs_per_sec", 0) > 0:
                    pts.append((size, a["msgs_per_sec"], a["mb_per_sec"]))
            if pts:
                series.append((f"{name}, {m} member{'s' if m > 1 else ''}", colors[which],
                               "" if i == 0 else "6,4", pts))
    ceil = t["loopback"].get("big", {}).get("mb_per_sec")

    W, H = 1000, 470
    panels = [("msgs/s per member", 1), ("MB/s per member", 2)]
    pw, ph = 400, 300
    px0 = [80, 580]
    py0 = 70
    el = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
          'font-family="sans-serif" font-size="12">',
          f'<rect width="{W}" height="{H}" fill="white"/>',
          f'<text x="{W / 2}" y="24" text-anchor="middle" font-size="16">cpg-rs vs Corosync 3: AGREED, copying'
          ' mcast, one host (log scales)</text>']
    if not sizes_present:
        sizes_present = SIZE_ORDER
    xmin, xmax = math.log2(min(sizes_present)), math.log2(max(sizes_present))
    if xmax == xmin:
        xmin, xmax = xmin - 1, xmax + 1

    def xpos(p, size):
        return px0[p] + (math.log2(size) - xmin) / (xmax - xmin) * pw

    for p, (title, idx) in enumerate(panels):
        vals = [pt[idx] for s in series for pt in s[3]]
        if idx == 2 and ceil:
            vals.append(ceil)
        vals = [v for v in vals if v > 0] or [1, 10]
        ymin = 10 ** math.floor(math.log10(min(vals)))
        ymax = 10 ** math.ceil(math.log10(max(vals)))
        if ymax <= ymin:
            ymax = ymin * 10
        lmin, lmax = math.log10(ymin), math.log10(ymax)

        def ypos(v):
            return py0 + ph - (math.log10(v) - lmin) / (lmax - lmin) * ph

        x0 = px0[p]
        el.append(f'<text x="{x0 + pw / 2}" y="{py0 - 14}" text-anchor="middle" font-size="14">{title}</text>')
        el.append(f'<rect x="{x0}" y="{py0}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>')
        d = lmin
        while d <= lmax + 1e-9:
            y = ypos(10 ** d)
            el.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x0 + pw}" y2="{y:.1f}" stroke="#ddd"/>')
            v = 10 ** d
            lab = f"{v:,.0f}" if v >= 1 else f"{v:g}"
            el.append(f'<text x="{x0 - 6}" y="{y + 4:.1f}" text-anchor="end">{lab}</text>')
            d += 1
        for size in sizes_present:
            x = xpos(p, size)
            el.append(f'<line x1="{x:.1f}" y1="{py0}" x2="{x:.1f}" y2="{py0 + ph}" stroke="#eee"/>')
            el.append(f'<text x="{x:.1f}" y="{py0 + ph + 16}" text-anchor="middle">{size_label(size)}</text>')
        el.append(f'<text x="{x0 + pw / 2}" y="{py0 + ph + 34}" text-anchor="middle">message size</text>')
        if idx == 2 and ceil:
            y = ypos(ceil)
            el.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x0 + pw}" y2="{y:.1f}" stroke="#777" '
                      'stroke-dasharray="2,3"/>')
            el.append(f'<text x="{x0 + 4}" y="{y - 4:.1f}" fill="#555">UDP loopback ceiling '
                      f'{ceil / 1000:.2f} GB/s</text>')
        for label, color, dash, pts in series:
            coords = " ".join(f"{xpos(p, pt[0]):.1f},{ypos(pt[1] if idx == 1 else pt[2]):.1f}" for pt in pts)
            da = f' stroke-dasharray="{dash}"' if dash else ""
            el.append(f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="2"{da}/>')
            for pt in pts:
                v = pt[1] if idx == 1 else pt[2]
                el.append(f'<circle cx="{xpos(p, pt[0]):.1f}" cy="{ypos(v):.1f}" r="3.5" fill="{color}">'
                          f'<title>{label}, {size_label(pt[0])}: {v:,.1f}</title></circle>')
    ly = py0 + ph + 56
    for i, (label, color, dash, _) in enumerate(series):
        lx = 80 + (i % 4) * 230
        yy = ly + (i // 4) * 18
        da = f' stroke-dasharray="{dash}"' if dash else ""
        el.append(f'<line x1="{lx}" y1="{yy}" x2="{lx + 30}" y2="{yy}" stroke="{color}" stroke-width="2"{da}/>')
        el.append(f'<text x="{lx + 36}" y="{yy + 4}">{label}</text>')
    if not series:
        el.append(f'<text x="{W / 2}" y="{ly}" text-anchor="middle">no AGREED copy rows with results</text>')
    el.append(f'<text x="{W / 2}" y="{H - 8}" text-anchor="middle" fill="#555" font-size="11">Corosync: the faster'
              ' of its transports (knet, udpu) at each point; per member, unique payload delivered, MB = 10^6 B'
              '</text>')
    el.append("</svg>")
    return "\n".join(el) + "\n"


def summary_lines(records):
    for r in records:
        if "error" in r:
            print(f"  {r.get('system')}: M={r.get('members')} {r.get('size')} B {r.get('guarantee')} "
                  f"{r.get('send')}: ERROR {r['error']}")
            continue
        lat = r.get("latency_us")
        extra = (f" p50={lat['p50']:.1f}us p99={lat['p99']:.1f}us p99.9={lat['p999']:.1f}us"
                 if isinstance(lat, dict) else "")
        print(f"  {r.get('system')}: M={r.get('members')} {r.get('size')} B {r.get('guarantee')} "
              f"{r.get('send')}: {r.get('msgs_per_sec', 0):,.0f} msgs/s {r.get('mb_per_sec', 0):,.1f} MB/s "
              f"lost={r.get('lost')}{extra}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results", nargs="?", help="results.jsonl (default: stdin)")
    ap.add_argument("--json", action="store_true", help="print the table as JSON instead of text")
    ap.add_argument("--json-out", help="also write the table as JSON to this file")
    ap.add_argument("--svg", help="write the SVG chart to this file")
    ap.add_argument("--ours-system", help="compare only this cpg-rs system (cpg-rs: M nodes; "
                    "cpg-rs-cpgd: one cpgd and M client processes, Corosync's topology)")
    ap.add_argument("--summary-lines", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    global OURS_ONLY
    OURS_ONLY = a.ours_system
    if a.results:
        with open(a.results) as f:
            records = load(f)
    else:
        records = load(sys.stdin)
    if a.summary_lines:
        summary_lines(records)
        return
    t = build_table(records)
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump(t, f, indent=1)
            f.write("\n")
    if a.svg:
        with open(a.svg, "w") as f:
            f.write(render_svg(records, t))
    if a.json:
        json.dump(t, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(render_text(t))


if __name__ == "__main__":
    main()
