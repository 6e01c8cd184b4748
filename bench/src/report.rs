//! The output: a CSV of every run, a CSV of medians, a markdown report with ratios and
//! the targets, and SVG bar charts.

use crate::brokers::Programs;
use crate::stats::Spread;
use crate::{Group, Record, Scenario};
use anyhow::Result;
use std::fmt::Write as _;
use std::path::Path;

/// The broker under test's label (in memory).
const OURS: &str = "mqtt-broker";

/// Memory budget for one client that stops reading, MiB, on top of the peak of the same
/// run without it: `max_pending_write_bytes` (16 MiB) of `configs/mqtt-broker-bounded.toml`,
/// its QoS 1 window and queue (2 × 1,000 messages of 1 KiB), and room for the allocator.
pub const SLOW_CLIENT_BUDGET_MIB: f64 = 20.0;

/// The slow-subscriber runs keep this share of the readers' throughput at least.
const SLOW_KEEP: f64 = 0.9;

/// What the report says about the run besides the figures.
pub struct Meta {
    /// The programs and versions.
    pub programs: Programs,
    /// Repetitions.
    pub reps: usize,
    /// The command line.
    pub args: String,
    /// The open-files limit.
    pub open_files: u64,
    /// Idle connections asked for.
    pub idle_asked: usize,
    /// The load average when the measurements began.
    pub load_start: String,
}

/// The 1, 5 and 15 minute load averages, comma-separated.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(", ")
}

/// One line per run for the console.
pub fn line(r: &Record) -> String {
    if let Some(e) = &r.error {
        if r.delivered == 0 && r.connections == 0 {
            return format!("{}: FAILED: {e}", r.broker);
        }
    }
    let mut s = if r.loss_pct.is_nan() && r.connections == 0 {
        let mut s = format!(
            "{}: {} round trips/s, p50 {:.1} µs p99 {:.1} µs p99.9 {:.1} µs",
            r.broker,
            si(r.throughput),
            r.p50_us,
            r.p99_us,
            r.p999_us
        );
        if !r.broker_cpu_s.is_nan() {
            let _ = write!(
                s,
                ", {:.1} µs CPU per round trip, RSS {:.1} → {:.1} MiB",
                r.cpu_us_per_msg,
                mib(r.rss_before_kib),
                mib(r.rss_after_kib)
            );
        }
        s
    } else if r.connections > 0 {
        format!(
            "{}: {} connections in {:.2} s ({:.0}/s), RSS {:.1} → {:.1} MiB, {:.0} B per connection",
            r.broker,
            r.connections,
            r.secs,
            r.connect_rate,
            mib(r.rss_before_kib),
            mib(r.rss_after_kib),
            r.rss_per_conn_b
        )
    } else {
        let mut s = format!(
            "{}: {} msg/s, loss {:.2} %, {:.2} µs CPU/msg ({:.0} % kernel), RSS {:.1} → {:.1} MiB (peak {:.1}), load generator CPU {:.0} %",
            r.broker,
            si(r.throughput),
            r.loss_pct,
            r.cpu_us_per_msg,
            100.0 * r.broker_sys_s / r.broker_cpu_s.max(1e-9),
            mib(r.rss_before_kib),
            mib(r.rss_after_kib),
            mib(r.rss_peak_kib),
            100.0 * r.gen_cpu_s / r.secs.max(1e-9),
        );
        if !r.p99_us.is_nan() {
            let _ = write!(
                s,
                ", latency p50 {:.0} µs p99 {:.0} µs p99.9 {:.0} µs",
                r.p50_us, r.p99_us, r.p999_us
            );
        }
        if !r.slow_closed.is_nan() {
            let _ = write!(
                s,
                ", slow subscriber {}",
                if r.slow_closed > 0.0 {
                    "closed by the broker"
                } else {
                    "still connected"
                }
            );
        }
        s
    };
    if let Some(e) = &r.error {
        let _ = write!(s, " [{e}]");
    }
    s
}

/// Payload MiB delivered per second.
fn mib_per_s(r: &Record) -> f64 {
    r.throughput * r.payload_b as f64 / (1024.0 * 1024.0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// 1234567 as "1.23M", 41234 as "41.2k".
pub fn si(x: f64) -> String {
    if x.is_nan() {
        return "–".into();
    }
    let (v, unit) = if x >= 1e6 {
        (x / 1e6, "M")
    } else if x >= 1e3 {
        (x / 1e3, "k")
    } else {
        (x, "")
    };
    let digits = if v >= 100.0 {
        0
    } else if v >= 10.0 {
        1
    } else {
        2
    };
    format!("{v:.digits$}{unit}")
}

/// Figures of one scenario on one broker over the repetitions.
struct Cell<'a> {
    ok: Vec<&'a Record>,
    failed: Vec<&'a Record>,
}

impl Cell<'_> {
    fn spread(&self, f: impl Fn(&Record) -> f64) -> Option<Spread> {
        let v: Vec<f64> = self.ok.iter().map(|r| f(r)).collect();
        Spread::of(&v)
    }
}

