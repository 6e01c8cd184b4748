//! The black-box scenarios against the broker on blocking std threads (adapter-std),
//! started in-process with the same configuration as the tokio one (see
//! `mqtt_tests::scenarios::broker_config`): TCP, TLS, WebSocket and WSS listeners on
//! 127.0.0.1, ephemeral ports.

use adapter_std::server::{start, Running};
use mqtt_tests::scenarios::{broker_config, Endpoints, Launcher, Setup};

struct StdBroker(Running);

impl Launcher for StdBroker {
    async fn launch(setup: &Setup) -> anyhow::Result<(Endpoints, Self)> {
        let running = start(broker_config(setup)?, None)?;
        let p: Vec<u16> = running.local_addrs.iter().map(|a| a.port()).collect();
        Ok((
            Endpoints::on_loopback(p[0], p[1], p[2], p[3]),
            StdBroker(running),
        ))
    }

    async fn stop(self) {
        // Shutting down joins threads: off the async runtime's workers.
        let _ = tokio::task::spawn_blocking(move || self.0.shutdown()).await;
    }
}

mqtt_tests::scenario_tests!(StdBroker);
