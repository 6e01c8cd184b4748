//! The brokers: where their programs are, their configurations, starting one fresh on
//! free loopback ports and stopping it.

use anyhow::{bail, Context, Result};
use mqtt_proto::ProtocolVersion;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The broker under test's configuration (`bench/configs/mqtt-broker.toml`).
const OURS_CONFIG: &str = include_str!("../configs/mqtt-broker.toml");
/// mosquitto in memory (`bench/configs/mosquitto.conf`).
const MOSQUITTO_CONFIG: &str = include_str!("../configs/mosquitto.conf");
/// mosquitto with persistence (`bench/configs/mosquitto-persistence.conf`).
const MOSQUITTO_PERSISTENCE_CONFIG: &str = include_str!("../configs/mosquitto-persistence.conf");
/// rumqttd (`bench/configs/rumqttd.toml`).
const RUMQTTD_CONFIG: &str = include_str!("../configs/rumqttd.toml");
/// The broker under test with a memory budget per client
/// (`bench/configs/mqtt-broker-bounded.toml`).
const OURS_BOUNDED_CONFIG: &str = include_str!("../configs/mqtt-broker-bounded.toml");
/// mosquitto in memory with bounded queues (`bench/configs/mosquitto-bounded.conf`).
const MOSQUITTO_BOUNDED_CONFIG: &str = include_str!("../configs/mosquitto-bounded.conf");

/// Which configuration a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profile {
    /// Queues without a practical limit (`mqtt-broker.toml`, `mosquitto.conf`).
    #[default]
    Standard,
    /// What is held for one client is bounded (`mqtt-broker-bounded.toml`,
    /// `mosquitto-bounded.conf`; rumqttd keeps `rumqttd.toml`, see there).
    Bounded,
}

/// How to start a broker.
#[derive(Debug, Clone, Copy)]
pub struct StartOptions {
    /// The configuration.
    pub profile: Profile,
    /// Listeners for 3.1.1 clients (more than one when one port's ephemeral ports
    /// would not be enough).
    pub listeners: usize,
    /// Connections the broker must accept (rumqttd's `max_connections`).
    pub connections: usize,
    /// Turn Nagle's algorithm off where it is on by default (mosquitto's
    /// `set_tcp_nodelay true`; mqtt-broker and rumqttd always set TCP_NODELAY).
    pub nodelay: bool,
    /// mqtt-broker's `[runtime] worker_threads`; 0 leaves its default (CONFIG.md, "Runtime").
    pub worker_threads: usize,
}

impl Default for StartOptions {
    fn default() -> Self {
        StartOptions {
            profile: Profile::Standard,
            listeners: 1,
            connections: 0,
            nodelay: false,
            worker_threads: 0,
        }
    }
}

/// Which program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// This workspace's `mqtt-broker` (adapter-tokio).
    Ours,
    /// mosquitto.
    Mosquitto,
    /// rumqttd.
    Rumqttd,
    /// The harness itself (the TCP echo baseline): always there.
    Harness,
}

/// A program and how it is configured for a run.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Variant {
    /// Ours with `--no-persistence`.
    OursMemory,
    /// Ours with persistence and this `durability` (fsync, interval, none).
    OursDurable(&'static str),
    /// mosquitto with `persistence false`.
    MosquittoMemory,
    /// mosquitto with `persistence true`.
    MosquittoPersistence,
    /// rumqttd (in memory; it has no persistence).
    Rumqttd,
    /// No broker: a TCP echo server in the harness, the baseline of the round trips.
    TcpEcho,
}

impl Variant {
    /// The program.
    pub fn kind(&self) -> Kind {
        match self {
            Variant::OursMemory | Variant::OursDurable(_) => Kind::Ours,
            Variant::MosquittoMemory | Variant::MosquittoPersistence => Kind::Mosquitto,
            Variant::Rumqttd => Kind::Rumqttd,
            Variant::TcpEcho => Kind::Harness,
        }
    }

    /// The name in tables and files.
    pub fn label(&self) -> String {
        match self {
            Variant::OursMemory => "mqtt-broker".into(),
            Variant::OursDurable(d) => format!("mqtt-broker {d}"),
            Variant::MosquittoMemory => "mosquitto".into(),
            Variant::MosquittoPersistence => "mosquitto persistence".into(),
            Variant::Rumqttd => "rumqttd".into(),
            Variant::TcpEcho => "TCP echo".into(),
        }
    }
}

/// Where each program is and which version it is.
#[derive(Debug, Clone, Default)]
pub struct Programs {
    /// Ours.
    pub ours: Option<PathBuf>,
    /// mosquitto and its version line.
    pub mosquitto: Option<(PathBuf, String)>,
    /// rumqttd and its version.
    pub rumqttd: Option<(PathBuf, String)>,
}

