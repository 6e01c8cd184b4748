//! `mqtt-bench`: this workspace's broker side by side with mosquitto and rumqttd.
//!
//! Every run starts one broker fresh on its own loopback ports, sets up the clients,
//! reads the broker's CPU time and memory from `/proc`, runs the load, and reads them
//! again. Within a repetition every scenario runs on each broker in turn (A B C, A B C);
//! the report gives the median of the repetitions and their range. See `bench/README.md`.

mod brokers;
mod client;
mod idle;
mod load;
mod proc;
mod report;
mod rtt;
mod stats;

use anyhow::{Context, Result};
use brokers::{Kind, Profile, Programs, Running, StartOptions, Variant};
use clap::Parser;
use load::{Flow, FlowSpec, PAYLOAD};
use mqtt_proto::{ProtocolVersion, QoS};
use rtt::RoundTripSpec;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(
    name = "mqtt-bench",
    about = "The broker against mosquitto and rumqttd on loopback"
)]
struct Cli {
    /// Brokers to measure, of: ours, mosquitto, rumqttd.
    #[arg(long, value_delimiter = ',', default_value = "ours,mosquitto,rumqttd")]
    brokers: Vec<String>,
    /// Scenario groups to run, of: fan-in, fan-out, fixed-rate, idle, persistence, p2p,
    /// round-trip, slow-subscriber, payload.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "fan-in,fan-out,fixed-rate,idle,persistence,p2p,round-trip,slow-subscriber,payload"
    )]
    groups: Vec<String>,
    /// Repetitions.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Where the CSV files, report and charts go.
    #[arg(long)]
    out: Option<PathBuf>,
    /// The mqtt-broker binary to measure. Default: build it with
    /// `cargo build --release -p adapter-tokio` and take it from the target directory.
    #[arg(long)]
    broker_bin: Option<PathBuf>,
    /// Do not build mqtt-broker, take it from the target directory as it is.
    #[arg(long)]
    no_build: bool,
    /// Messages of a fan-in run, over all publishers.
    #[arg(long, default_value_t = 200_000)]
    fan_in_messages: u64,
    /// Messages of a fan-out run (each reaches every subscriber).
    #[arg(long, default_value_t = 10_000)]
    fan_out_messages: u64,
    /// Subscribers of a fan-out run.
    #[arg(long, default_value_t = 100)]
    fan_out_subscribers: usize,
    /// Rate of the fixed-rate runs, messages per second.
    #[arg(long, default_value_t = 5_000.0)]
    rate: f64,
    /// Length of the fixed-rate runs, seconds.
    #[arg(long, default_value_t = 10)]
    rate_secs: u64,
    /// Idle connections (at most the open-files limit minus 200).
    #[arg(long, default_value_t = 10_000)]
    idle_connections: usize,
    /// Listeners the idle connections are spread over; 0: as many as the ephemeral port
    /// range needs (one per 25,000 connections or so).
    #[arg(long, default_value_t = 0)]
    idle_listeners: usize,
    /// Connection attempts of the idle group under way at once (1 measures one
    /// connection's latency, larger numbers how the broker overlaps many). Keep it below
    /// the brokers' listen backlogs (128 and more), so that no SYN is dropped and retried a
    /// second later.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=128))]
    idle_concurrency: u16,
    /// Publisher/subscriber pairs of a point-to-point run.
    #[arg(long, default_value_t = 1_000)]
    p2p_pairs: usize,
    /// Messages each point-to-point publisher sends.
    #[arg(long, default_value_t = 100)]
    p2p_messages: u64,
    /// Round trips of a round-trip run.
    #[arg(long, default_value_t = 20_000)]
    round_trips: u64,
    /// Subscribers that keep reading in a slow-subscriber run (one more never reads).
    #[arg(long, default_value_t = 9)]
    slow_readers: usize,
    /// Messages of a slow-subscriber run.
    #[arg(long, default_value_t = 50_000)]
    slow_messages: u64,
    /// Payload bytes of a slow-subscriber run.
    #[arg(long, default_value_t = 1024)]
    slow_payload: usize,
    /// Payload sizes of the payload group, bytes.
    #[arg(long, value_delimiter = ',', default_value = "1024,65536")]
    payload_sizes: Vec<usize>,
    /// Messages of a payload run, over all publishers, at most...
    #[arg(long, default_value_t = 100_000)]
    payload_messages: u64,
    /// ...and at most this many MiB of payload.
    #[arg(long, default_value_t = 320)]
    payload_mib: u64,
    /// Unacknowledged QoS 1 messages per publisher.
    #[arg(long, default_value_t = 100)]
    window: usize,
    /// Upper bound of one run (not the fixed-rate ones), seconds.
    #[arg(long, default_value_t = 30)]
    run_timeout: u64,
    /// Threads of the load generator (1: a current-thread tokio runtime).
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// mqtt-broker's `[runtime] worker_threads` (0: its default, CONFIG.md "Runtime").
    #[arg(long, default_value_t = 0)]
    worker_threads: usize,
    /// Small counts and one repetition: checks the set-up in a minute.
    #[arg(long)]
    quick: bool,
}