fn cell<'a>(records: &'a [Record], scenario: &str, broker: &str) -> Cell<'a> {
    let (failed, ok) = records
        .iter()
        .filter(|r| r.scenario == scenario && r.broker == broker)
        .partition(|r| r.error.is_some());
    Cell { ok, failed }
}

fn spread_text(s: Option<Spread>, fmt: &dyn Fn(f64) -> String) -> String {
    match s {
        None => "–".into(),
        Some(s) if s.min == s.max => fmt(s.median),
        Some(s) => format!("{} ({}–{})", fmt(s.median), fmt(s.min), fmt(s.max)),
    }
}

fn cell_text(c: &Cell, f: &dyn Fn(&Record) -> f64, fmt: &dyn Fn(f64) -> String) -> String {
    let mut t = spread_text(c.spread(f), fmt);
    if !c.failed.is_empty() {
        let why = c.failed[0].error.as_deref().unwrap_or("");
        let why: String = why.chars().take(80).collect();
        let _ = write!(
            t,
            " ({} of {} runs failed: {why})",
            c.failed.len(),
            c.failed.len() + c.ok.len()
        );
    }
    t
}

fn ratio(a: Option<Spread>, b: Option<Spread>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b.median > 0.0 => Some(a.median / b.median),
        _ => None,
    }
}

fn ratio_text(r: Option<f64>) -> String {
    r.map_or("–".into(), |r| format!("{r:.2}x"))
}

/// Brokers that appear in the records of these scenarios, in their scenario order.
fn brokers_of(scenarios: &[&Scenario], records: &[Record]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in scenarios {
        for v in &s.variants {
            let l = v.label();
            if !out.contains(&l) && records.iter().any(|r| r.scenario == s.id && r.broker == l) {
                out.push(l);
            }
        }
    }
    out
}

/// A table with one row per scenario, one column per broker and the ratios of ours to
/// each peer.
fn metric_table(
    md: &mut String,
    scenarios: &[&Scenario],
    records: &[Record],
    f: &dyn Fn(&Record) -> f64,
    fmt: &dyn Fn(f64) -> String,
) {
    let brokers = brokers_of(scenarios, records);
    let peers: Vec<&String> = brokers.iter().filter(|b| *b != OURS).collect();
    let has_ours = brokers.iter().any(|b| b == OURS);
    let _ = write!(md, "| scenario |");
    for b in &brokers {
        let _ = write!(md, " {b} |");
    }
    if has_ours {
        for p in &peers {
            let _ = write!(md, " {OURS} ÷ {p} |");
        }
    }
    md.push_str("\n|---|");
    for _ in &brokers {
        md.push_str("---:|");
    }
    if has_ours {
        for _ in &peers {
            md.push_str("---:|");
        }
    }
    md.push('\n');
    for s in scenarios {
        let _ = write!(md, "| {} |", s.title);
        for b in &brokers {
            let _ = write!(md, " {} |", cell_text(&cell(records, &s.id, b), f, fmt));
        }
        if has_ours {
            let ours = cell(records, &s.id, OURS).spread(f);
            for p in &peers {
                let _ = write!(
                    md,
                    " {} |",
                    ratio_text(ratio(ours, cell(records, &s.id, p).spread(f)))
                );
            }
        }
        md.push('\n');
    }
    md.push('\n');
}

fn us(x: f64) -> String {
    if x.is_nan() {
        "–".into()
    } else if x >= 100.0 {
        format!("{x:.0} µs")
    } else if x >= 10.0 {
        format!("{x:.1} µs")
    } else {
        format!("{x:.2} µs")
    }
}

fn mib_text(kib: f64) -> String {
    format!("{:.1} MiB", kib / 1024.0)
}

fn pct(x: f64) -> String {
    if x == 0.0 {
        "0 %".into()
    } else {
        format!("{x:.2} %")
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<f64>().ok())
        })
        .map_or("?".into(), |k| format!("{:.0} GiB", k / 1024.0 / 1024.0));
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cores} cores ({cpu}), {mem}, Linux {}", kernel.trim())
}

