//! The black-box scenarios against the tokio broker, started in-process with TCP, TLS,
//! WebSocket and WSS listeners on 127.0.0.1 (ephemeral ports), the scenarios' password
//! file and ACL, and `$SYS` every second (`mqtt_tests::scenarios::broker_config`). Every
//! scenario runs over every transport with MQTT 3.1.1 and 5.0 (see
//! `mqtt_tests::scenarios`).

use adapter_tokio::server::{start, Running};
use mqtt_tests::scenarios::{broker_config, Endpoints, Launcher, Setup};

struct TokioBroker(Running);

impl Launcher for TokioBroker {
    async fn launch(setup: &Setup) -> anyhow::Result<(Endpoints, Self)> {
        let running = start(broker_config(setup)?, None).await?;
        let p: Vec<u16> = running.local_addrs.iter().map(|a| a.port()).collect();
        Ok((
            Endpoints::on_loopback(p[0], p[1], p[2], p[3]),
            TokioBroker(running),
        ))
    }

    async fn stop(self) {
        self.0.shutdown().await;
    }
}

mqtt_tests::scenario_tests!(TokioBroker);
