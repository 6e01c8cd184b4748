//! Runs the MQTT broker core on smol, or on async-std, or on any executor that can
//! spawn a `Send` future: the sockets (`async-net`), timers (`async-io`), TLS
//! (`futures-rustls`) and WebSocket (`async-tungstenite`) are all futures-io and run on
//! async-io's reactor, which both smol and async-std use; only spawning differs, and that
//! is a [`Spawner`].
//!
//! - [`server`]: the broker, configured by the same TOML file as every adapter. Binaries:
//!   `mqtt-broker-smol` (smol's executor) and, with the `async-std` feature,
//!   `mqtt-broker-async-std` (async-std's); both take the command line every broker
//!   binary shares (`mqtt_adapter_common::cli`).
//! - [`client`]: an async client (TCP, TLS, WebSocket, WSS) whose task runs on a
//!   [`Spawner`] too.
//!
//! ```no_run
//! # fn demo() -> anyhow::Result<()> {
//! use adapter_smol::{server, Spawner};
//! use mqtt_adapter_common::config::Config;
//!
//! smol::block_on(async {
//!     let running = server::start(Config::default(), None, Spawner::smol()).await?;
//!     running.stopped().await;
//!     anyhow::Ok(())
//! })
//! # }
//! ```
//!
//! On async-std (feature `async-std`): `async_std::task::block_on(server::start(config,
//! None, Spawner::async_std()))`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub mod client;
pub mod server;

/// A boxed task.
pub type Task = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Where the broker's (and the client's) tasks run: a function that spawns a detached
/// task.
#[derive(Clone)]
pub struct Spawner(Arc<dyn Fn(Task) + Send + Sync>);

impl Spawner {
    /// A spawner from a function that spawns a detached task.
    pub fn new(spawn: impl Fn(Task) + Send + Sync + 'static) -> Self {
        Self(Arc::new(spawn))
    }

    /// smol's global executor (`smol::spawn`; its threads: `SMOL_THREADS`, default one).
    pub fn smol() -> Self {
        Self::new(|t| smol::spawn(t).detach())
    }

    /// async-std's executor (`async_std::task::spawn`).
    #[cfg(feature = "async-std")]
    pub fn async_std() -> Self {
        Self::new(|t| {
            async_std::task::spawn(t);
        })
    }

    /// Spawns a detached task.
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        (self.0)(Box::pin(task))
    }
}

impl std::fmt::Debug for Spawner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Spawner")
    }
}

/// What the binaries run: starts the broker on `spawner` and serves until SIGINT or
/// SIGTERM (then shuts down cleanly), or until the broker stops on its own (an error).
pub async fn serve(
    config: mqtt_adapter_common::config::Config,
    spawner: Spawner,
) -> anyhow::Result<()> {
    let running = server::start(config, None, spawner).await?;
    let (tx, rx) = async_channel::bounded::<()>(1);
    mqtt_adapter_common::cli::on_shutdown_signal(move || {
        let _ = tx.try_send(());
    })?;
    let signalled = futures_lite::future::or(async { rx.recv().await.is_ok() }, async {
        running.stopped().await;
        false
    })
    .await;
    if signalled {
        running.shutdown().await;
        Ok(())
    } else {
        Err(anyhow::anyhow!("the broker stopped: see the log"))
    }
}