/// The kinds of scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// Many publishers, one subscriber.
    FanIn,
    /// One publisher, many subscribers.
    FanOut,
    /// A fixed rate, latency measured.
    FixedRate,
    /// Idle subscribed connections.
    Idle,
    /// QoS 1 fan-in with persistence.
    Persistence,
    /// Point to point: each publisher's topic has one subscriber.
    P2p,
    /// One client's messages back to itself, one at a time; a TCP echo as baseline.
    RoundTrip,
    /// One publisher, readers and one subscriber that never reads.
    SlowSubscriber,
    /// Fan-in with large payloads.
    Payload,
}

impl Group {
    fn name(self) -> &'static str {
        match self {
            Group::FanIn => "fan-in",
            Group::FanOut => "fan-out",
            Group::FixedRate => "fixed-rate",
            Group::Idle => "idle",
            Group::Persistence => "persistence",
            Group::P2p => "p2p",
            Group::RoundTrip => "round-trip",
            Group::SlowSubscriber => "slow-subscriber",
            Group::Payload => "payload",
        }
    }
}

/// One scenario: a load and the brokers it runs on.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Short name, used in the CSV files.
    pub id: String,
    /// The kind.
    pub group: Group,
    /// Title in tables.
    pub title: String,
    /// Protocol version of the clients.
    pub version: ProtocolVersion,
    /// The load of a message scenario.
    pub flow: Option<FlowSpec>,
    /// The loop of a round-trip scenario.
    pub round_trip: Option<RoundTripSpec>,
    /// Connections of the idle scenario.
    pub idle_connections: usize,
    /// Connection attempts of the idle scenario under way at once.
    pub idle_concurrency: usize,
    /// Broker listeners (the idle scenario may need more than one).
    pub listeners: usize,
    /// The brokers' configurations.
    pub profile: Profile,
    /// A slow-subscriber scenario: the id of the same run without the slow subscriber.
    pub baseline: Option<String>,
    /// The brokers.
    pub variants: Vec<Variant>,
}

impl Scenario {
    /// A message scenario on the main brokers with the standard configurations.
    fn flow(id: String, group: Group, title: String, spec: FlowSpec) -> Scenario {
        Scenario {
            id,
            group,
            title,
            version: spec.version,
            flow: Some(spec),
            round_trip: None,
            idle_connections: 0,
            idle_concurrency: 0,
            listeners: 1,
            profile: Profile::Standard,
            baseline: None,
            variants: MAIN.to_vec(),
        }
    }
}

/// The brokers of most scenarios.
const MAIN: [Variant; 3] = [
    Variant::OursMemory,
    Variant::MosquittoMemory,
    Variant::Rumqttd,
];

fn version_name(v: ProtocolVersion) -> &'static str {
    match v {
        ProtocolVersion::V5 => "5.0",
        _ => "3.1.1",
    }
}

