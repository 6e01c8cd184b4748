//! Every broker the project builds, behind one handle, for tests that run the same
//! checks against each: the interop tests with clients the project did not write.
//!
//! A test is an `async fn(Runtime)`; [`for_each_broker!`](crate::for_each_broker) makes
//! one `#[tokio::test]` per broker of it:
//!
//! ```ignore
//! async fn retained(rt: Runtime) { let b = Broker::start(rt, "...").await; ... }
//! mqtt_tests::for_each_broker!(retained);
//! ```

use mqtt_adapter_common::config::Config;
use mqtt_broker::Gauges;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Which adapter runs the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// adapter-tokio.
    Tokio,
    /// adapter-std: blocking threads.
    Std,
    /// adapter-smol on smol's executor.
    Smol,
    /// adapter-smol on async-std's executor.
    AsyncStd,
}

/// A running broker of any adapter.
pub enum Broker {
    /// On tokio.
    Tokio(adapter_tokio::server::Running),
    /// On blocking threads.
    Std(adapter_std::server::Running),
    /// On smol or async-std.
    Smol(adapter_smol::server::Running),
}

impl Broker {
    /// Starts the broker of `rt` with the configuration `text` (TOML); persistence is
    /// disabled unless `text` has a `[persistence]` table. Panics if it does not start.
    pub async fn start(rt: Runtime, text: &str) -> Broker {
        let text = if text.contains("[persistence]") {
            text.to_string()
        } else {
            format!("{text}\n[persistence]\nenabled = false\n")
        };
        let config = Config::parse(&text).expect("valid config");
        Self::start_config(rt, config).await.expect("broker starts")
    }

    /// Starts the broker of `rt` with `config`.
    pub async fn start_config(rt: Runtime, config: Config) -> anyhow::Result<Broker> {
        Ok(match rt {
            Runtime::Tokio => Broker::Tokio(adapter_tokio::server::start(config, None).await?),
            Runtime::Std => Broker::Std(adapter_std::server::start(config, None)?),
            Runtime::Smol => Broker::Smol(
                adapter_smol::server::start(config, None, adapter_smol::Spawner::smol()).await?,
            ),
            Runtime::AsyncStd => Broker::Smol(
                adapter_smol::server::start(config, None, adapter_smol::Spawner::async_std())
                    .await?,
            ),
        })
    }

    /// The listeners' addresses, in configuration order.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        match self {
            Broker::Tokio(r) => &r.local_addrs,
            Broker::Std(r) => &r.local_addrs,
            Broker::Smol(r) => &r.local_addrs,
        }
    }

    /// The metrics (and web console) listener's address, if configured.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        match self {
            Broker::Tokio(r) => r.metrics_addr,
            Broker::Std(r) => r.metrics_addr,
            Broker::Smol(r) => r.metrics_addr,
        }
    }

    /// The first listener's port.
    pub fn port(&self) -> u16 {
        self.local_addrs()[0].port()
    }

    /// Current connections, sessions, subscriptions and retained messages.
    pub async fn gauges(&self) -> anyhow::Result<Gauges> {
        match self {
            Broker::Tokio(r) => r.gauges().await,
            // The driver answers at once; blocking this worker that long is fine.
            Broker::Std(r) => r.gauges(),
            Broker::Smol(r) => r.gauges().await,
        }
    }

    /// Waits (up to `limit`) until the broker holds at least `n` subscriptions.
    pub async fn wait_for_subscriptions(&self, n: usize, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            if self.gauges().await?.subscriptions >= n {
                return Ok(());
            }
            anyhow::ensure!(Instant::now() < deadline, "{n} subscriptions not reached");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits (up to `limit`) until the broker holds no subscription.
    pub async fn wait_for_no_subscriptions(&self, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        while self.gauges().await?.subscriptions > 0 {
            anyhow::ensure!(Instant::now() < deadline, "old subscriptions still there");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// Stops it, and waits until its sockets are closed.
    pub async fn shutdown(self) {
        match self {
            Broker::Tokio(r) => r.shutdown().await,
            Broker::Std(r) => {
                let _ = tokio::task::spawn_blocking(move || r.shutdown()).await;
            }
            Broker::Smol(r) => r.shutdown().await,
        }
    }
}

/// One `#[tokio::test]` per broker for each `async fn(Runtime)` named, in modules
/// `tokio`, `std`, `smol` and `async_std` of the test file.
#[macro_export]
macro_rules! for_each_broker {
    ($($name:ident),* $(,)?) => {
        $crate::for_each_broker!(@rt tokio_broker, Tokio; $($name),*);
        $crate::for_each_broker!(@rt std_broker, Std; $($name),*);
        $crate::for_each_broker!(@rt smol_broker, Smol; $($name),*);
        $crate::for_each_broker!(@rt async_std_broker, AsyncStd; $($name),*);
    };
    (@rt $module:ident, $rt:ident; $($name:ident),*) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::brokers::Runtime::$rt).await;
                }
            )*
        }
    };
}
