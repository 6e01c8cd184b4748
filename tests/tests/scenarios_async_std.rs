//! The black-box scenarios against the same broker as `scenarios_smol.rs` (adapter-smol),
//! its tasks on async-std's executor (`Spawner::async_std()`, feature `async-std`), with
//! the configuration every launcher uses (`mqtt_tests::scenarios::broker_config`).

use adapter_smol::server::{start, Running};
use adapter_smol::Spawner;
use mqtt_tests::scenarios::{broker_config, Endpoints, Launcher, Setup};

struct AsyncStdBroker(Running);

impl Launcher for AsyncStdBroker {
    async fn launch(setup: &Setup) -> anyhow::Result<(Endpoints, Self)> {
        let running = start(broker_config(setup)?, None, Spawner::async_std()).await?;
        let p: Vec<u16> = running.local_addrs.iter().map(|a| a.port()).collect();
        Ok((
            Endpoints::on_loopback(p[0], p[1], p[2], p[3]),
            AsyncStdBroker(running),
        ))
    }

    async fn stop(self) {
        self.0.shutdown().await;
    }
}

mqtt_tests::scenario_tests!(AsyncStdBroker);