fn scenarios(cli: &Cli, idle_connections: usize) -> Vec<Scenario> {
    let main = MAIN.to_vec();
    let timeout = Duration::from_secs(cli.run_timeout);
    // What most scenarios share.
    let base = FlowSpec {
        version: ProtocolVersion::V3_1_1,
        qos: QoS::AtMostOnce,
        publishers: 1,
        subscribers: 1,
        point_to_point: false,
        slow_subscribers: 0,
        payload: PAYLOAD,
        messages_per_publisher: 0,
        rate: None,
        window: cli.window,
        persistent_subscribers: false,
        deadline: timeout,
        latency: false,
    };
    let mut out = Vec::new();
    let versions = [ProtocolVersion::V3_1_1, ProtocolVersion::V5];
    for group in [Group::FanIn, Group::FanOut] {
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
            for version in versions {
                let (publishers, subscribers, per_pub, shape) = if group == Group::FanIn {
                    (10, 1, cli.fan_in_messages / 10, "10→1")
                } else {
                    let s = cli.fan_out_subscribers;
                    (
                        1,
                        s,
                        cli.fan_out_messages,
                        if s == 100 { "1→100" } else { "1→N" },
                    )
                };
                out.push(Scenario {
                    id: format!(
                        "{}-qos{}-v{}",
                        group.name(),
                        qos_name(qos),
                        version_name(version)
                    ),
                    group,
                    title: format!(
                        "{} {shape}, QoS {}, {}",
                        group.name(),
                        qos_name(qos),
                        version_name(version)
                    ),
                    version,
                    flow: Some(FlowSpec {
                        version,
                        qos,
                        publishers,
                        subscribers,
                        messages_per_publisher: per_pub,
                        rate: None,
                        window: cli.window,
                        persistent_subscribers: false,
                        deadline: timeout,
                        latency: false,
                        ..base.clone()
                    }),
                    round_trip: None,
                    idle_connections: 0,
                    idle_concurrency: 0,
                    listeners: 1,
                    profile: Profile::Standard,
                    baseline: None,
                    variants: main.clone(),
                });
            }
        }
    }
    for (qos, version) in [
        (QoS::AtMostOnce, ProtocolVersion::V3_1_1),
        (QoS::AtLeastOnce, ProtocolVersion::V3_1_1),
        (QoS::AtLeastOnce, ProtocolVersion::V5),
    ] {
        out.push(Scenario {
            id: format!("fixed-rate-qos{}-v{}", qos_name(qos), version_name(version)),
            group: Group::FixedRate,
            title: format!(
                "{} msg/s 1→1, QoS {}, {}",
                cli.rate,
                qos_name(qos),
                version_name(version)
            ),
            version,
            flow: Some(FlowSpec {
                version,
                qos,
                publishers: 1,
                subscribers: 1,
                messages_per_publisher: (cli.rate * cli.rate_secs as f64) as u64,
                rate: Some(cli.rate),
                window: cli.window,
                persistent_subscribers: false,
                deadline: Duration::from_secs(cli.rate_secs + 10),
                latency: true,
                ..base.clone()
            }),
            round_trip: None,
            idle_connections: 0,
            idle_concurrency: 0,
            listeners: 1,
            profile: Profile::Standard,
            baseline: None,
            variants: main.clone(),
        });
    }
    out.push(Scenario {
        id: "idle-v3.1.1".into(),
        group: Group::Idle,
        title: format!("{idle_connections} idle subscribed connections, 3.1.1"),
        version: ProtocolVersion::V3_1_1,
        flow: None,
        round_trip: None,
        idle_connections,
        idle_concurrency: cli.idle_concurrency.into(),
        listeners: if cli.idle_listeners > 0 {
            cli.idle_listeners
        } else {
            idle::listeners_for(idle_connections)
        },
        profile: Profile::Standard,
        baseline: None,
        variants: main.clone(),
    });
    out.push(Scenario {
        id: "persistence-fan-in-qos1-v3.1.1".into(),
        group: Group::Persistence,
        title: "fan-in 10→1, QoS 1, 3.1.1, subscriber with a persistent session".into(),
        version: ProtocolVersion::V3_1_1,
        flow: Some(FlowSpec {
            version: ProtocolVersion::V3_1_1,
            qos: QoS::AtLeastOnce,
            publishers: 10,
            subscribers: 1,
            messages_per_publisher: cli.fan_in_messages / 10,
            rate: None,
            window: cli.window,
            persistent_subscribers: true,
            deadline: timeout,
            latency: false,
            ..base.clone()
        }),
        round_trip: None,
        idle_connections: 0,
        idle_concurrency: 0,
        listeners: 1,
        profile: Profile::Standard,
        baseline: None,
        variants: vec![
            Variant::OursDurable("fsync"),
            Variant::OursDurable("interval"),
            Variant::OursDurable("none"),
            Variant::OursMemory,
            Variant::MosquittoPersistence,
            Variant::MosquittoMemory,
        ],
    });
    new_scenarios(cli, &base, &mut out);
    out.retain(|s| cli.groups.iter().any(|g| g == s.group.name()));
    out
}

