//! Runs the MQTT broker core on tokio: TCP, TLS (rustls), WebSocket and WSS listeners, per-connection reader and writer
//! tasks, a core task that owns the broker, timers, and password checks off the core.
//!
//! The binary is `mqtt-broker` (`cargo run --release -p adapter-tokio`); embed it with
//! [`server::start`].
//!
//! Dependencies: `tokio` for the runtime, `clap` for the command line, `serde` and `toml`
//! for the configuration file, `tracing` for logs, `argon2` for password hashes (argon2id,
//! the password hashing competition winner), `anyhow` for the binary's errors, `tokio-rustls` (rustls with the ring provider,
//! which builds without a C toolchain beyond cc) for TLS, `tokio-tungstenite` for WebSocket.

pub mod auth;
pub mod client;
pub mod config;
pub mod metrics;
pub mod server;
pub mod tls;
