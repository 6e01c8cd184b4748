//! The broker's TOML configuration: every option, its default, and errors that name the
//! file, the key and what is wrong. The reference with every option is `CONFIG.md`.

use mqtt_broker::{BrokerConfig, DropPolicy};
use mqtt_proto::{QoS, ReasonCode};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Listeners; default one TCP listener on 127.0.0.1:1883.
    #[serde(default = "default_listeners", rename = "listener")]
    pub listeners: Vec<Listener>,
    /// Authentication and authorization.
    #[serde(default)]
    pub auth: Auth,
    /// Limits.
    #[serde(default)]
    pub limits: Limits,
    /// Sessions.
    #[serde(default)]
    pub sessions: Sessions,
    /// `$SYS` topics.
    #[serde(default)]
    pub sys: Sys,
    /// Logging.
    #[serde(default)]
    pub log: Log,
    /// Prometheus metrics.
    #[serde(default)]
    pub metrics: Metrics,
    /// Durable state.
    #[serde(default)]
    pub persistence: Persistence,
    /// The async runtime.
    #[serde(default)]
    pub runtime: Runtime,
}

/// `[runtime]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Runtime {
    /// Threads that run the connections' tasks in `mqtt-broker` (tokio) and
    /// `mqtt-broker-smol`. The broker core runs as one task among them. 0 (the default)
    /// chooses: in `mqtt-broker`, one thread on a machine of one or two cores and one per
    /// core on larger ones ([`Runtime::tokio_threads`]); in `mqtt-broker-smol`, one per
    /// core. With one thread, `mqtt-broker` runs everything on tokio's current-thread
    /// scheduler. `mqtt-broker-std` (a thread per connection) and `mqtt-broker-async-std`
    /// (async-std's own pool) ignore it.
    pub worker_threads: usize,
    /// `mqtt-broker` (tokio) on Unix: plain TCP connections start parked (one shared
    /// poller watches their sockets and serves their short exchanges; a connection gets a
    /// task of its own when it gets busy), and a connection with a task that has nothing
    /// to read or write for this many milliseconds parks again: its task and its socket's
    /// registration with the runtime are freed. Each time a connection gets a task, or is
    /// found busy, the wait before its next parking doubles, up to 128 times this, so a
    /// client that sends every few seconds keeps its task. 0 turns parking off. Default
    /// 25; at most 60000.
    pub park_idle_ms: u64,
}

impl Default for Runtime {
    fn default() -> Self {
        Self {
            worker_threads: 0,
            park_idle_ms: 25,
        }
    }
}

/// Cores of this machine, 1 when unknown.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl Runtime {
    /// The number of worker threads of `mqtt-broker-smol`: `worker_threads`, or one per
    /// core for 0.
    pub fn threads(&self) -> usize {
        match self.worker_threads {
            0 => cores(),
            n => n,
        }
    }

    /// The number of threads of `mqtt-broker` (tokio): `worker_threads`, or for 0 one per
    /// core on a machine of three cores or more and one on a smaller machine. One thread
    /// means tokio's current-thread scheduler: a connection handing its input to the core
    /// and the core handing output back then wake no other thread. On two cores that did
    /// better than two threads with many clients and took less CPU per message, and did
    /// worse for a single client's round trips and for large payloads (CONFIG.md,
    /// "Runtime").
    pub fn tokio_threads(&self) -> usize {
        Self::tokio_threads_for(self.worker_threads, cores())
    }

    /// [`Runtime::tokio_threads`] for `worker_threads` on a machine of `cores` cores.
    pub fn tokio_threads_for(worker_threads: usize, cores: usize) -> usize {
        match worker_threads {
            0 if cores <= 2 => 1,
            0 => cores,
            n => n,
        }
    }
}

/// `[persistence]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Persistence {
    /// Keep sessions, subscriptions, queued messages and retained messages across
    /// restarts. Default true.
    pub enabled: bool,
    /// The data directory. Default `mqtt-data` (relative to the working directory).
    pub dir: PathBuf,
    /// `fsync` (default): a QoS 1/2 message is acknowledged, and delivered, only after
    /// it is on disk; `interval`: written at once, on disk every `interval_ms` (a machine
    /// crash can lose that window); `none`: written at once, left to the operating
    /// system.
    pub durability: String,
    /// fsync interval of `durability = "interval"`, in milliseconds. Default 1000.
    pub interval_ms: u64,
    /// A damaged store at start: `refuse` (default) to start, or `move-aside`: rename the
    /// directory to `<dir>.damaged-<time>`, log it, and start empty.
    pub on_damage: String,
}