fn qos_name(q: QoS) -> &'static str {
    if q == QoS::AtMostOnce {
        "0"
    } else {
        "1"
    }
}

/// 1024 as "1 KiB", 65536 as "64 KiB", 100 as "100 B".
fn size_name(b: usize) -> String {
    if b >= 1024 && b.is_multiple_of(1024) {
        format!("{} KiB", b / 1024)
    } else {
        format!("{b} B")
    }
}

/// Point to point, round trips, a slow subscriber, large payloads.
fn new_scenarios(cli: &Cli, base: &FlowSpec, out: &mut Vec<Scenario>) {
    let (v3, v5) = (ProtocolVersion::V3_1_1, ProtocolVersion::V5);
    let (q0, q1) = (QoS::AtMostOnce, QoS::AtLeastOnce);
    let n = cli.p2p_pairs;
    for (qos, version) in [(q0, v3), (q1, v3), (q0, v5), (q1, v5)] {
        out.push(Scenario::flow(
            format!("p2p-qos{}-v{}", qos_name(qos), version_name(version)),
            Group::P2p,
            format!(
                "p2p {n}→{n}, QoS {}, {}",
                qos_name(qos),
                version_name(version)
            ),
            FlowSpec {
                version,
                qos,
                publishers: n,
                subscribers: n,
                point_to_point: true,
                messages_per_publisher: cli.p2p_messages,
                ..base.clone()
            },
        ));
    }
    for qos in [q0, q1] {
        let spec = RoundTripSpec {
            version: v3,
            qos,
            count: cli.round_trips,
            payload: PAYLOAD,
            deadline: Duration::from_secs(cli.run_timeout),
        };
        out.push(Scenario {
            id: format!("round-trip-qos{}-v3.1.1", qos_name(qos)),
            group: Group::RoundTrip,
            title: format!("round trip, QoS {}, 3.1.1", qos_name(qos)),
            version: v3,
            flow: None,
            round_trip: Some(spec),
            idle_connections: 0,
            idle_concurrency: 0,
            listeners: 1,
            profile: Profile::Standard,
            baseline: None,
            variants: MAIN.iter().cloned().chain([Variant::TcpEcho]).collect(),
        });
    }
    let r = cli.slow_readers;
    for qos in [q0, q1] {
        let spec = FlowSpec {
            version: v3,
            qos,
            publishers: 1,
            subscribers: r,
            payload: cli.slow_payload,
            messages_per_publisher: cli.slow_messages,
            ..base.clone()
        };
        let id = format!("slow-subscriber-qos{}-v3.1.1", qos_name(qos));
        let size = size_name(cli.slow_payload);
        for slow in [0, 1] {
            let mut s = Scenario::flow(
                if slow == 0 {
                    format!("{id}-without")
                } else {
                    id.clone()
                },
                Group::SlowSubscriber,
                if slow == 0 {
                    format!(
                        "1→{r} readers, QoS {}, {size}, no slow subscriber",
                        qos_name(qos)
                    )
                } else {
                    format!("1→{r} readers + 1 slow, QoS {}, {size}", qos_name(qos))
                },
                FlowSpec {
                    slow_subscribers: slow,
                    ..spec.clone()
                },
            );
            s.profile = Profile::Bounded;
            if slow > 0 {
                s.baseline = Some(format!("{id}-without"));
            }
            out.push(s);
        }
    }
    for &size in &cli.payload_sizes {
        let total = cli
            .payload_messages
            .min(cli.payload_mib * 1024 * 1024 / size.max(1) as u64)
            .max(10);
        for qos in [q0, q1] {
            out.push(Scenario::flow(
                format!(
                    "payload-{}-qos{}-v3.1.1",
                    size_name(size).replace(' ', ""),
                    qos_name(qos)
                ),
                Group::Payload,
                format!(
                    "fan-in 10→1, {}, QoS {}, 3.1.1",
                    size_name(size),
                    qos_name(qos)
                ),
                FlowSpec {
                    version: v3,
                    qos,
                    publishers: 10,
                    subscribers: 1,
                    payload: size,
                    messages_per_publisher: total / 10,
                    ..base.clone()
                },
            ));
        }
    }
}

