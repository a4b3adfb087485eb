//! How cost grows with the ring, on the simulator (`benches::scaling`).
//!
//! ```text
//! cargo run --release -p benches --bin scaling [-- --nodes 3,5,9,16,32,64]
//!     [--out benches/results/scaling] [--latency-us 50] [--link-mbps 10000]
//!     [--netmtu 9000] [--rotations R]
//! ```
//! Writes `table.txt`, `results.json` and `chart.svg` into `--out` and
//! prints the table. Simulated time: the figures are the same on every run.

use std::fmt::Write as _;
use std::process::ExitCode;

use benches::scaling::{run, secs, Failover, Model, Plan, Row, Throughput, Timers};
use cpg_core::Duration;

struct Args {
    nodes: Vec<usize>,
    out: String,
    model: Model,
    rotations: Option<usize>,
}

fn usage() -> ! {
    eprintln!(
        "usage: scaling [--nodes 3,5,9,16,32,64] [--out DIR] [--latency-us 50] \
         [--link-mbps 10000] [--netmtu 9000] [--rotations R]"
    );
    std::process::exit(2);
}

fn parse() -> Args {
    let mut a = Args {
        nodes: vec![3, 5, 9, 16, 32, 64],
        out: "benches/results/scaling".to_string(),
        model: Model::default(),
        rotations: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| usage());
        let num = |v: String| -> u64 { v.parse().unwrap_or_else(|_| usage()) };
        match arg.as_str() {
            "--nodes" => {
                a.nodes = value()
                    .split(',')
                    .map(|n| n.trim().parse().unwrap_or_else(|_| usage()))
                    .collect();
            }
            "--out" => a.out = value(),
            "--latency-us" => a.model.latency = Duration::from_micros(num(value())),
            "--link-mbps" => a.model.link_bits_per_sec = num(value()) * 1_000_000,
            "--netmtu" => a.model.netmtu = num(value()) as usize,
            "--rotations" => a.rotations = Some(num(value()) as usize),
            _ => usage(),
        }
    }
    a
}

fn main() -> ExitCode {
    let args = parse();
    let wall = std::time::Instant::now();
    let mut rows = Vec::new();
    let mut plans = Vec::new();
    for &n in &args.nodes {
        let mut plan = Plan::new(n);
        plan.model = args.model;
        if let Some(r) = args.rotations {
            plan.rotations = r;
        }
        let mut progress = |line: String| {
            eprintln!("[{:6.1} s] {line}", wall.elapsed().as_secs_f64());
        };
        match run(&plan, &mut progress) {
            Ok(row) => rows.push(row),
            Err(e) => {
                eprintln!("{n} nodes: {e}");
                return ExitCode::FAILURE;
            }
        }
        plans.push(plan);
    }
    let table = table(&args.model, &plans, &rows);
    print!("{table}");
    let dir = std::path::Path::new(&args.out);
    let written = std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(dir.join("table.txt"), &table))
        .and_then(|()| std::fs::write(dir.join("results.json"), json(&args.model, &plans, &rows)))
        .and_then(|()| std::fs::write(dir.join("chart.svg"), svg(&args.model, &rows)));
    if let Err(e) = written {
        eprintln!("writing {}: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    eprintln!(
        "wrote {}/{{table.txt,results.json,chart.svg}} in {:.0} s of wall time",
        dir.display(),
        wall.elapsed().as_secs_f64()
    );
    ExitCode::SUCCESS
}

fn model_line(m: &Model) -> String {
    format!(
        "{} µs one way, {} Gbit/s per sender link (udpu: a multicast is one copy per peer, \
         queued on the sender's link), netmtu {}, no loss, no jitter",
        m.latency.0 / 1000,
        m.link_bits_per_sec as f64 / 1e9,
        m.netmtu
    )
}

fn size_label(size: usize) -> String {
    if size >= 1024 && size % 1024 == 0 {
        format!("{} KiB", size / 1024)
    } else {
        format!("{size} B")
    }
}