impl Default for Persistence {
    fn default() -> Self {
        Self {
            enabled: true,
            dir: "mqtt-data".into(),
            durability: "fsync".into(),
            interval_ms: 1000,
            on_damage: "refuse".into(),
        }
    }
}

impl Persistence {
    /// The durability mode.
    pub fn durability(&self) -> mqtt_store::Durability {
        match self.durability.as_str() {
            "interval" => mqtt_store::Durability::Interval(Duration::from_millis(self.interval_ms)),
            "none" => mqtt_store::Durability::None,
            _ => mqtt_store::Durability::Fsync,
        }
    }
}

/// `[metrics]`: the HTTP listener of the Prometheus metrics and the web console.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    /// Address of the HTTP endpoint serving `GET /metrics`; off when not set.
    pub bind: Option<SocketAddr>,
    /// Serve the web console (`/`) and its JSON API (`/api/...`) there too. Default
    /// false.
    #[serde(default)]
    pub console: bool,
    /// Ask for HTTP basic auth (the users of `auth.password_file`) on every path of
    /// that listener, `/metrics` included. Default false.
    #[serde(default)]
    pub basic_auth: bool,
    /// Allow the console on an address other than loopback without `basic_auth`.
    /// Default false: such a configuration is refused.
    #[serde(default)]
    pub allow_public_console: bool,
}

impl Metrics {
    /// The checks of `[metrics]`: the console needs the listener, basic auth needs a
    /// password file, and a console reachable from elsewhere needs credentials (or says
    /// explicitly that it does not).
    pub fn check(&self, password_file: Option<&Path>) -> Result<(), String> {
        if self.basic_auth && password_file.is_none() {
            return Err(
                "metrics.basic_auth: needs auth.password_file (the users who may log in)".into(),
            );
        }
        let Some(bind) = self.bind else {
            if self.console {
                return Err("metrics.console: needs metrics.bind (the console's address)".into());
            }
            return Ok(());
        };
        if self.console
            && !bind.ip().is_loopback()
            && !self.basic_auth
            && !self.allow_public_console
        {
            return Err(format!(
                "metrics.console: the console on {bind}, not a loopback address, without \
                 credentials would show every client and let anyone who reaches it disconnect \
                 them; set metrics.basic_auth = true (with auth.password_file), bind a \
                 loopback address, or set metrics.allow_public_console = true"
            ));
        }
        Ok(())
    }
}

/// A listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// Address and port, e.g. `127.0.0.1:1883` or `[::1]:1883`.
    pub bind: SocketAddr,
    /// Transport: `tcp`, `tls`, `ws` (WebSocket) or `wss` (WebSocket over TLS).
    #[serde(default = "default_protocol")]
    pub protocol: String,
    /// `tls` / `wss`: certificate chain (PEM).
    pub cert: Option<PathBuf>,
    /// `tls` / `wss`: private key (PEM).
    pub key: Option<PathBuf>,
    /// `tls` / `wss`: CA of client certificates (PEM); when set, clients must present a
    /// certificate it signed.
    pub client_ca: Option<PathBuf>,
    /// `tls` / `wss` with `client_ca`: the Common Name of the client certificate is the
    /// user name (for the ACL), and no password is asked. Default false.
    #[serde(default)]
    pub use_identity_as_username: bool,
    /// `ws` / `wss`: the HTTP path of the WebSocket endpoint. Default `/mqtt`; `/` or
    /// any path is accepted when set to `*`.
    #[serde(default = "default_ws_path")]
    pub path: String,
    /// Accept clients without credentials. Default: true on a loopback address, false
    /// elsewhere (say `true` explicitly to open a public listener to anonymous clients).
    pub allow_anonymous: Option<bool>,
    /// A name for logs; default the bind address.
    pub name: Option<String>,
}

impl Listener {
    /// Whether clients without credentials may connect: `allow_anonymous` if set, else
    /// only on a loopback address (a public listener must open itself explicitly).
    pub fn allows_anonymous(&self) -> bool {
        self.allow_anonymous
            .unwrap_or_else(|| self.bind.ip().is_loopback())
    }
}