/// One run's figures.
#[derive(Debug, Clone, Default)]
pub struct Record {
    /// Repetition, from 1.
    pub rep: usize,
    /// Scenario id.
    pub scenario: String,
    /// Broker label.
    pub broker: String,
    /// Why the run failed, if it did.
    pub error: Option<String>,
    /// Messages published.
    pub sent: u64,
    /// Deliveries expected.
    pub expected: u64,
    /// Deliveries received.
    pub delivered: u64,
    /// Seconds from the first publish to the last delivery (idle: to the last SUBACK).
    pub secs: f64,
    /// Deliveries per second.
    pub throughput: f64,
    /// Share of expected deliveries that did not arrive, percent.
    pub loss_pct: f64,
    /// Latency percentiles in microseconds (fixed-rate runs).
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Broker CPU seconds (user + system) during the run.
    pub broker_cpu_s: f64,
    /// The system (kernel) part of it.
    pub broker_sys_s: f64,
    /// Broker CPU microseconds per delivery (idle: per connection).
    pub cpu_us_per_msg: f64,
    /// Broker resident memory before the run, KiB.
    pub rss_before_kib: u64,
    /// After the run.
    pub rss_after_kib: u64,
    /// Peak since the broker started (VmHWM).
    pub rss_peak_kib: u64,
    /// CPU seconds of the load generator during the run.
    pub gen_cpu_s: f64,
    /// Idle connections opened.
    pub connections: usize,
    /// Connections (CONNECT and SUBSCRIBE) per second.
    pub connect_rate: f64,
    /// Broker RSS growth per idle connection, bytes.
    pub rss_per_conn_b: f64,
    /// Payload bytes of each message.
    pub payload_b: usize,
    /// Slow subscribers the broker had closed by the end of the run (NaN: none in it).
    pub slow_closed: f64,
}

