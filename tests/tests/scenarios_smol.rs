//! The black-box scenarios against the broker on smol's executor (adapter-smol), started
//! in-process with the same configuration as the others (see
//! `mqtt_tests::scenarios::broker_config`): TCP, TLS, WebSocket and WSS listeners on
//! 127.0.0.1, ephemeral ports. Its sockets and timers are async-io's, so starting it from
//! the scenarios' tokio runtime is fine; its tasks run on smol's threads.

use adapter_smol::server::{start, Running};
use adapter_smol::Spawner;
use mqtt_tests::scenarios::{broker_config, Endpoints, Launcher, Setup};

struct SmolBroker(Running);

impl Launcher for SmolBroker {
    async fn launch(setup: &Setup) -> anyhow::Result<(Endpoints, Self)> {
        let running = start(broker_config(setup)?, None, Spawner::smol()).await?;
        let p: Vec<u16> = running.local_addrs.iter().map(|a| a.port()).collect();
        Ok((
            Endpoints::on_loopback(p[0], p[1], p[2], p[3]),
            SmolBroker(running),
        ))
    }

    async fn stop(self) {
        self.0.shutdown().await;
    }
}

mqtt_tests::scenario_tests!(SmolBroker);
