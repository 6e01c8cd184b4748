//! What the broker's adapters (tokio, std threads, smol / async-std) share and that is
//! neither protocol nor a runtime: every adapter reads the same files and offers the same
//! command line, so a configuration moves between them unchanged.
//!
//! - [`config`]: the TOML configuration (the reference is `CONFIG.md`).
//! - [`auth`]: the password file (argon2id) and the ACL file.
//! - [`tls`]: rustls server configurations from PEM files, reloaded by a watcher thread
//!   when the files change or on SIGHUP; the client certificate's identity.
//! - [`ws`]: the WebSocket handshake rules (path, subprotocol `mqtt`) and server frames.
//! - [`metrics`]: the Prometheus text.
//! - [`console`]: the HTTP side of the metrics listener: request parsing and routing,
//!   basic auth, the web console's page and its JSON API built from the core's answers.
//! - [`persistence`]: opening the durable store (moving a damaged one aside when
//!   configured), restoring the broker from it, and the group-commit thread.
//! - [`core`]: the owner of the broker core for adapters that bring their own channels
//!   and tasks: inputs in, outputs to connections, password checks handed off, durable
//!   acknowledgements. It waits for nothing itself; the adapter's drive loop does.
//! - [`endpoint`] and [`client`]: client addresses (`mqtt://`, `mqtts://`, `ws://`,
//!   `wss://`) and client options.
//! - [`cli`]: the broker binaries' command line, logging and signals.
//!
//! No protocol decision is made here: that is the pure crates' (`mqtt-proto`,
//! `mqtt-session`, `mqtt-broker`) job.

pub mod auth;
pub mod cli;
pub mod client;
pub mod config;
pub mod console;
pub mod core;
pub mod endpoint;
pub mod metrics;
pub mod persistence;
pub mod tls;
pub mod ws;