fn main() -> Result<()> {
    let mut cli = Cli::parse();
    let _ = WORKER_THREADS.set(cli.worker_threads);
    if cli.quick {
        cli.reps = 1;
        cli.fan_in_messages = cli.fan_in_messages.min(20_000);
        cli.fan_out_messages = cli.fan_out_messages.min(1_000);
        cli.rate_secs = cli.rate_secs.min(2);
        cli.idle_connections = cli.idle_connections.min(1_000);
        cli.p2p_pairs = cli.p2p_pairs.min(100);
        cli.p2p_messages = cli.p2p_messages.min(20);
        cli.round_trips = cli.round_trips.min(2_000);
        cli.slow_messages = cli.slow_messages.min(5_000);
        cli.payload_messages = cli.payload_messages.min(10_000);
        cli.payload_mib = cli.payload_mib.min(32);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out_dir = cli.out.clone().unwrap_or_else(|| root.join("results"));
    std::fs::create_dir_all(&out_dir)?;

    // Each process needs a descriptor per idle connection; brokers inherit the limit.
    let limit = rlimit::increase_nofile_limit(u64::MAX).context("raise open-files limit")?;
    let idle_connections = (cli.idle_connections as u64).min(limit.saturating_sub(200)) as usize;
    println!("open-files limit: {limit}");
    if idle_connections < cli.idle_connections && cli.groups.iter().any(|g| g == "idle") {
        println!(
            "idle connections: {idle_connections} (asked {}; the open-files limit {limit} allows \
             no more: raise the hard limit, `ulimit -Hn`, to at least {})",
            cli.idle_connections,
            cli.idle_connections + 200
        );
    }

    let programs = find_programs(&cli, &root)?;
    let scenarios = scenarios(&cli, idle_connections);
    let rt = if cli.client_threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cli.client_threads)
            .enable_all()
            .build()?
    };
    let started = Instant::now();
    let load_start = report::load_average();
    let mut records = Vec::new();
    for rep in 1..=cli.reps {
        for s in &scenarios {
            for v in &s.variants {
                if !programs.available(v.kind()) || !wanted(&cli, v.kind()) {
                    continue;
                }
                let mut r = rt.block_on(run_one(s, v, &programs));
                r.rep = rep;
                r.scenario = s.id.clone();
                r.broker = v.label();
                println!("[{rep}/{}] {} · {}", cli.reps, s.title, report::line(&r));
                records.push(r);
            }
        }
    }
    println!("measured in {:.0} s", started.elapsed().as_secs_f64());
    let meta = report::Meta {
        programs: programs.clone(),
        reps: cli.reps,
        args: std::env::args().skip(1).collect::<Vec<_>>().join(" "),
        open_files: limit,
        idle_asked: cli.idle_connections,
        load_start,
    };
    report::write_all(&out_dir, &scenarios, &records, &meta)?;
    println!(
        "wrote {}: runs.csv, summary.csv, report.md, *.svg",
        out_dir.display()
    );
    Ok(())
}

fn wanted(cli: &Cli, kind: Kind) -> bool {
    let name = match kind {
        Kind::Ours => "ours",
        Kind::Mosquitto => "mosquitto",
        Kind::Rumqttd => "rumqttd",
        Kind::Harness => return true,
    };
    cli.brokers.iter().any(|b| b == name)
}

fn find_programs(cli: &Cli, root: &std::path::Path) -> Result<Programs> {
    let mut p = Programs::default();
    if wanted(cli, Kind::Ours) {
        p.ours = Some(match &cli.broker_bin {
            Some(b) => b.clone(),
            None => build_ours(root.parent().context("workspace root")?, cli.no_build)?,
        });
    }
    let home_cargo = std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".cargo/bin"))
        .into_iter()
        .collect::<Vec<_>>();
    if wanted(cli, Kind::Mosquitto) {
        match brokers::find_program("mosquitto", &[PathBuf::from("/usr/sbin")]) {
            Some(m) => {
                let v = brokers::mosquitto_version(&m);
                println!("mosquitto: {} ({v})", m.display());
                p.mosquitto = Some((m, v));
            }
            None => println!(
                "mosquitto: not installed, skipped (Debian/Ubuntu: apt-get install mosquitto)"
            ),
        }
    }
    if wanted(cli, Kind::Rumqttd) {
        match brokers::find_program("rumqttd", &home_cargo) {
            Some(r) => {
                let v = brokers::rumqttd_version(&r);
                println!("rumqttd: {} ({v})", r.display());
                p.rumqttd = Some((r, v));
            }
            None => println!("rumqttd: not installed, skipped (cargo install rumqttd)"),
        }
    }
    Ok(p)
}

/// Builds `mqtt-broker` in release mode and returns its path in the target directory.
fn build_ours(workspace: &std::path::Path, no_build: bool) -> Result<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    let bin = target.join("release").join("mqtt-broker");
    if !no_build {
        println!("building mqtt-broker: cargo build --release -p adapter-tokio");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args(["build", "--release", "-p", "adapter-tokio"])
            .current_dir(workspace)
            .status()
            .context("run cargo")?;
        anyhow::ensure!(status.success(), "cargo build failed");
    }
    anyhow::ensure!(
        bin.is_file(),
        "{} not found (build it, or pass --broker-bin)",
        bin.display()
    );
    println!("mqtt-broker: {}", bin.display());
    Ok(bin)
}