/// `[auth]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    /// Password file (`user:$argon2id$...` lines, made with `mqtt-broker passwd`).
    pub password_file: Option<PathBuf>,
    /// ACL file (see CONFIG.md for the format).
    pub acl_file: Option<PathBuf>,
}

/// `[limits]`: every limit of the broker core.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest packet accepted, in bytes. Default 1 MiB.
    pub max_packet_size: u32,
    /// Receive Maximum: unacknowledged QoS 1/2 messages a client may send. Default 100.
    pub receive_maximum: u16,
    /// Unacknowledged QoS 1/2 messages sent to a client. Default 100.
    pub max_inflight: u16,
    /// Messages waiting for an online client's inflight window. Default 1000.
    pub max_queued_messages: usize,
    /// Payload bytes waiting for an online client. Default 16 MiB.
    pub max_queued_bytes: usize,
    /// Messages queued for an offline session. Default 1000.
    pub max_offline_messages: usize,
    /// Payload bytes queued for an offline session. Default 16 MiB.
    pub max_offline_bytes: usize,
    /// Queue QoS 0 messages for offline sessions. Default false.
    pub queue_qos0_offline: bool,
    /// `drop-newest` (default) or `drop-oldest` when a queue is full.
    pub drop_policy: String,
    /// Topic Alias Maximum offered to 5.0 clients. Default 16.
    pub topic_alias_maximum: u16,
    /// Use topic aliases toward 5.0 clients that accept them (their Topic Alias
    /// Maximum), saving the topic name on repeated messages. Default true.
    pub outgoing_topic_aliases: bool,
    /// Subscriptions per session. Default 1000.
    pub max_subscriptions: usize,
    /// Levels of a topic. Default 128.
    pub max_topic_levels: usize,
    /// Bytes of a topic. Default 65,535.
    pub max_topic_length: usize,
    /// Highest keep-alive, in seconds; 5.0 clients asking for more get Server Keep Alive.
    /// Default: none.
    pub max_keep_alive: Option<u16>,
    /// Maximum QoS (0, 1 or 2). Default 2.
    pub maximum_qos: u8,
    /// Seconds to wait for CONNECT, and for the TLS or WebSocket handshake before it.
    /// Default 10.
    pub connect_timeout_secs: u64,
    /// Concurrent connections; more are closed at once. Default 100000.
    pub max_connections: usize,
    /// Bytes waiting to be written to one connection before it is closed as too slow.
    /// Default 64 MiB.
    pub max_pending_write_bytes: usize,
    /// Bytes waiting to be written to one connection above which QoS 0 messages for it
    /// are dropped (counted) instead of sent, until it catches up; 0 never drops them.
    /// Default: half of `max_pending_write_bytes`.
    pub qos0_pending_write_bytes: Option<usize>,
    /// SUBACK code for a subscription denied by the ACL: 128 (default) or 135.
    pub subscribe_denied_code: u8,
}

impl Limits {
    /// Bytes waiting to be written to one connection above which QoS 0 messages for it
    /// are dropped; 0: never.
    pub fn qos0_drop_threshold(&self) -> usize {
        self.qos0_pending_write_bytes
            .unwrap_or(self.max_pending_write_bytes / 2)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_packet_size: 1 << 20,
            receive_maximum: 100,
            max_inflight: 100,
            max_queued_messages: 1000,
            max_queued_bytes: 16 << 20,
            max_offline_messages: 1000,
            max_offline_bytes: 16 << 20,
            queue_qos0_offline: false,
            drop_policy: "drop-newest".into(),
            topic_alias_maximum: 16,
            outgoing_topic_aliases: true,
            max_subscriptions: 1000,
            max_topic_levels: 128,
            max_topic_length: 65_535,
            max_keep_alive: None,
            maximum_qos: 2,
            connect_timeout_secs: 10,
            max_connections: 100_000,
            max_pending_write_bytes: 64 << 20,
            qos0_pending_write_bytes: None,
            subscribe_denied_code: 0x80,
        }
    }
}

/// `[sessions]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Sessions {
    /// Expiry of 3.1/3.1.1 persistent sessions, in seconds. Default 172800 (2 days).
    pub persistent_session_expiry_secs: u64,
    /// Upper bound of a 5.0 Session Expiry Interval, in seconds. Default 604800 (7 days).
    pub max_session_expiry_secs: u64,
}

impl Default for Sessions {
    fn default() -> Self {
        Self {
            persistent_session_expiry_secs: 2 * 86_400,
            max_session_expiry_secs: 7 * 86_400,
        }
    }
}