/// `1234567.8` → `1,234,568`.
fn thousands(x: f64) -> String {
    let s = format!("{:.0}", x);
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn us(x: f64) -> String {
    if x >= 1_000.0 {
        format!("{:.2} ms", x / 1000.0)
    } else {
        format!("{x:.0} µs")
    }
}

fn find(row: &Row, timers: Timers) -> Option<&Failover> {
    row.failover.iter().find(|f| f.timers == timers)
}

fn table(model: &Model, plans: &[Plan], rows: &[Row]) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "How cost grows with the ring: cpg-sim, simulated time (exact: the same on every run and machine)"
    );
    let _ = writeln!(t, "network: {}", model_line(model));
    let _ = writeln!(
        t,
        "engines: Corosync's defaults (window_size 50, max_messages 17), every member multicasting \
         AGREED as fast as flow control allows, every simulator checker on; CPU is not modelled \
         (an engine's work takes no simulated time)"
    );
    let rot: Vec<String> = plans
        .iter()
        .map(|p| format!("{}: {}", p.nodes, p.rotations))
        .collect();
    let _ = writeln!(
        t,
        "windows: whole token rotations at node 1 after {} of warm-up (nodes: rotations) {}",
        plans.first().map_or(0, |p| p.warmup_rotations),
        rot.join(", ")
    );
    let _ = writeln!(t);
    let sizes: Vec<usize> = rows
        .first()
        .map(|r| r.throughput.iter().map(|x| x.size).collect())
        .unwrap_or_default();
    let mut head = vec!["nodes".to_string()];
    for &s in &sizes {
        let l = size_label(s);
        if s < 1024 {
            head.push(format!("{l}: msgs/s per member"));
        } else {
            head.push(format!("{l}: MB/s per member"));
        }
        head.push(format!("{l}: rotation mean / p99"));
        head.push(format!("{l}: frames/rotation"));
    }
    let mut body = Vec::new();
    for r in rows {
        let mut line = vec![r.nodes.to_string()];
        for x in &r.throughput {
            if x.size < 1024 {
                line.push(thousands(x.delivered_per_member));
            } else {
                line.push(format!("{:.1}", x.mb_per_member));
            }
            line.push(format!(
                "{} / {}",
                us(x.rotation_mean_us),
                us(x.rotation_p99_us)
            ));
            line.push(format!("{:.1}", x.frames_per_rotation));
        }
        body.push(line);
    }
    markdown(&mut t, &head, &body);
    let _ = writeln!(
        t,
        "\nPer member: every message each member delivers (its own and everyone else's); \
         MB = 10^6 B of payload. frames/rotation: multicast frames the whole ring sent per rotation."
    );
    let _ = writeln!(
        t,
        "\nFailover: node N crashed (as SIGKILL: no LEAVE) under 64 B load; time until every \
         survivor delivered the NODEDOWN confchg (it installs the new ring in the same step)."
    );
    let _ = writeln!(
        t,
        "Corosync's figure: token + (N − 2) × token_coefficient + consensus, consensus = 1.2 × the \
         effective token (its default, and ours)."
    );
    let _ = writeln!(
        t,
        "token 3 s: Corosync's defaults (token 3000 ms, token_coefficient 650 ms, join 50 ms); \
         token 0.3 s: Config::fast (300 ms, 65 ms, join 30 ms)."
    );
    let _ = writeln!(
        t,
        "lost / agreed: crash → node 1 left OPERATIONAL (token loss) / entered COMMIT (a \
         consensus timeout failed the node, the survivors agreed)."
    );
    let _ = writeln!(t);
    let mut head = vec!["nodes".to_string()];
    let timers = [Timers::Corosync, Timers::Fast];
    for tm in timers {
        let what = match tm {
            Timers::Corosync => "token 3 s",
            Timers::Fast => "token 0.3 s",
        };
        head.push(format!("{what}: ours"));
        head.push("Corosync's formula".to_string());
        head.push("ours − formula".to_string());
        head.push("lost / agreed".to_string());
    }
    let mut body = Vec::new();
    for r in rows {
        let mut line = vec![r.nodes.to_string()];
        for tm in timers {
            match find(r, tm) {
                Some(f) => {
                    let d = secs(f.nodedown_last) - secs(f.corosync);
                    line.push(format!("{:.3} s", secs(f.nodedown_last)));
                    line.push(format!("{:.3} s", secs(f.corosync)));
                    line.push(format!(
                        "{:+.0} ms ({:+.1} %)",
                        d * 1e3,
                        d / secs(f.corosync) * 100.0
                    ));
                    line.push(format!("{:.3} / {:.3} s", secs(f.gather), secs(f.commit)));
                }
                None => line.extend(std::iter::repeat_n("-".to_string(), 4)),
            }
        }
        body.push(line);
    }
    markdown(&mut t, &head, &body);
    t
}