/// `--worker-threads`, set once from the command line.
static WORKER_THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();

fn worker_threads() -> usize {
    WORKER_THREADS.get().copied().unwrap_or(0)
}

async fn run_one(s: &Scenario, v: &Variant, programs: &Programs) -> Record {
    match run_inner(s, v, programs).await {
        Ok(r) => r,
        Err(e) => Record {
            error: Some(format!("{e:#}")),
            ..Default::default()
        },
    }
}

async fn run_inner(s: &Scenario, v: &Variant, programs: &Programs) -> Result<Record> {
    if let (Variant::TcpEcho, Some(spec)) = (v, &s.round_trip) {
        return run_echo(spec).await;
    }
    let opts = StartOptions {
        profile: s.profile,
        listeners: s.listeners,
        connections: s.idle_connections,
        // One message at a time: Nagle's algorithm would hold a PUBLISH written right
        // after a PUBACK until the client's delayed ACK (about 40 ms).
        nodelay: s.group == Group::RoundTrip,
        worker_threads: worker_threads(),
    };
    let mut broker = Running::start(v, programs, opts)?;
    let addr = broker.addr(s.version);
    let pid = broker.pid;
    let mut r = Record {
        slow_closed: f64::NAN,
        ..Default::default()
    };
    if let Some(spec) = &s.flow {
        let flow = Flow::setup(addr, spec).await.context("set-up")?;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (cpu0, rss0, gen0) = (proc::cpu(pid)?, proc::rss(pid)?, proc::own_cpu()?);
        let res = flow.run().await?;
        let (cpu1, rss1, gen1) = (proc::cpu(pid)?, proc::rss(pid)?, proc::own_cpu()?);
        r.sent = res.sent;
        r.expected = res.expected;
        r.delivered = res.delivered;
        r.secs = res.elapsed.as_secs_f64();
        r.throughput = if r.secs > 0.0 {
            res.delivered as f64 / r.secs
        } else {
            0.0
        };
        r.loss_pct = 100.0 * (res.expected.saturating_sub(res.delivered)) as f64
            / res.expected.max(1) as f64;
        set_latencies(&mut r, spec.latency.then_some(&res.latencies_ns[..]));
        r.broker_cpu_s = cpu1.since(cpu0).total();
        r.broker_sys_s = cpu1.since(cpu0).system;
        r.cpu_us_per_msg = r.broker_cpu_s * 1e6 / res.delivered.max(1) as f64;
        r.rss_before_kib = rss0.now_kib;
        r.rss_after_kib = rss1.now_kib;
        r.rss_peak_kib = rss1.peak_kib;
        r.gen_cpu_s = gen1.since(gen0).total();
        r.rss_per_conn_b = f64::NAN;
        r.connect_rate = f64::NAN;
        r.payload_b = spec.payload;
        if spec.slow_subscribers > 0 {
            r.slow_closed = res.slow_closed as f64;
        }
        if res.timed_out {
            r.error = Some(format!(
                "timed out after {} s ({} of {} delivered)",
                spec.deadline.as_secs(),
                res.delivered,
                res.expected
            ));
        }
    } else if let Some(spec) = &s.round_trip {
        let (cpu0, rss0, gen0) = (proc::cpu(pid)?, proc::rss(pid)?, proc::own_cpu()?);
        let res = rtt::mqtt(addr, spec).await?;
        let (cpu1, rss1, gen1) = (proc::cpu(pid)?, proc::rss(pid)?, proc::own_cpu()?);
        round_trip_record(&mut r, spec, &res);
        r.broker_cpu_s = cpu1.since(cpu0).total();
        r.broker_sys_s = cpu1.since(cpu0).system;
        r.cpu_us_per_msg = r.broker_cpu_s * 1e6 / res.done.max(1) as f64;
        r.rss_before_kib = rss0.now_kib;
        r.rss_after_kib = rss1.now_kib;
        r.rss_peak_kib = rss1.peak_kib;
        r.gen_cpu_s = gen1.since(gen0).total();
    } else {
        let n = s.idle_connections;
        let addrs = if s.version == ProtocolVersion::V5 {
            vec![addr]
        } else {
            broker.addrs_v4()
        };
        let (cpu0, rss0, gen0) = (proc::cpu(pid)?, proc::rss(pid)?, proc::own_cpu()?);
        let idle = idle::open(&addrs, s.version, n, s.idle_concurrency).await?;
        // Let the broker finish its own work on the last connections.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (cpu1, rss1, gen1) = (proc::cpu(pid)?, proc::rss(pid)?, proc::own_cpu()?);
        r.connections = idle.conns.len();
        r.secs = idle.elapsed.as_secs_f64();
        r.connect_rate = n as f64 / r.secs;
        r.broker_cpu_s = cpu1.since(cpu0).total();
        r.broker_sys_s = cpu1.since(cpu0).system;
        r.cpu_us_per_msg = r.broker_cpu_s * 1e6 / n.max(1) as f64;
        r.rss_before_kib = rss0.now_kib;
        r.rss_after_kib = rss1.now_kib;
        r.rss_peak_kib = rss1.peak_kib;
        r.rss_per_conn_b = (rss1.now_kib as f64 - rss0.now_kib as f64) * 1024.0 / n.max(1) as f64;
        r.gen_cpu_s = gen1.since(gen0).total();
        (r.p50_us, r.p99_us, r.p999_us, r.throughput, r.loss_pct) =
            (f64::NAN, f64::NAN, f64::NAN, f64::NAN, f64::NAN);
        drop(idle);
    }
    if !broker.alive() {
        anyhow::bail!("the broker exited: {}", broker.log_tail());
    }
    Ok(r)
}