impl Programs {
    /// The program of `kind`, if installed.
    pub fn path(&self, kind: Kind) -> Option<&Path> {
        match kind {
            Kind::Ours => self.ours.as_deref(),
            Kind::Mosquitto => self.mosquitto.as_ref().map(|m| m.0.as_path()),
            Kind::Rumqttd => self.rumqttd.as_ref().map(|m| m.0.as_path()),
            Kind::Harness => None,
        }
    }

    /// Whether the program of `kind` can run (the harness always can).
    pub fn available(&self, kind: Kind) -> bool {
        kind == Kind::Harness || self.path(kind).is_some()
    }
}

/// Finds a program on the PATH or in one of `extra` directories.
pub fn find_program(name: &str, extra: &[PathBuf]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(extra.iter().cloned())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// mosquitto's version line (`mosquitto version 2.0.11`).
pub fn mosquitto_version(path: &Path) -> String {
    // `mosquitto -h` prints its version first and exits with status 3.
    Command::new(path)
        .arg("-h")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_else(|| "mosquitto (version unknown)".into())
}

/// rumqttd's version: what `cargo install` recorded in `~/.cargo/.crates.toml`, else
/// `rumqttd --version`.
pub fn rumqttd_version(path: &Path) -> String {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    if let Some(v) = home
        .and_then(|h| std::fs::read_to_string(h.join(".crates.toml")).ok())
        .and_then(|s| {
            s.lines()
                .find(|l| l.trim_start().starts_with("\"rumqttd "))
                .and_then(|l| l.trim_start().split(' ').nth(1).map(str::to_string))
        })
    {
        return format!("rumqttd {v}");
    }
    Command::new(path)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "rumqttd (version unknown)".into())
}

/// A free loopback port (bound, read, released).
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A template with `{name}` placeholders filled in.
pub fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut s = template.to_string();
    for (k, v) in values {
        s = s.replace(&format!("{{{k}}}"), v);
    }
    s
}

/// One more 3.1.1 listener section for rumqttd's configuration.
fn rumqttd_v4_listener(n: usize, port: u16) -> String {
    format!(
        "\n[v4.{n}]\nname = \"v4-{n}\"\nlisten = \"127.0.0.1:{port}\"\nnext_connection_delay_ms = 0\n    \
         [v4.{n}.connections]\n    connection_timeout_ms = 60000\n    max_payload_size = 1048576\n    \
         max_inflight_count = 1000\n    dynamic_filters = true\n"
    )
}