/// A Markdown table, numbers right-aligned.
fn markdown(t: &mut String, head: &[String], body: &[Vec<String>]) {
    let w: Vec<usize> = (0..head.len())
        .map(|i| {
            body.iter()
                .map(|r| r[i].chars().count())
                .chain([head[i].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| {
        let c: Vec<String> = cells
            .iter()
            .zip(&w)
            .enumerate()
            .map(|(i, (s, &w))| {
                let pad = " ".repeat(w - s.chars().count());
                if i == 0 {
                    format!(" {s}{pad} ")
                } else {
                    format!(" {pad}{s} ")
                }
            })
            .collect();
        format!("|{}|", c.join("|"))
    };
    let _ = writeln!(t, "{}", line(head));
    let rule: Vec<String> = w
        .iter()
        .enumerate()
        .map(|(i, &w)| {
            if i == 0 {
                "-".repeat(w + 2)
            } else {
                format!("{}:", "-".repeat(w + 1))
            }
        })
        .collect();
    let _ = writeln!(t, "|{}|", rule.join("|"));
    for r in body {
        let _ = writeln!(t, "{}", line(r));
    }
}

fn ms(d: Duration) -> f64 {
    d.0 as f64 / 1e6
}

fn json(model: &Model, plans: &[Plan], rows: &[Row]) -> String {
    let tp = |x: &Throughput| {
        format!(
            "{{\"size\":{},\"window_ms\":{:.3},\"rotations\":{},\"delivered_per_member\":{:.1},\
             \"sent_per_member\":{:.1},\"mb_per_member\":{:.3},\"frames_per_rotation\":{:.2},\
             \"rotation_mean_us\":{:.1},\"rotation_p99_us\":{:.1}}}",
            x.size,
            ms(x.window),
            x.rotations,
            x.delivered_per_member,
            x.sent_per_member,
            x.mb_per_member,
            x.frames_per_rotation,
            x.rotation_mean_us,
            x.rotation_p99_us
        )
    };
    let fo = |f: &Failover| {
        format!(
            "{{\"timers\":\"{}\",\"token_effective_ms\":{:.3},\"consensus_ms\":{:.3},\
             \"corosync_formula_ms\":{:.3},\"gather_ms\":{:.3},\"commit_ms\":{:.3},\"install_first_ms\":{:.3},\"install_last_ms\":{:.3},\
             \"nodedown_first_ms\":{:.3},\"nodedown_last_ms\":{:.3}}}",
            f.timers.name(),
            ms(f.token_effective),
            ms(f.consensus),
            ms(f.corosync),
            ms(f.gather),
            ms(f.commit),
            ms(f.install_first),
            ms(f.install_last),
            ms(f.nodedown_first),
            ms(f.nodedown_last)
        )
    };
    let rows: Vec<String> = rows
        .iter()
        .zip(plans)
        .map(|(r, p)| {
            let t: Vec<String> = r.throughput.iter().map(tp).collect();
            let f: Vec<String> = r.failover.iter().map(fo).collect();
            format!(
                "    {{\"nodes\":{},\"warmup_rotations\":{},\"throughput\":[{}],\"failover\":[{}]}}",
                r.nodes,
                p.warmup_rotations,
                t.join(","),
                f.join(",")
            )
        })
        .collect();
    format!(
        "{{\n  \"simulated\": true,\n  \"model\": {{\"latency_us\":{},\"link_bits_per_sec\":{},\"netmtu\":{},\
         \"jitter\":0,\"loss\":0,\"cpu_modelled\":false}},\n  \"engine\": {{\"window_size\":50,\
         \"max_messages\":17,\"guarantee\":\"agreed\"}},\n  \"rows\": [\n{}\n  ]\n}}\n",
        model.latency.0 / 1000,
        model.link_bits_per_sec,
        model.netmtu,
        rows.join(",\n")
    )
}

/// One line of a chart: label, colour, dash pattern, (x, y) points.
type Series = (String, &'static str, &'static str, Vec<(f64, f64)>);

/// A log-log panel at (x0, y0), `w` × `h`, x = ring sizes.
fn panel(
    el: &mut Vec<String>,
    (x0, y0, w, h): (f64, f64, f64, f64),
    title: &str,
    unit: &str,
    xs: &[f64],
    series: &[Series],
) {
    let vals: Vec<f64> = series
        .iter()
        .flat_map(|s| s.3.iter().map(|p| p.1))
        .filter(|v| *v > 0.0)
        .collect();
    let lo = vals.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = vals.iter().copied().fold(0.0, f64::max);
    let (lmin, mut lmax) = (lo.log10().floor(), hi.log10().ceil());
    if lmax <= lmin {
        lmax = lmin + 1.0;
    }
    let (xmin, xmax) = (
        xs.iter().copied().fold(f64::INFINITY, f64::min).log2(),
        xs.iter().copied().fold(0.0, f64::max).log2(),
    );
    let xspan = if xmax > xmin { xmax - xmin } else { 1.0 };
    let xpos = |x: f64| x0 + 10.0 + (x.log2() - xmin) / xspan * (w - 20.0);
    let ypos = |v: f64| y0 + h - (v.log10() - lmin) / (lmax - lmin) * h;
    el.push(format!(
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="14">{title}</text>"#,
        x0 + w / 2.0,
        y0 - 14.0
    ));
    el.push(format!(
        r##"<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="none" stroke="#444"/>"##
    ));
    let mut d = lmin;
    while d <= lmax + 1e-9 {
        let y = ypos(10f64.powf(d));
        let v = 10f64.powf(d);
        let lab = if v >= 1.0 {
            thousands(v)
        } else {
            format!("{v}")
        };
        el.push(format!(
            r##"<line x1="{x0}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/>"##,
            x0 + w
        ));
        el.push(format!(
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{lab}</text>"#,
            x0 - 6.0,
            y + 4.0
        ));
        d += 1.0;
    }
    for &x in xs {
        let px = xpos(x);
        el.push(format!(
            r##"<line x1="{px:.1}" y1="{y0}" x2="{px:.1}" y2="{:.1}" stroke="#eee"/>"##,
            y0 + h
        ));
        el.push(format!(
            r#"<text x="{px:.1}" y="{:.1}" text-anchor="middle">{x}</text>"#,
            y0 + h + 16.0
        ));
    }
    el.push(format!(
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">nodes in the ring</text>"#,
        x0 + w / 2.0,
        y0 + h + 34.0
    ));
    el.push(format!(
        r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#555" transform="rotate(-90 {:.1} {:.1})">{unit}</text>"##,
        x0 - 58.0,
        y0 + h / 2.0,
        x0 - 58.0,
        y0 + h / 2.0
    ));
    for (k, (label, color, dash, pts)) in series.iter().enumerate() {
        let coords: Vec<String> = pts
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", xpos(x), ypos(y)))
            .collect();
        let da = if dash.is_empty() {
            String::new()
        } else {
            format!(r#" stroke-dasharray="{dash}""#)
        };
        el.push(format!(
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"{da}/>"#,
            coords.join(" ")
        ));
        for &(x, y) in pts {
            el.push(format!(
                r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{color}"><title>{label}, {x} nodes: {}</title></circle>"#,
                xpos(x),
                ypos(y),
                if y >= 100.0 { thousands(y) } else { format!("{y:.3}") }
            ));
        }
        let ly = y0 + h + 56.0 + k as f64 * 18.0;
        el.push(format!(
            r#"<line x1="{x0}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{color}" stroke-width="2"{da}/>"#,
            x0 + 30.0
        ));
        el.push(format!(
            r#"<text x="{:.1}" y="{:.1}">{label}</text>"#,
            x0 + 36.0,
            ly + 4.0
        ));
    }
}

fn svg(model: &Model, rows: &[Row]) -> String {
    let xs: Vec<f64> = rows.iter().map(|r| r.nodes as f64).collect();
    let blue = "#1f6fd1";
    let orange = "#e0701b";
    let sizes: Vec<usize> = rows
        .first()
        .map(|r| r.throughput.iter().map(|x| x.size).collect())
        .unwrap_or_default();
    let colors = [blue, "#2a9d4b", "#8e44ad"];
    let per = |f: &dyn Fn(&Throughput) -> f64, k: usize| -> Vec<(f64, f64)> {
        rows.iter()
            .filter_map(|r| r.throughput.get(k).map(|x| (r.nodes as f64, f(x))))
            .collect()
    };
    let mut tput = Vec::new();
    let mut rot = Vec::new();
    for (k, &s) in sizes.iter().enumerate() {
        let c = colors[k % colors.len()];
        tput.push((
            format!("{} AGREED", size_label(s)),
            c,
            "",
            per(&|x| x.delivered_per_member, k),
        ));
        rot.push((
            format!("{}: mean", size_label(s)),
            c,
            "",
            per(&|x| x.rotation_mean_us, k),
        ));
        rot.push((
            format!("{}: p99", size_label(s)),
            c,
            "2,3",
            per(&|x| x.rotation_p99_us, k),
        ));
    }
    let mut fail = Vec::new();
    for (tm, c) in [(Timers::Corosync, orange), (Timers::Fast, blue)] {
        let ours: Vec<(f64, f64)> = rows
            .iter()
            .filter_map(|r| find(r, tm).map(|f| (r.nodes as f64, secs(f.nodedown_last))))
            .collect();
        let formula: Vec<(f64, f64)> = rows
            .iter()
            .filter_map(|r| find(r, tm).map(|f| (r.nodes as f64, secs(f.corosync))))
            .collect();
        let name = match tm {
            Timers::Corosync => "token 3 s",
            Timers::Fast => "token 0.3 s",
        };
        fail.push((format!("cpg-rs, {name}"), c, "", ours));
        fail.push((format!("Corosync's formula, {name}"), c, "6,4", formula));
    }
    let (wd, ht) = (1200.0, 560.0);
    let mut el = vec![
        format!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{wd}" height="{ht}" viewBox="0 0 {wd} {ht}" font-family="sans-serif" font-size="12">"#
        ),
        format!(r#"<rect width="{wd}" height="{ht}" fill="white"/>"#),
        format!(
            r#"<text x="{}" y="24" text-anchor="middle" font-size="16">How cost grows with the ring: cpg-rs on the simulator (simulated time, log scales)</text>"#,
            wd / 2.0
        ),
    ];
    let (pw, ph, py) = (300.0, 300.0, 70.0);
    panel(
        &mut el,
        (90.0, py, pw, ph),
        "msgs/s delivered per member",
        "msgs/s",
        &xs,
        &tput,
    );
    panel(
        &mut el,
        (490.0, py, pw, ph),
        "token rotation under load",
        "µs",
        &xs,
        &rot,
    );
    panel(
        &mut el,
        (870.0, py, pw, ph),
        "failover: crash → NODEDOWN everywhere",
        "seconds",
        &xs,
        &fail,
    );
    for (k, line) in [
        format!("network: {}", model_line(model)),
        "Corosync's defaults otherwise (window_size 50, max_messages 17); every member sends \
         AGREED as fast as flow control allows; CPU not modelled"
            .to_string(),
    ]
    .iter()
    .enumerate()
    {
        el.push(format!(
            r##"<text x="{}" y="{}" text-anchor="middle" fill="#555" font-size="11">{line}</text>"##,
            wd / 2.0,
            ht - 26.0 + 16.0 * k as f64
        ));
    }
    el.push("</svg>".to_string());
    el.join("\n") + "\n"
}
