//! Runs the MQTT broker core on tokio: TCP, TLS (rustls), WebSocket and WSS listeners, per-connection reader and writer
//! tasks, a core task that owns the broker, timers, and password checks off the core.
//!
//! The binary is `mqtt-broker` (`cargo run --release -p adapter-tokio`); embed it with
//! [`server::start`].
//!
//! What every adapter shares (the configuration, password and ACL files, TLS
//! certificates, metrics text, the durable store's setup, the command line) lives in
//! `mqtt-adapter-common`; [`config`], [`auth`] and [`metrics`] are its modules, under the
//! paths they always had here, and so is the web console's [`console`].
//!
//! Dependencies: `tokio` for the runtime, `tokio-rustls` (rustls with the ring provider,
//! which builds without a C toolchain beyond cc) for TLS, `tokio-tungstenite` for
//! WebSocket, `tracing` for logs, `anyhow` for the binary's errors.

pub use mqtt_adapter_common::{auth, config, console, metrics};

pub mod client;
pub mod server;
pub mod tls;