/// `[sys]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Sys {
    /// Seconds between `$SYS/broker/...` updates; 0 turns them off. Default 10.
    pub interval_secs: u64,
}

impl Default for Sys {
    fn default() -> Self {
        Self { interval_secs: 10 }
    }
}

/// `[log]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// `error`, `warn`, `info` (default), `debug` or `trace`; `-v` raises it.
    pub level: String,
}

impl Default for Log {
    fn default() -> Self {
        Self {
            level: "info".into(),
        }
    }
}

fn default_listeners() -> Vec<Listener> {
    vec![Listener {
        bind: "127.0.0.1:1883".parse().expect("valid address"),
        protocol: default_protocol(),
        cert: None,
        key: None,
        client_ca: None,
        use_identity_as_username: false,
        path: default_ws_path(),
        allow_anonymous: None,
        name: None,
    }]
}

fn default_protocol() -> String {
    "tcp".into()
}

fn default_ws_path() -> String {
    "/mqtt".into()
}

impl Default for Config {
    fn default() -> Self {
        toml::from_str("").expect("the empty configuration is valid")
    }
}

/// The longest duration an option may give, in seconds: the largest 5.0 Session Expiry
/// Interval (about 136 years).
pub const MAX_SECS: u64 = u32::MAX as u64;

/// A configuration error, naming the file and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML is invalid or a key is wrong.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What and where.
        message: String,
    },
}