fn command_output(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Writes `runs.csv`, `summary.csv`, `report.md` and the charts into `dir`.
pub fn write_all(
    dir: &Path,
    scenarios: &[Scenario],
    records: &[Record],
    meta: &Meta,
) -> Result<()> {
    std::fs::write(dir.join("runs.csv"), runs_csv(records))?;
    std::fs::write(dir.join("summary.csv"), summary_csv(scenarios, records))?;
    let mut charts = Vec::new();
    let by_group =
        |g: Group| -> Vec<&Scenario> { scenarios.iter().filter(|s| s.group == g).collect() };
    let throughput: Vec<&Scenario> = scenarios
        .iter()
        .filter(|s| matches!(s.group, Group::FanIn | Group::FanOut))
        .collect();
    if !throughput.is_empty() {
        let svg = bar_chart(
            "Delivered messages per second (median; whiskers: min–max)",
            &chart_groups(&throughput, records, &|r| r.throughput, &|s| {
                s.title.clone()
            }),
            &si,
            Scale::Linear,
        );
        std::fs::write(dir.join("throughput.svg"), svg)?;
        charts.push("throughput.svg");
    }
    let persistence = by_group(Group::Persistence);
    if !persistence.is_empty() {
        let svg = bar_chart(
            "QoS 1 fan-in with persistence: delivered messages per second",
            &chart_groups(&persistence, records, &|r| r.throughput, &|_| {
                "fan-in 10→1, QoS 1, 3.1.1".into()
            }),
            &si,
            Scale::Linear,
        );
        std::fs::write(dir.join("persistence.svg"), svg)?;
        charts.push("persistence.svg");
    }
    let fixed = by_group(Group::FixedRate);
    if !fixed.is_empty() {
        let mut groups = Vec::new();
        for (name, f) in [
            ("p50", &(|r: &Record| r.p50_us) as &dyn Fn(&Record) -> f64),
            ("p99", &|r: &Record| r.p99_us),
            ("p99.9", &|r: &Record| r.p999_us),
        ] {
            groups.extend(chart_groups(&fixed, records, f, &|s| {
                format!("{} {name}", s.title)
            }));
        }
        let svg = bar_chart(
            "Fixed rate: latency in µs (median; whiskers: min–max)",
            &groups,
            &|x| format!("{x:.0}"),
            Scale::Log,
        );
        std::fs::write(dir.join("latency.svg"), svg)?;
        charts.push("latency.svg");
    }
    let p2p = by_group(Group::P2p);
    if !p2p.is_empty() {
        let svg = bar_chart(
            "Point to point: delivered messages per second",
            &chart_groups(&p2p, records, &|r| r.throughput, &|s| s.title.clone()),
            &si,
            Scale::Linear,
        );
        std::fs::write(dir.join("p2p.svg"), svg)?;
        charts.push("p2p.svg");
    }
    let payload = by_group(Group::Payload);
    if !payload.is_empty() {
        let svg = bar_chart(
            "Large payloads, fan-in: payload MiB delivered per second",
            &chart_groups(&payload, records, &mib_per_s, &|s| s.title.clone()),
            &|x| format!("{x:.0}"),
            Scale::Linear,
        );
        std::fs::write(dir.join("payload.svg"), svg)?;
        charts.push("payload.svg");
    }
    let rt = by_group(Group::RoundTrip);
    if !rt.is_empty() {
        let mut groups = Vec::new();
        for (name, f) in [
            ("p50", &(|r: &Record| r.p50_us) as &dyn Fn(&Record) -> f64),
            ("p99", &|r: &Record| r.p99_us),
        ] {
            groups.extend(chart_groups(&rt, records, f, &|s| {
                format!("{} {name}", s.title)
            }));
        }
        let svg = bar_chart(
            "Round trip: latency in µs (median; whiskers: min–max)",
            &groups,
            &|x| format!("{x:.0}"),
            Scale::Log,
        );
        std::fs::write(dir.join("round-trip.svg"), svg)?;
        charts.push("round-trip.svg");
    }
    let slow = by_group(Group::SlowSubscriber);
    if !slow.is_empty() {
        let svg = bar_chart(
            "Slow subscriber: the readers' delivered messages per second",
            &chart_groups(&slow, records, &|r| r.throughput, &|s| s.title.clone()),
            &si,
            Scale::Linear,
        );
        std::fs::write(dir.join("slow-subscriber.svg"), svg)?;
        charts.push("slow-subscriber.svg");
    }
    std::fs::write(
        dir.join("report.md"),
        markdown(scenarios, records, meta, &charts),
    )?;
    Ok(())
}

/// Throughput, loss, CPU and memory of message scenarios.
fn flow_tables(md: &mut String, scenarios: &[&Scenario], records: &[Record]) {
    md.push_str("Delivered messages per second (higher is better):\n\n");
    metric_table(md, scenarios, records, &|r| r.throughput, &si);
    md.push_str("Messages lost (QoS 0 may drop; QoS 1 should not):\n\n");
    metric_table(md, scenarios, records, &|r| r.loss_pct, &pct);
    md.push_str("Broker CPU time (user + system) per delivered message (lower is better):\n\n");
    metric_table(md, scenarios, records, &|r| r.cpu_us_per_msg, &us);
    md.push_str("Broker peak resident memory (VmHWM, lower is better):\n\n");
    metric_table(
        md,
        scenarios,
        records,
        &|r| r.rss_peak_kib as f64,
        &mib_text,
    );
    md.push_str("Load generator CPU as a share of the run's wall time:\n\n");
    metric_table(
        md,
        scenarios,
        records,
        &|r| 100.0 * r.gen_cpu_s / r.secs.max(1e-9),
        &|x| format!("{x:.0} %"),
    );
}

/// The readers' throughput with and without the slow subscriber, and the broker's memory
/// against the budget.
fn slow_table(md: &mut String, scenarios: &[&Scenario], records: &[Record]) {
    md.push_str(
        "| scenario | broker | readers without | readers with | kept | ≥ 90 %? | readers' loss with | \
         RSS before → after, with | peak RSS without | peak RSS with | budget | within? | slow one closed |\n\
         |---|---|---:|---:|---:|:---:|---:|---:|---:|---:|---:|:---:|---:|\n",
    );
    let tp = |r: &Record| r.throughput;
    let peak = |r: &Record| r.rss_peak_kib as f64;
    for s in scenarios {
        let Some(base) = &s.baseline else { continue };
        for b in brokers_of(&[s], records) {
            let with = cell(records, &s.id, &b);
            let without = cell(records, base, &b);
            let kept = ratio(with.spread(tp), without.spread(tp));
            let peak_without = without.spread(peak);
            let peak_with = with.spread(peak);
            let budget = peak_without
                .filter(|_| b == OURS)
                .map(|p| p.median + SLOW_CLIENT_BUDGET_MIB * 1024.0);
            let within = match (budget, peak_with) {
                (Some(l), Some(p)) => yes(p.median <= l).to_string(),
                _ => "–".into(),
            };
            let closed = with.spread(|r| r.slow_closed).map_or("–".to_string(), |c| {
                format!(
                    "{:.0} of {} runs",
                    c.median * with.ok.len() as f64,
                    with.ok.len()
                )
            });
            let _ = writeln!(
                md,
                "| {} | {b} | {} | {} | {} | {} | {} | {} → {} | {} | {} | {} | {within} | {closed} |",
                s.title,
                cell_text(&without, &tp, &si),
                cell_text(&with, &tp, &si),
                kept.map_or("–".into(), |k| format!("{:.0} %", 100.0 * k)),
                kept.map_or("–", |k| yes(k >= SLOW_KEEP)),
                spread_text(with.spread(|r| r.loss_pct), &pct),
                spread_text(with.spread(|r| r.rss_before_kib as f64), &mib_text),
                spread_text(with.spread(|r| r.rss_after_kib as f64), &mib_text),
                spread_text(peak_without, &mib_text),
                spread_text(peak_with, &mib_text),
                budget.map_or("–".into(), |l| format!(
                    "{} (+{SLOW_CLIENT_BUDGET_MIB:.0} MiB)",
                    mib_text(l)
                )),
            );
        }
    }
    md.push('\n');
}

fn yes(b: bool) -> &'static str {
    if b {
        "**yes**"
    } else {
        "no"
    }
}

