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

/// Which program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// This workspace's `mqtt-broker` (adapter-tokio).
    Ours,
    /// mosquitto.
    Mosquitto,
    /// rumqttd.
    Rumqttd,
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
}

impl Variant {
    /// The program.
    pub fn kind(&self) -> Kind {
        match self {
            Variant::OursMemory | Variant::OursDurable(_) => Kind::Ours,
            Variant::MosquittoMemory | Variant::MosquittoPersistence => Kind::Mosquitto,
            Variant::Rumqttd => Kind::Rumqttd,
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
        }
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
    dir: TempDir,
}

impl Running {
    /// Starts `variant` on fresh loopback ports with a fresh directory, and waits until
    /// it accepts connections.
    pub fn start(variant: &Variant, programs: &Programs) -> Result<Running> {
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
        let (p4, p5) = (port_v4.to_string(), port_v5.to_string());
        let mut cmd = Command::new(program);
        match variant {
            Variant::OursMemory | Variant::OursDurable(_) => {
                let durability = match variant {
                    Variant::OursDurable(x) => x,
                    _ => "none",
                };
                let conf = dir.path().join("mqtt-broker.toml");
                std::fs::write(
                    &conf,
                    fill(
                        OURS_CONFIG,
                        &[("port", &p4), ("dir", d), ("durability", durability)],
                    ),
                )?;
                cmd.arg("-c").arg(&conf);
                if *variant == Variant::OursMemory {
                    cmd.arg("--no-persistence");
                }
            }
            Variant::MosquittoMemory | Variant::MosquittoPersistence => {
                let template = if *variant == Variant::MosquittoMemory {
                    MOSQUITTO_CONFIG
                } else {
                    MOSQUITTO_PERSISTENCE_CONFIG
                };
                let conf = dir.path().join("mosquitto.conf");
                std::fs::write(&conf, fill(template, &[("port", &p4), ("dir", d)]))?;
                cmd.arg("-c").arg(&conf);
            }
            Variant::Rumqttd => {
                let conf = dir.path().join("rumqttd.toml");
                std::fs::write(
                    &conf,
                    fill(
                        RUMQTTD_CONFIG,
                        &[("port", &p4), ("port_v5", &p5), ("dir", d)],
                    ),
                )?;
                cmd.arg("--config").arg(&conf).arg("--quiet");
            }
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

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        for port in [self.port_v4, self.port_v5] {
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
    }
}