/// A fresh, empty temporary directory, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates `mqtt-bench-PID-N` in the system temporary directory.
    pub fn new() -> Result<TempDir> {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "mqtt-bench-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).with_context(|| p.display().to_string())?;
        Ok(TempDir(p))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A broker process started for one run; killed on drop.
pub struct Running {
    child: Child,
    /// Its process id.
    pub pid: u32,
    port_v4: u16,
    port_v5: u16,
    /// Further 3.1.1 listeners.
    extra_ports: Vec<u16>,
    dir: TempDir,
}

impl Running {
    /// Starts `variant` on fresh loopback ports with a fresh directory, and waits until
    /// it accepts connections.
    pub fn start(variant: &Variant, programs: &Programs, opts: StartOptions) -> Result<Running> {
        let kind = variant.kind();
        let program = programs
            .path(kind)
            .with_context(|| format!("{} is not installed", variant.label()))?;
        let dir = TempDir::new()?;
        let d = dir.path().to_str().context("temporary path is not UTF-8")?;
        let port_v4 = free_port()?;
        let port_v5 = if kind == Kind::Rumqttd {
            free_port()?
        } else {
            port_v4
        };
        let extra_ports = (1..opts.listeners.max(1))
            .map(|_| free_port())
            .collect::<Result<Vec<u16>>>()?;
        let (p4, p5) = (port_v4.to_string(), port_v5.to_string());
        let bounded = opts.profile == Profile::Bounded;
        let mut cmd = Command::new(program);
        match variant {
            Variant::OursMemory | Variant::OursDurable(_) => {
                let durability = match variant {
                    Variant::OursDurable(x) => x,
                    _ => "none",
                };
                let conf = dir.path().join("mqtt-broker.toml");
                let mut text = fill(
                    if bounded {
                        OURS_BOUNDED_CONFIG
                    } else {
                        OURS_CONFIG
                    },
                    &[("port", &p4), ("dir", d), ("durability", durability)],
                );
                for p in &extra_ports {
                    text.push_str(&format!("\n[[listener]]\nbind = \"127.0.0.1:{p}\"\n"));
                }
                if opts.worker_threads > 0 {
                    text.push_str(&format!(
                        "\n[runtime]\nworker_threads = {}\n",
                        opts.worker_threads
                    ));
                }
                std::fs::write(&conf, text)?;
                cmd.arg("-c").arg(&conf);
                if *variant == Variant::OursMemory {
                    cmd.arg("--no-persistence");
                }
            }
            Variant::MosquittoMemory | Variant::MosquittoPersistence => {
                let template = match variant {
                    Variant::MosquittoMemory if bounded => MOSQUITTO_BOUNDED_CONFIG,
                    Variant::MosquittoMemory => MOSQUITTO_CONFIG,
                    _ => MOSQUITTO_PERSISTENCE_CONFIG,
                };
                let conf = dir.path().join("mosquitto.conf");
                let mut text = fill(template, &[("port", &p4), ("dir", d)]);
                if opts.nodelay {
                    text.push_str("set_tcp_nodelay true\n");
                }
                for p in &extra_ports {
                    text.push_str(&format!("listener {p} 127.0.0.1\n"));
                }
                std::fs::write(&conf, text)?;
                cmd.arg("-c").arg(&conf);
            }
            Variant::Rumqttd => {
                let conf = dir.path().join("rumqttd.toml");
                let max = opts
                    .connections
                    .saturating_add(1000)
                    .max(20_000)
                    .to_string();
                let mut text = fill(
                    RUMQTTD_CONFIG,
                    &[
                        ("port", &p4),
                        ("port_v5", &p5),
                        ("dir", d),
                        ("max_connections", &max),
                    ],
                );
                for (i, p) in extra_ports.iter().enumerate() {
                    text.push_str(&rumqttd_v4_listener(i + 2, *p));
                }
                std::fs::write(&conf, text)?;
                cmd.arg("--config").arg(&conf).arg("--quiet");
            }
            Variant::TcpEcho => bail!("the TCP echo baseline is not a broker"),
        }
        let log = std::fs::File::create(dir.path().join("broker.log"))?;
        cmd.current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = cmd
            .spawn()
            .with_context(|| format!("start {}", program.display()))?;
        let mut r = Running {
            pid: child.id(),
            child,
            port_v4,
            port_v5,
            extra_ports,
            dir,
        };
        r.wait_ready()
            .with_context(|| format!("{} did not start: {}", variant.label(), r.log_tail()))?;
        Ok(r)
    }

    /// The address for clients of `version`.
    pub fn addr(&self, version: ProtocolVersion) -> SocketAddr {
        let port = match version {
            ProtocolVersion::V5 => self.port_v5,
            _ => self.port_v4,
        };
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// Every 3.1.1 listener's address (the first is [`addr`](Self::addr)'s).
    pub fn addrs_v4(&self) -> Vec<SocketAddr> {
        std::iter::once(self.port_v4)
            .chain(self.extra_ports.iter().copied())
            .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
            .collect()
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let ports: Vec<u16> = [self.port_v4, self.port_v5]
            .into_iter()
            .chain(self.extra_ports.iter().copied())
            .collect();
        for port in ports {
            loop {
                if let Some(status) = self.child.try_wait()? {
                    bail!("exited with {status}");
                }
                let addr = SocketAddr::from(([127, 0, 0, 1], port));
                if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("port {port} not open after 10 s");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // The probe connections above are gone before the run starts.
        std::thread::sleep(Duration::from_millis(200));
        Ok(())
    }

    /// The end of the broker's log, for error messages.
    pub fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(self.dir.path().join("broker.log")).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        let tail = lines[lines.len().saturating_sub(5)..].join(" | ");
        if tail.is_empty() {
            "(empty log)".into()
        } else {
            tail
        }
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Running {
    /// SIGTERM first, so that a broker under a profiler can write its profile, then
    /// SIGKILL if it is still there after five seconds.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_placeholders() {
        assert_eq!(
            fill(
                "listener {port} 127.0.0.1\ndir {dir}/",
                &[("port", "1884"), ("dir", "/t")]
            ),
            "listener 1884 127.0.0.1\ndir /t/"
        );
    }

    #[test]
    fn configs_have_their_placeholders() {
        assert!(OURS_CONFIG.contains("{port}") && OURS_CONFIG.contains("{durability}"));
        assert!(MOSQUITTO_CONFIG.contains("listener {port} 127.0.0.1"));
        assert!(MOSQUITTO_PERSISTENCE_CONFIG.contains("persistence_location {dir}/"));
        assert!(RUMQTTD_CONFIG.contains("{port}") && RUMQTTD_CONFIG.contains("{port_v5}"));
        assert!(RUMQTTD_CONFIG.contains("{max_connections}"));
        assert!(OURS_BOUNDED_CONFIG.contains("{port}") && OURS_BOUNDED_CONFIG.contains("{dir}"));
        assert!(MOSQUITTO_BOUNDED_CONFIG.contains("listener {port} 127.0.0.1"));
        assert!(rumqttd_v4_listener(2, 1999).contains("[v4.2.connections]"));
    }
}