/// The latency percentiles of `sorted` (nanoseconds), or none.
fn set_latencies(r: &mut Record, sorted: Option<&[u64]>) {
    let pct = |q| {
        sorted
            .and_then(|l| stats::percentile(l, q))
            .map_or(f64::NAN, |ns| ns as f64 / 1000.0)
    };
    (r.p50_us, r.p99_us, r.p999_us) = (pct(0.5), pct(0.99), pct(0.999));
}

/// The figures of a round-trip loop: throughput is round trips per second.
fn round_trip_record(r: &mut Record, spec: &RoundTripSpec, res: &rtt::RoundTrips) {
    r.sent = res.done;
    r.expected = spec.count;
    r.delivered = res.done;
    r.secs = res.elapsed.as_secs_f64();
    r.throughput = res.done as f64 / r.secs.max(1e-9);
    r.loss_pct = f64::NAN;
    set_latencies(r, Some(&res.latencies_ns));
    r.payload_b = spec.payload;
    (r.rss_per_conn_b, r.connect_rate, r.slow_closed) = (f64::NAN, f64::NAN, f64::NAN);
    if res.timed_out {
        r.error = Some(format!(
            "timed out after {} s ({} of {} round trips)",
            spec.deadline.as_secs(),
            res.done,
            spec.count
        ));
    }
}

/// The round-trip loop against a TCP echo thread, with messages as long as the PUBLISH.
async fn run_echo(spec: &RoundTripSpec) -> Result<Record> {
    let len = rtt::publish_frame(spec)?.len();
    let addr = rtt::echo_server()?;
    let gen0 = proc::own_cpu()?;
    let res = rtt::echo(addr, spec, len).await?;
    let gen1 = proc::own_cpu()?;
    let mut r = Record::default();
    round_trip_record(&mut r, spec, &res);
    // The echo thread is in this process: its CPU time is in the load generator's.
    r.gen_cpu_s = gen1.since(gen0).total();
    (r.broker_cpu_s, r.broker_sys_s, r.cpu_us_per_msg) = (f64::NAN, f64::NAN, f64::NAN);
    Ok(r)
}
