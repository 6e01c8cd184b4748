//! The black-box scenarios against the tokio broker, started in-process with TCP, TLS,
//! WebSocket and WSS listeners on 127.0.0.1 (ephemeral ports), the scenarios' password
//! file and ACL, and `$SYS` every second. Every scenario runs over every transport with
//! MQTT 3.1.1 and 5.0 (see `mqtt_tests::scenarios`).

use adapter_tokio::config::Config;
use adapter_tokio::server::{start, Running};
use mqtt_tests::scenarios::{Endpoints, Launcher, Setup};

struct TokioBroker(Running);

impl Launcher for TokioBroker {
    async fn launch(setup: &Setup) -> anyhow::Result<(Endpoints, Self)> {
        let (cert, key) = (setup.cert.display(), setup.key.display());
        let text = format!(
            r#"
[[listener]]
bind = "127.0.0.1:0"
[[listener]]
bind = "127.0.0.1:0"
protocol = "tls"
cert = "{cert}"
key = "{key}"
[[listener]]
bind = "127.0.0.1:0"
protocol = "ws"
[[listener]]
bind = "127.0.0.1:0"
protocol = "wss"
cert = "{cert}"
key = "{key}"
[auth]
password_file = "{passwd}"
acl_file = "{acl}"
[sys]
interval_secs = 1
"#,
            passwd = setup.passwd.display(),
            acl = setup.acl.display(),
        );
        let running = start(
            Config::parse(&format!("{text}\n[persistence]\nenabled = false\n"))
                .map_err(anyhow::Error::msg)?,
            None,
        )
        .await?;
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
