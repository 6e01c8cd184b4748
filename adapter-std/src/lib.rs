//! Runs the MQTT broker core on blocking std threads, with no async runtime: TCP, TLS
//! (rustls) and WebSocket / WSS (tungstenite) listeners from the same TOML configuration
//! as the tokio broker, durable state through `mqtt_store::Persister`, and a blocking
//! client.
//!
//! - [`server`]: the broker. Threads: a driver thread owning the core, a thread per
//!   listener, and a reader and a writer thread per connection (why a writer thread: see
//!   the module). Embed it with [`server::start`]; the binary is `mqtt-broker-std`
//!   (`cargo run --release -p adapter-std -- --help`), with the command line of every
//!   broker binary (`mqtt_adapter_common::cli`).
//! - [`client`]: a blocking client on the mqtt-session client role: connect, publish
//!   and wait for the acknowledgement, subscribe and iterate over the messages.
//!
//! Pick it for embedding a broker in a program that has no async runtime, or for a
//! handful to a few thousand connections where two threads per connection cost nothing
//! that matters; past that, an async adapter holds a connection in far less memory.

pub mod client;
mod io;
pub mod server;
