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

/// The tokio runtime `[runtime]` asks for ([`config::Runtime::tokio_threads`]): tokio's
/// current-thread scheduler for one thread, its multi-thread scheduler with that many
/// workers otherwise; IO and timers enabled.
pub fn runtime(config: &config::Runtime) -> std::io::Result<tokio::runtime::Runtime> {
    match config.tokio_threads() {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    }
}

#[cfg(test)]
mod tests {
    use tokio::runtime::RuntimeFlavor;

    fn flavor(toml: &str) -> RuntimeFlavor {
        let c = crate::config::Config::parse(toml).unwrap();
        let rt = super::runtime(&c.runtime).unwrap();
        // Spawned tasks and timers run on it.
        let n = rt.block_on(async {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            tokio::spawn(async { 7 }).await.unwrap()
        });
        assert_eq!(n, 7);
        rt.handle().runtime_flavor()
    }

    #[test]
    fn one_thread_is_the_current_thread_scheduler() {
        assert_eq!(
            flavor("[runtime]\nworker_threads = 1"),
            RuntimeFlavor::CurrentThread
        );
        assert_eq!(
            flavor("[runtime]\nworker_threads = 2"),
            RuntimeFlavor::MultiThread
        );
    }
}