impl Config {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        Self::parse(&text).map_err(|message| ConfigError::Invalid {
            path: path.into(),
            message,
        })
    }

    /// Parses and checks a configuration.
    pub fn parse(text: &str) -> Result<Self, String> {
        let c: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        c.check()?;
        Ok(c)
    }

    fn check(&self) -> Result<(), String> {
        if self.runtime.worker_threads > 1024 {
            return Err(format!(
                "runtime.worker_threads: {} is more than 1024 threads",
                self.runtime.worker_threads
            ));
        }
        if self.runtime.park_idle_ms > 60_000 {
            return Err(format!(
                "runtime.park_idle_ms: {} is more than 60000 milliseconds",
                self.runtime.park_idle_ms
            ));
        }
        if self.listeners.is_empty() {
            return Err("at least one [[listener]] is needed".into());
        }
        for (i, l) in self.listeners.iter().enumerate() {
            match l.protocol.as_str() {
                "tcp" | "ws" => {
                    // Most likely a forgotten `protocol = "tls"`: refused rather than
                    // served in plaintext.
                    if l.cert.is_some() || l.key.is_some() || l.client_ca.is_some() {
                        return Err(format!(
                            "listener[{i}]: cert, key and client_ca need protocol `tls` or \
                             `wss`, not `{}`",
                            l.protocol
                        ));
                    }
                    if l.use_identity_as_username {
                        return Err(format!(
                            "listener[{i}]: use_identity_as_username needs protocol `tls` or \
                             `wss` with client_ca"
                        ));
                    }
                }
                "tls" | "wss" => {
                    if l.use_identity_as_username && l.client_ca.is_none() {
                        return Err(format!(
                            "listener[{i}]: use_identity_as_username needs client_ca"
                        ));
                    }
                    if l.cert.is_none() || l.key.is_none() {
                        return Err(format!(
                            "listener[{i}]: protocol `{}` needs `cert` and `key`",
                            l.protocol
                        ));
                    }
                }
                other => {
                    return Err(format!(
                        "listener[{i}].protocol: `{other}` is not one of tcp, tls, ws, wss"
                    ))
                }
            }
            if l.path != "*" && !l.path.starts_with('/') {
                return Err(format!(
                    "listener[{i}].path: `{}` does not start with `/` (or is `*`)",
                    l.path
                ));
            }
        }
        let l = &self.limits;
        if l.maximum_qos > 2 {
            return Err(format!(
                "limits.maximum_qos: {} is not 0, 1 or 2",
                l.maximum_qos
            ));
        }
        if !matches!(l.drop_policy.as_str(), "drop-newest" | "drop-oldest") {
            return Err(format!(
                "limits.drop_policy: `{}` is not `drop-newest` or `drop-oldest`",
                l.drop_policy
            ));
        }
        if l.qos0_pending_write_bytes > Some(l.max_pending_write_bytes) {
            return Err(format!(
                "limits.qos0_pending_write_bytes: {} is above max_pending_write_bytes ({})",
                l.qos0_pending_write_bytes.unwrap_or_default(),
                l.max_pending_write_bytes
            ));
        }
        if !matches!(l.subscribe_denied_code, 0x80 | 0x87) {
            return Err(format!(
                "limits.subscribe_denied_code: {} is not 128 or 135",
                l.subscribe_denied_code
            ));
        }
        if l.max_packet_size < 64 {
            return Err(format!(
                "limits.max_packet_size: {} is below 64 bytes",
                l.max_packet_size
            ));
        }
        if l.receive_maximum == 0 || l.max_inflight == 0 {
            return Err("limits.receive_maximum and limits.max_inflight must be at least 1".into());
        }
        let p = &self.persistence;
        if !matches!(p.durability.as_str(), "fsync" | "interval" | "none") {
            return Err(format!(
                "persistence.durability: `{}` is not fsync, interval or none",
                p.durability
            ));
        }
        if p.durability == "interval" && p.interval_ms == 0 {
            return Err("persistence.interval_ms must be at least 1".into());
        }
        if !matches!(p.on_damage.as_str(), "refuse" | "move-aside") {
            return Err(format!(
                "persistence.on_damage: `{}` is not refuse or move-aside",
                p.on_damage
            ));
        }
        if p.enabled && p.dir.as_os_str().is_empty() {
            return Err("persistence.dir is empty".into());
        }
        if l.connect_timeout_secs == 0 {
            return Err("limits.connect_timeout_secs must be at least 1".into());
        }
        // Durations up to 136 years: a deadline that far ahead is still a valid instant.
        for (key, secs) in [
            ("limits.connect_timeout_secs", l.connect_timeout_secs),
            (
                "sessions.persistent_session_expiry_secs",
                self.sessions.persistent_session_expiry_secs,
            ),
            (
                "sessions.max_session_expiry_secs",
                self.sessions.max_session_expiry_secs,
            ),
            ("sys.interval_secs", self.sys.interval_secs),
        ] {
            if secs > MAX_SECS {
                return Err(format!("{key}: {secs} is above {MAX_SECS} seconds"));
            }
        }
        self.metrics.check(self.auth.password_file.as_deref())?;
        if !matches!(
            self.log.level.as_str(),
            "error" | "warn" | "info" | "debug" | "trace"
        ) {
            return Err(format!(
                "log.level: `{}` is not error, warn, info, debug or trace",
                self.log.level
            ));
        }
        Ok(())
    }

    /// The broker core's configuration.
    pub fn broker_config(&self) -> BrokerConfig {
        let l = &self.limits;
        let mut b = BrokerConfig {
            allow_anonymous: true,
            max_offline_messages: l.max_offline_messages,
            max_offline_bytes: l.max_offline_bytes,
            queue_qos0_offline: l.queue_qos0_offline,
            drop_policy: if l.drop_policy == "drop-oldest" {
                DropPolicy::DropOldest
            } else {
                DropPolicy::DropNewest
            },
            persistent_session_expiry: Duration::from_secs(
                self.sessions.persistent_session_expiry_secs,
            ),
            max_session_expiry: Duration::from_secs(self.sessions.max_session_expiry_secs),
            max_keep_alive: l.max_keep_alive,
            max_subscriptions: l.max_subscriptions,
            max_topic_levels: l.max_topic_levels,
            max_topic_length: l.max_topic_length,
            subscribe_denied_code: ReasonCode::from_u8(l.subscribe_denied_code)
                .unwrap_or(ReasonCode::UnspecifiedError),
            sys_interval: (self.sys.interval_secs > 0)
                .then(|| Duration::from_secs(self.sys.interval_secs)),
            maximum_qos: QoS::from_u8(l.maximum_qos).unwrap_or(QoS::ExactlyOnce),
            persistence: self.persistence.enabled,
            version: concat!("mqtt-broker ", env!("CARGO_PKG_VERSION")).into(),
            ..BrokerConfig::default()
        };
        let s = &mut b.session;
        s.max_packet_size = l.max_packet_size;
        s.receive_maximum = l.receive_maximum;
        s.max_inflight = l.max_inflight;
        s.max_queued_messages = l.max_queued_messages;
        s.max_queued_bytes = l.max_queued_bytes;
        s.topic_alias_maximum = l.topic_alias_maximum;
        s.outgoing_topic_aliases = l.outgoing_topic_aliases;
        s.connect_timeout = Duration::from_secs(l.connect_timeout_secs);
        s.maximum_qos = b.maximum_qos;
        // Credentials go to the adapter when there is a password file or a listener takes
        // the TLS client identity as the user name.
        b.authenticate = self.auth.password_file.is_some()
            || self.listeners.iter().any(|l| l.use_identity_as_username);
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_has_the_defaults() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.listeners.len(), 1);
        assert_eq!(c.listeners[0].bind.to_string(), "127.0.0.1:1883");
        assert_eq!(c.limits.max_packet_size, 1 << 20);
    }

    #[test]
    fn defaults_are_safe() {
        // No configuration: one listener, on loopback only.
        let c = Config::parse("").unwrap();
        assert!(c.listeners[0].bind.ip().is_loopback());
        assert!(c.listeners[0].allows_anonymous());
        assert!(c.auth.password_file.is_none() && c.auth.acl_file.is_none());
        // Anonymous clients only on loopback unless the listener says otherwise.
        let listener = |bind: &str, anonymous: &str| {
            Config::parse(&format!("[[listener]]\nbind = \"{bind}\"\n{anonymous}"))
                .unwrap()
                .listeners
                .remove(0)
                .allows_anonymous()
        };
        assert!(listener("127.0.0.1:1883", ""));
        assert!(listener("[::1]:1883", ""));
        assert!(!listener("0.0.0.0:1883", ""));
        assert!(!listener("[::]:1883", ""));
        assert!(!listener("192.0.2.7:1883", ""));
        assert!(listener("0.0.0.0:1883", "allow_anonymous = true"));
        assert!(!listener("127.0.0.1:1883", "allow_anonymous = false"));
    }

    #[test]
    fn qos0_is_dropped_above_half_the_write_limit_unless_set() {
        let limits = |text: &str| Config::parse(&format!("[limits]\n{text}")).map(|c| c.limits);
        assert_eq!(limits("").unwrap().qos0_drop_threshold(), 32 << 20);
        let l = limits("max_pending_write_bytes = 1000").unwrap();
        assert_eq!(l.qos0_drop_threshold(), 500);
        let l = limits("qos0_pending_write_bytes = 0").unwrap();
        assert_eq!(l.qos0_drop_threshold(), 0);
        let l = limits("max_pending_write_bytes = 1000\nqos0_pending_write_bytes = 1000").unwrap();
        assert_eq!(l.qos0_drop_threshold(), 1000);
        let e =
            limits("max_pending_write_bytes = 1000\nqos0_pending_write_bytes = 1001").unwrap_err();
        assert!(e.contains("limits.qos0_pending_write_bytes"), "{e}");
    }

    #[test]
    fn errors_name_the_key() {
        let e = Config::parse("[limits]\nmaximum_qos = 3").unwrap_err();
        assert!(e.contains("limits.maximum_qos"), "{e}");
        let e = Config::parse("[limits]\nmax_packet_sise = 3").unwrap_err();
        assert!(e.contains("max_packet_sise"), "{e}");
        let e = Config::parse("[persistence]\ndurability = \"sometimes\"").unwrap_err();
        assert!(e.contains("persistence.durability"), "{e}");
        let e = Config::parse("[[listener]]\nbind = \"nowhere\"").unwrap_err();
        assert!(e.contains("bind"), "{e}");
        let e =
            Config::parse("[[listener]]\nbind = \"127.0.0.1:1\"\nprotocol = \"udp\"").unwrap_err();
        assert!(e.contains("listener[0].protocol"), "{e}");
    }

    #[test]
    fn options_that_cannot_work_are_refused() {
        let listener = |more: &str| {
            Config::parse(&format!("[[listener]]\nbind = \"127.0.0.1:1\"\n{more}")).map(|_| ())
        };
        // TLS files on a plaintext listener: a forgotten `protocol = "tls"`.
        let e = listener("cert = \"c.pem\"\nkey = \"k.pem\"").unwrap_err();
        assert!(e.contains("listener[0]") && e.contains("tls"), "{e}");
        assert!(listener("protocol = \"ws\"\nclient_ca = \"ca.pem\"").is_err());
        assert!(listener("use_identity_as_username = true").is_err());
        let e = listener("protocol = \"ws\"\npath = \"mqtt\"").unwrap_err();
        assert!(e.contains("listener[0].path"), "{e}");
        assert!(listener("protocol = \"ws\"\npath = \"*\"").is_ok());
        let e = Config::parse("[limits]\nconnect_timeout_secs = 0").unwrap_err();
        assert!(e.contains("limits.connect_timeout_secs"), "{e}");
        let e = Config::parse("[sessions]\nmax_session_expiry_secs = 18446744073709551615")
            .unwrap_err();
        assert!(e.contains("sessions.max_session_expiry_secs"), "{e}");
        assert!(Config::parse("[sessions]\nmax_session_expiry_secs = 4294967295").is_ok());
        assert!(Config::parse("[sys]\ninterval_secs = 4294967296").is_err());
        let e = Config::parse("[runtime]\nworker_threads = 100000").unwrap_err();
        assert!(e.contains("runtime.worker_threads"), "{e}");
        let e = Config::parse("[runtime]\npark_idle_ms = 60001").unwrap_err();
        assert!(e.contains("runtime.park_idle_ms"), "{e}");
        assert_eq!(Config::parse("").unwrap().runtime.park_idle_ms, 25);
        assert_eq!(
            Config::parse("[runtime]\npark_idle_ms = 0")
                .unwrap()
                .runtime
                .park_idle_ms,
            0
        );
    }

    #[test]
    fn worker_threads_default_to_one_per_core() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(Config::parse("").unwrap().runtime.threads(), cores);
        let c = Config::parse("[runtime]\nworker_threads = 1").unwrap();
        assert_eq!(c.runtime.threads(), 1);
        assert!(Config::parse("[runtime]\nworker_thread = 1").is_err());
    }

    #[test]
    fn tokio_threads_default_to_one_on_small_machines() {
        assert_eq!(Runtime::tokio_threads_for(0, 1), 1);
        assert_eq!(Runtime::tokio_threads_for(0, 2), 1);
        assert_eq!(Runtime::tokio_threads_for(0, 3), 3);
        assert_eq!(Runtime::tokio_threads_for(0, 16), 16);
        // Set explicitly, the number is kept whatever the machine.
        assert_eq!(Runtime::tokio_threads_for(2, 2), 2);
        assert_eq!(Runtime::tokio_threads_for(1, 16), 1);
        let c = Config::parse("[runtime]\nworker_threads = 4").unwrap();
        assert_eq!(c.runtime.tokio_threads(), 4);
    }

    #[test]
    fn console_is_off_by_default_and_safe_when_on() {
        let c = Config::parse("[metrics]\nbind = \"127.0.0.1:9100\"").unwrap();
        assert!(!c.metrics.console && !c.metrics.basic_auth);
        let c = Config::parse("[metrics]\nbind = \"127.0.0.1:9100\"\nconsole = true").unwrap();
        assert!(c.metrics.console);
        // No listener for it.
        let e = Config::parse("[metrics]\nconsole = true").unwrap_err();
        assert!(
            e.contains("metrics.console") && e.contains("metrics.bind"),
            "{e}"
        );
        // Credentials need a password file.
        let e =
            Config::parse("[metrics]\nbind = \"127.0.0.1:9100\"\nbasic_auth = true").unwrap_err();
        assert!(e.contains("metrics.basic_auth"), "{e}");
        assert!(Config::parse(
            "[auth]\npassword_file = \"p\"\n[metrics]\nbind = \"127.0.0.1:9100\"\nbasic_auth = true"
        )
        .is_ok());
        // Reachable from elsewhere: credentials, or an explicit choice.
        let public = "[metrics]\nbind = \"0.0.0.0:9100\"\nconsole = true\n";
        let e = Config::parse(public).unwrap_err();
        assert!(
            e.contains("metrics.console") && e.contains("0.0.0.0:9100") && e.contains("basic_auth"),
            "{e}"
        );
        assert!(Config::parse(&format!("{public}allow_public_console = true")).is_ok());
        assert!(Config::parse(&format!(
            "[auth]\npassword_file = \"p\"\n{public}basic_auth = true"
        ))
        .is_ok());
        // Metrics alone on a public address stay as they were.
        assert!(Config::parse("[metrics]\nbind = \"0.0.0.0:9100\"").is_ok());
        let e =
            Config::parse("[metrics]\nbind = \"127.0.0.1:9100\"\nconsole = \"yes\"").unwrap_err();
        assert!(e.contains("console"), "{e}");
    }
}