type ChartGroup = (String, Vec<(String, Spread)>);

fn chart_groups(
    scenarios: &[&Scenario],
    records: &[Record],
    f: &dyn Fn(&Record) -> f64,
    title: &dyn Fn(&Scenario) -> String,
) -> Vec<ChartGroup> {
    let brokers = brokers_of(scenarios, records);
    scenarios
        .iter()
        .map(|s| {
            let bars = brokers
                .iter()
                .filter_map(|b| Some((b.clone(), cell(records, &s.id, b).spread(f)?)))
                .collect();
            (title(s), bars)
        })
        .collect()
}

fn runs_csv(records: &[Record]) -> String {
    let mut s = String::from(
        "rep,scenario,broker,error,sent,expected,delivered,secs,throughput_msg_s,loss_pct,\
         p50_us,p99_us,p999_us,broker_cpu_s,broker_sys_s,broker_cpu_us_per_msg,rss_before_kib,\
         rss_after_kib,rss_peak_kib,loadgen_cpu_s,connections,connect_rate_s,rss_per_conn_b,\
         payload_b,slow_closed\n",
    );
    let num = |x: f64| {
        if x.is_nan() {
            String::new()
        } else {
            format!("{x:.3}")
        }
    };
    for r in records {
        let _ = writeln!(
            s,
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            r.rep,
            r.scenario,
            r.broker,
            csv_field(r.error.as_deref().unwrap_or("")),
            r.sent,
            r.expected,
            r.delivered,
            num(r.secs),
            num(r.throughput),
            num(r.loss_pct),
            num(r.p50_us),
            num(r.p99_us),
            num(r.p999_us),
            num(r.broker_cpu_s),
            num(r.broker_sys_s),
            num(r.cpu_us_per_msg),
            r.rss_before_kib,
            r.rss_after_kib,
            r.rss_peak_kib,
            num(r.gen_cpu_s),
            r.connections,
            num(r.connect_rate),
            num(r.rss_per_conn_b),
            r.payload_b,
            num(r.slow_closed),
        );
    }
    s
}

