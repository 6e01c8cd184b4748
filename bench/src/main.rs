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
mod stats;

use anyhow::{Context, Result};
use brokers::{Kind, Programs, Running, Variant};
use clap::Parser;
use load::{Flow, FlowSpec};
use mqtt_proto::{ProtocolVersion, QoS};
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
    /// Scenario groups to run, of: fan-in, fan-out, fixed-rate, idle, persistence.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "fan-in,fan-out,fixed-rate,idle,persistence"
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
    /// Idle connections.
    #[arg(long, default_value_t = 10_000)]
    idle_connections: usize,
    /// Unacknowledged QoS 1 messages per publisher.
    #[arg(long, default_value_t = 100)]
    window: usize,
    /// Upper bound of one run (not the fixed-rate ones), seconds.
    #[arg(long, default_value_t = 30)]
    run_timeout: u64,
    /// Threads of the load generator (1: a current-thread tokio runtime).
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
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
}

impl Group {
    fn name(self) -> &'static str {
        match self {
            Group::FanIn => "fan-in",
            Group::FanOut => "fan-out",
            Group::FixedRate => "fixed-rate",
            Group::Idle => "idle",
            Group::Persistence => "persistence",
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
    /// Connections of the idle scenario.
    pub idle_connections: usize,
    /// The brokers.
    pub variants: Vec<Variant>,
}

fn version_name(v: ProtocolVersion) -> &'static str {
    match v {
        ProtocolVersion::V5 => "5.0",
        _ => "3.1.1",
    }
}

fn scenarios(cli: &Cli, idle_connections: usize) -> Vec<Scenario> {
    let main = vec![
        Variant::OursMemory,
        Variant::MosquittoMemory,
        Variant::Rumqttd,
    ];
    let timeout = Duration::from_secs(cli.run_timeout);
    let mut out = Vec::new();
    let versions = [ProtocolVersion::V3_1_1, ProtocolVersion::V5];
    let qos_name = |q: QoS| if q == QoS::AtMostOnce { "0" } else { "1" };
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
                    }),
                    idle_connections: 0,
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
            }),
            idle_connections: 0,
            variants: main.clone(),
        });
    }
    out.push(Scenario {
        id: "idle-v3.1.1".into(),
        group: Group::Idle,
        title: format!("{idle_connections} idle subscribed connections, 3.1.1"),
        version: ProtocolVersion::V3_1_1,
        flow: None,
        idle_connections,
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
        }),
        idle_connections: 0,
        variants: vec![
            Variant::OursDurable("fsync"),
            Variant::OursDurable("interval"),
            Variant::OursDurable("none"),
            Variant::OursMemory,
            Variant::MosquittoPersistence,
            Variant::MosquittoMemory,
        ],
    });
    out.retain(|s| cli.groups.iter().any(|g| g == s.group.name()));
    out
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
}

fn main() -> Result<()> {
    let mut cli = Cli::parse();
    if cli.quick {
        cli.reps = 1;
        cli.fan_in_messages = cli.fan_in_messages.min(20_000);
        cli.fan_out_messages = cli.fan_out_messages.min(1_000);
        cli.rate_secs = cli.rate_secs.min(2);
        cli.idle_connections = cli.idle_connections.min(1_000);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out_dir = cli.out.clone().unwrap_or_else(|| root.join("results"));
    std::fs::create_dir_all(&out_dir)?;

    // Each process needs a descriptor per idle connection; brokers inherit the limit.
    let limit = rlimit::increase_nofile_limit(u64::MAX).context("raise open-files limit")?;
    let idle_connections = (cli.idle_connections as u64).min(limit.saturating_sub(200)) as usize;
    println!("open-files limit: {limit}");
    if idle_connections < cli.idle_connections {
        println!(
            "idle connections: {idle_connections} (asked {}; the open-files limit allows no more)",
            cli.idle_connections
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
                if programs.path(v.kind()).is_none() || !wanted(&cli, v.kind()) {
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
    let mut broker = Running::start(v, programs)?;
    let addr = broker.addr(s.version);
    let pid = broker.pid;
    let mut r = Record::default();
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
        let pct =
            |q| stats::percentile(&res.latencies_ns, q).map_or(f64::NAN, |ns| ns as f64 / 1000.0);
        if spec.latency {
            r.p50_us = pct(0.5);
            r.p99_us = pct(0.99);
            r.p999_us = pct(0.999);
        } else {
            (r.p50_us, r.p99_us, r.p999_us) = (f64::NAN, f64::NAN, f64::NAN);
        }
        r.broker_cpu_s = cpu1.since(cpu0).total();
        r.broker_sys_s = cpu1.since(cpu0).system;
        r.cpu_us_per_msg = r.broker_cpu_s * 1e6 / res.delivered.max(1) as f64;
        r.rss_before_kib = rss0.now_kib;
        r.rss_after_kib = rss1.now_kib;
        r.rss_peak_kib = rss1.peak_kib;
        r.gen_cpu_s = gen1.since(gen0).total();
        r.rss_per_conn_b = f64::NAN;
        r.connect_rate = f64::NAN;
        if res.timed_out {
            r.error = Some(format!(
                "timed out after {} s ({} of {} delivered)",
                spec.deadline.as_secs(),
                res.delivered,
                res.expected
            ));
        }
    } else {
        let n = s.idle_connections;
        let (cpu0, rss0, gen0) = (proc::cpu(pid)?, proc::rss(pid)?, proc::own_cpu()?);
        let idle = idle::open(addr, s.version, n).await?;
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