/// A CSV field, quoted when it needs to be.
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn summary_csv(scenarios: &[Scenario], records: &[Record]) -> String {
    type Metric = (&'static str, fn(&Record) -> f64);
    let metrics: [Metric; 12] = [
        ("throughput_msg_s", |r| r.throughput),
        ("payload_mib_s", mib_per_s),
        ("loss_pct", |r| r.loss_pct),
        ("p50_us", |r| r.p50_us),
        ("p99_us", |r| r.p99_us),
        ("p999_us", |r| r.p999_us),
        ("broker_cpu_us_per_msg", |r| r.cpu_us_per_msg),
        ("rss_peak_kib", |r| r.rss_peak_kib as f64),
        ("rss_per_conn_b", |r| r.rss_per_conn_b),
        ("connect_rate_s", |r| r.connect_rate),
        ("rss_after_kib", |r| r.rss_after_kib as f64),
        ("slow_closed", |r| r.slow_closed),
    ];
    let mut s = String::from("scenario,broker,runs_ok,runs_failed");
    for (m, _) in &metrics {
        let _ = write!(s, ",{m}_median,{m}_min,{m}_max");
    }
    s.push('\n');
    for sc in scenarios {
        for v in &sc.variants {
            let c = cell(records, &sc.id, &v.label());
            if c.ok.is_empty() && c.failed.is_empty() {
                continue;
            }
            let _ = write!(
                s,
                "{},{},{},{}",
                sc.id,
                v.label(),
                c.ok.len(),
                c.failed.len()
            );
            for (_, f) in &metrics {
                match c.spread(f) {
                    Some(x) => {
                        let _ = write!(s, ",{:.3},{:.3},{:.3}", x.median, x.min, x.max);
                    }
                    None => s.push_str(",,,"),
                }
            }
            s.push('\n');
        }
    }
    s
}

fn markdown(scenarios: &[Scenario], records: &[Record], meta: &Meta, charts: &[&str]) -> String {
    let mut md = String::new();
    let p = &meta.programs;
    let _ = writeln!(
        md,
        "- **Command**: `cargo run --release -p mqtt-bench{}`",
        if meta.args.is_empty() {
            String::new()
        } else {
            format!(" -- {}", meta.args)
        }
    );
    let _ = writeln!(
        md,
        "- **Date**: {}",
        command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"])
    );
    let _ = writeln!(md, "- **Machine**: {}", machine());
    let _ = writeln!(
        md,
        "- **Load average** (1, 5, 15 min) at the start: {}; at the end: {}",
        meta.load_start,
        load_average()
    );
    let commit = command_output("git", &["rev-parse", "--short", "HEAD"]);
    // The results being written are not changes to the code measured.
    let dirty = !command_output(
        "git",
        &[
            "status",
            "--porcelain",
            "--untracked-files=no",
            "--",
            ".",
            ":(exclude)bench/results",
        ],
    )
    .is_empty();
    let _ = writeln!(
        md,
        "- **Code measured**: commit `{commit}`{}",
        if dirty { " with local changes" } else { "" }
    );
    if let Some(o) = &p.ours {
        let _ = writeln!(md, "- **mqtt-broker**: `{}`", o.display());
    }
    if let Some((path, v)) = &p.mosquitto {
        let _ = writeln!(md, "- **mosquitto**: {v} (`{}`)", path.display());
    }
    if let Some((path, v)) = &p.rumqttd {
        let _ = writeln!(md, "- **rumqttd**: {v} (`{}`)", path.display());
    }
    let _ = writeln!(
        md,
        "- **Repetitions**: {}; each cell is the median, with the range (min–max) in parentheses",
        meta.reps
    );
    let _ = writeln!(md, "- **Open-files limit**: {}", meta.open_files);
    md.push('\n');
    for c in charts {
        let _ = writeln!(md, "![{c}]({c})\n");
    }

    let group =
        |g: Group| -> Vec<&Scenario> { scenarios.iter().filter(|s| s.group == g).collect() };
    let tp: Vec<&Scenario> = scenarios
        .iter()
        .filter(|s| matches!(s.group, Group::FanIn | Group::FanOut))
        .collect();
    if !tp.is_empty() {
        md.push_str("### Throughput: delivered messages per second (higher is better)\n\n");
        metric_table(&mut md, &tp, records, &|r| r.throughput, &si);
        md.push_str("Messages lost (QoS 0 may drop; QoS 1 should not):\n\n");
        metric_table(&mut md, &tp, records, &|r| r.loss_pct, &pct);
        md.push_str("Broker CPU time (user + system) per delivered message (lower is better):\n\n");
        metric_table(&mut md, &tp, records, &|r| r.cpu_us_per_msg, &us);
        md.push_str("Share of that CPU time spent in the kernel (system time):\n\n");
        metric_table(
            &mut md,
            &tp,
            records,
            &|r| 100.0 * r.broker_sys_s / r.broker_cpu_s.max(1e-9),
            &|x| format!("{x:.0} %"),
        );
        md.push_str("Broker peak resident memory (VmHWM, lower is better):\n\n");
        metric_table(&mut md, &tp, records, &|r| r.rss_peak_kib as f64, &mib_text);
        md.push_str("Load generator CPU as a share of the run's wall time:\n\n");
        metric_table(
            &mut md,
            &tp,
            records,
            &|r| 100.0 * r.gen_cpu_s / r.secs.max(1e-9),
            &|x| format!("{x:.0} %"),
        );
    }
    let fixed = group(Group::FixedRate);
    if !fixed.is_empty() {
        md.push_str("### Fixed rate: latency from publish to delivery (lower is better)\n\n");
        for (name, f) in [
            ("p50", &(|r: &Record| r.p50_us) as &dyn Fn(&Record) -> f64),
            ("p99", &|r: &Record| r.p99_us),
            ("p99.9", &|r: &Record| r.p999_us),
        ] {
            let _ = writeln!(md, "{name}:\n");
            metric_table(&mut md, &fixed, records, f, &us);
        }
        md.push_str("Messages lost:\n\n");
        metric_table(&mut md, &fixed, records, &|r| r.loss_pct, &pct);
        md.push_str("Broker CPU time per delivered message:\n\n");
        metric_table(&mut md, &fixed, records, &|r| r.cpu_us_per_msg, &us);
    }
    let idle = group(Group::Idle);
    if !idle.is_empty() {
        md.push_str("### Idle subscribed connections\n\n");
        md.push_str("Broker resident memory growth per connection (VmRSS after − before, ÷ connections; lower is better):\n\n");
        metric_table(&mut md, &idle, records, &|r| r.rss_per_conn_b, &|x| {
            format!("{x:.0} B")
        });
        md.push_str("Broker resident memory with all connections open:\n\n");
        metric_table(
            &mut md,
            &idle,
            records,
            &|r| r.rss_after_kib as f64,
            &mib_text,
        );
        let at_once = idle.first().map_or(0, |s| s.idle_concurrency);
        md.push_str(&format!(
            "Connections per second (CONNECT, CONNACK, SUBSCRIBE, SUBACK; {at_once} at a time; higher is better):\n\n"
        ));
        metric_table(&mut md, &idle, records, &|r| r.connect_rate, &si);
        md.push_str("Broker CPU time per connection:\n\n");
        metric_table(&mut md, &idle, records, &|r| r.cpu_us_per_msg, &us);
        if let Some(s) = idle.first() {
            if s.idle_connections < meta.idle_asked {
                let _ = writeln!(
                    md,
                    "Only {} connections of the {} asked: the open-files limit ({}) allows no \
                     more. {} connections need a hard limit of at least {} (`ulimit -Hn`, or \
                     `LimitNOFILE` for a systemd unit), raised by the administrator.\n",
                    s.idle_connections,
                    meta.idle_asked,
                    meta.open_files,
                    meta.idle_asked,
                    meta.idle_asked + 200
                );
            }
        }
    }
    let pers = group(Group::Persistence);
    if !pers.is_empty() {
        md.push_str("### Persistence: QoS 1 fan-in, subscriber with a persistent session\n\n");
        persistence_table(&mut md, &pers, records);
    }
    let p2p = group(Group::P2p);
    if !p2p.is_empty() {
        md.push_str("### Point to point: each publisher's topic has one subscriber\n\n");
        flow_tables(&mut md, &p2p, records);
    }
    let rt = group(Group::RoundTrip);
    if !rt.is_empty() {
        md.push_str(
            "### Round trip: one client, its own message back before the next (closed loop)\n\n\
             The TCP echo row is the baseline: the same loop and message size against an echo \
             thread of the harness, no broker.\n\n",
        );
        md.push_str("Round trips per second (higher is better):\n\n");
        metric_table(&mut md, &rt, records, &|r| r.throughput, &si);
        for (name, f) in [
            ("p50", &(|r: &Record| r.p50_us) as &dyn Fn(&Record) -> f64),
            ("p99", &|r: &Record| r.p99_us),
            ("p99.9", &|r: &Record| r.p999_us),
        ] {
            let _ = writeln!(md, "Round-trip time {name} (lower is better):\n");
            metric_table(&mut md, &rt, records, f, &us);
        }
        md.push_str("Broker CPU time per round trip:\n\n");
        metric_table(&mut md, &rt, records, &|r| r.cpu_us_per_msg, &us);
    }
    let slow = group(Group::SlowSubscriber);
    if !slow.is_empty() {
        md.push_str(
            "### Slow subscriber: one publisher, readers, and one subscriber that never reads\n\n",
        );
        let _ = writeln!(
            md,
            "mqtt-broker runs with `configs/mqtt-broker-bounded.toml`, mosquitto with \
             `configs/mosquitto-bounded.conf`, rumqttd with `configs/rumqttd.toml`. \
             \"kept\": the readers' throughput with the slow subscriber ÷ without (target \
             ≥ {:.0} %). Budget: mqtt-broker's peak RSS without the slow subscriber + \
             {SLOW_CLIENT_BUDGET_MIB:.0} MiB. \"slow one closed\": the broker had closed the \
             connection by the end of the run.\n",
            100.0 * SLOW_KEEP
        );
        slow_table(&mut md, &slow, records);
        md.push_str("The readers' delivered messages per second, all runs:\n\n");
        metric_table(&mut md, &slow, records, &|r| r.throughput, &si);
        md.push_str("The readers' lost messages:\n\n");
        metric_table(&mut md, &slow, records, &|r| r.loss_pct, &pct);
        md.push_str("Broker peak resident memory:\n\n");
        metric_table(
            &mut md,
            &slow,
            records,
            &|r| r.rss_peak_kib as f64,
            &mib_text,
        );
        md.push_str("Broker CPU time per delivered message:\n\n");
        metric_table(&mut md, &slow, records, &|r| r.cpu_us_per_msg, &us);
    }
    let payload = group(Group::Payload);
    if !payload.is_empty() {
        md.push_str("### Large payloads: fan-in 10→1\n\n");
        md.push_str("Payload MiB delivered per second (higher is better):\n\n");
        metric_table(&mut md, &payload, records, &mib_per_s, &|x| {
            format!("{x:.0}")
        });
        flow_tables(&mut md, &payload, records);
    }
    md.push_str("### Targets\n\n");
    targets(&mut md, scenarios, records);
    md
}

fn persistence_table(md: &mut String, scenarios: &[&Scenario], records: &[Record]) {
    let tp = |r: &Record| r.throughput;
    for s in scenarios {
        let brokers = brokers_of(&[s], records);
        let mosq = cell(records, &s.id, "mosquitto").spread(tp);
        let mosq_p = cell(records, &s.id, "mosquitto persistence").spread(tp);
        md.push_str("| broker | delivered msg/s | ÷ mosquitto (in memory) | ÷ mosquitto persistence | loss | CPU per message | peak RSS |\n|---|---:|---:|---:|---:|---:|---:|\n");
        for b in &brokers {
            let c = cell(records, &s.id, b);
            let t = c.spread(tp);
            let _ = writeln!(
                md,
                "| {b} | {} | {} | {} | {} | {} | {} |",
                cell_text(&c, &tp, &si),
                ratio_text(ratio(t, mosq)),
                ratio_text(ratio(t, mosq_p)),
                spread_text(c.spread(|r| r.loss_pct), &pct),
                spread_text(c.spread(|r| r.cpu_us_per_msg), &us),
                spread_text(c.spread(|r| r.rss_peak_kib as f64), &mib_text),
            );
        }
        md.push('\n');
    }
}

fn targets(md: &mut String, scenarios: &[Scenario], records: &[Record]) {
    md.push_str("| target | scenario | figure | met? |\n|---|---|---:|:---:|\n");
    let med = |id: &str, broker: &str, f: fn(&Record) -> f64| cell(records, id, broker).spread(f);
    for s in scenarios {
        match s.group {
            Group::FanIn | Group::FanOut => {
                let ours = med(&s.id, OURS, |r| r.throughput);
                for (peer, want) in [("rumqttd", 1.25), ("mosquitto", 2.0)] {
                    if let Some(r) = ratio(ours, med(&s.id, peer, |r| r.throughput)) {
                        let _ = writeln!(
                            md,
                            "| throughput ≥ {want}x {peer} | {} | {r:.2}x | {} |",
                            s.title,
                            yes(r >= want)
                        );
                    }
                }
            }
            Group::FixedRate => {
                if let (Some(o), Some(m)) = (
                    med(&s.id, OURS, |r| r.p99_us),
                    med(&s.id, "mosquitto", |r| r.p99_us),
                ) {
                    let _ = writeln!(
                        md,
                        "| p99 latency ≤ mosquitto's | {} | {} vs {} | {} |",
                        s.title,
                        us(o.median),
                        us(m.median),
                        yes(o.median <= m.median)
                    );
                }
            }
            Group::Idle => {
                if let Some(o) = med(&s.id, OURS, |r| r.rss_per_conn_b) {
                    let _ = writeln!(
                        md,
                        "| idle connection ≤ 1 KiB | {} | {:.0} B | {} |",
                        s.title,
                        o.median,
                        yes(o.median <= 1024.0)
                    );
                }
            }
            Group::Persistence => {
                if let (Some(o), Some(m)) = (
                    med(&s.id, "mqtt-broker fsync", |r| r.throughput),
                    med(&s.id, "mosquitto", |r| r.throughput),
                ) {
                    let _ = writeln!(
                        md,
                        "| durability fsync ≥ mosquitto in memory | {} | {} vs {} ({:.2}x) | {} |",
                        s.title,
                        si(o.median),
                        si(m.median),
                        o.median / m.median,
                        yes(o.median >= m.median)
                    );
                }
            }
            Group::SlowSubscriber => {
                let Some(base) = &s.baseline else { continue };
                let with = med(&s.id, OURS, |r| r.throughput);
                if let Some(k) = ratio(with, med(base, OURS, |r| r.throughput)) {
                    let _ = writeln!(
                        md,
                        "| readers keep ≥ {:.0} % with a slow subscriber | {} | {:.0} % | {} |",
                        100.0 * SLOW_KEEP,
                        s.title,
                        100.0 * k,
                        yes(k >= SLOW_KEEP)
                    );
                }
                if let (Some(p), Some(p0)) = (
                    med(&s.id, OURS, |r| r.rss_peak_kib as f64),
                    med(base, OURS, |r| r.rss_peak_kib as f64),
                ) {
                    let budget = p0.median + SLOW_CLIENT_BUDGET_MIB * 1024.0;
                    let _ = writeln!(
                        md,
                        "| peak RSS within the budget | {} | {} ≤ {} | {} |",
                        s.title,
                        mib_text(p.median),
                        mib_text(budget),
                        yes(p.median <= budget)
                    );
                }
            }
            Group::P2p | Group::RoundTrip | Group::Payload => {}
        }
    }
    md.push('\n');
}

/// How values map to bar lengths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// Proportional, from zero.
    Linear,
    /// Logarithmic, between powers of ten around the data.
    Log,
}

const COLORS: [&str; 6] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#d62728",
];

fn color_of(broker: &str, all: &[String]) -> &'static str {
    let i = all.iter().position(|b| b == broker).unwrap_or(0);
    COLORS[i % COLORS.len()]
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A horizontal grouped bar chart: one group per scenario, one bar per broker, a whisker
/// from the minimum to the maximum, the median written after the bar.
pub fn bar_chart(
    title: &str,
    groups: &[ChartGroup],
    fmt: &dyn Fn(f64) -> String,
    scale: Scale,
) -> String {
    let mut brokers: Vec<String> = Vec::new();
    for (_, bars) in groups {
        for (b, _) in bars {
            if !brokers.contains(b) {
                brokers.push(b.clone());
            }
        }
    }
    let max = groups
        .iter()
        .flat_map(|(_, bars)| bars.iter().map(|(_, s)| s.max))
        .fold(0.0f64, f64::max)
        .max(1e-9);
    let min = groups
        .iter()
        .flat_map(|(_, bars)| bars.iter().map(|(_, s)| s.min))
        .filter(|m| *m > 0.0)
        .fold(f64::INFINITY, f64::min)
        .min(max);
    let (label_w, plot_w, bar_h, gap, top) = (330.0, 520.0, 16.0, 14.0, 56.0);
    let (lo, hi) = (
        10f64.powf(min.log10().floor()),
        10f64.powf(max.log10().ceil()),
    );
    // Where a value lies along the plot, 0 to plot_w.
    let pos = |v: f64| -> f64 {
        match scale {
            Scale::Linear => plot_w * v / max,
            Scale::Log => {
                plot_w * (v.max(lo).log10() - lo.log10()) / (hi.log10() - lo.log10()).max(1e-9)
            }
        }
    };
    let rows: usize = groups.iter().map(|(_, b)| b.len().max(1)).sum();
    let height = top + rows as f64 * bar_h + groups.len() as f64 * gap + 40.0;
    let width = label_w + plot_w + 110.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        s,
        r#"<rect width="100%" height="100%" fill="white"/><text x="10" y="20" font-size="14" font-weight="bold">{}</text>"#,
        xml(title)
    );
    let mut lx = 10.0;
    for b in &brokers {
        let _ = writeln!(
            s,
            r#"<rect x="{lx}" y="32" width="12" height="12" fill="{}"/><text x="{}" y="43">{}</text>"#,
            color_of(b, &brokers),
            lx + 16.0,
            xml(b)
        );
        lx += 24.0 + 7.0 * b.len() as f64;
    }
    let mut y = top;
    for (name, bars) in groups {
        let group_h = bars.len().max(1) as f64 * bar_h;
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            label_w - 8.0,
            y + group_h / 2.0 + 4.0,
            xml(name)
        );
        for (b, sp) in bars {
            let w = pos(sp.median);
            let _ = writeln!(
                s,
                r#"<rect x="{label_w}" y="{:.1}" width="{w:.1}" height="{:.1}" fill="{}"><title>{}: {}</title></rect>"#,
                y + 1.0,
                bar_h - 2.0,
                color_of(b, &brokers),
                xml(b),
                fmt(sp.median)
            );
            let (x0, x1) = (label_w + pos(sp.min), label_w + pos(sp.max));
            let cy = y + bar_h / 2.0;
            let _ = writeln!(
                s,
                r#"<path d="M{x0:.1} {cy:.1}H{x1:.1}M{x0:.1} {:.1}V{:.1}M{x1:.1} {:.1}V{:.1}" stroke="black" fill="none"/>"#,
                cy - 4.0,
                cy + 4.0,
                cy - 4.0,
                cy + 4.0
            );
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
                x1.max(label_w + w) + 6.0,
                cy + 4.0,
                fmt(sp.median)
            );
            y += bar_h;
        }
        if bars.is_empty() {
            y += bar_h;
        }
        y += gap;
    }
    let _ = writeln!(
        s,
        r##"<line x1="{label_w}" y1="{top}" x2="{label_w}" y2="{:.1}" stroke="#444"/>"##,
        y - gap
    );
    if scale == Scale::Log {
        // A grid line and label at each power of ten.
        let mut t = lo;
        while t <= hi * 1.0001 {
            let x = label_w + pos(t);
            let _ = writeln!(
                s,
                r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{:.1}" stroke="#ccc"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
                y - gap,
                y - gap + 16.0,
                fmt(t)
            );
            t *= 10.0;
        }
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{:.1}" text-anchor="end">(log scale)</text>"#,
            label_w - 8.0,
            y - gap + 16.0
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn si_units() {
        assert_eq!(si(1_234_567.0), "1.23M");
        assert_eq!(si(41_234.0), "41.2k");
        assert_eq!(si(412_345.0), "412k");
        assert_eq!(si(5.0), "5.00");
        assert_eq!(si(f64::NAN), "–");
    }

    #[test]
    fn csv_quoting() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a, \"b\""), "\"a, \"\"b\"\"\"");
    }

    #[test]
    fn chart_is_svg() {
        let g = vec![(
            "fan-in <x>".to_string(),
            vec![(
                "a".to_string(),
                Spread {
                    median: 2.0,
                    min: 1.0,
                    max: 3.0,
                },
            )],
        )];
        let s = bar_chart("t", &g, &si, Scale::Linear);
        assert!(bar_chart("t", &g, &si, Scale::Log).contains("(log scale)"));
        assert!(s.starts_with("<svg") && s.contains("fan-in &lt;x&gt;") && s.ends_with("</svg>\n"));
    }
}
