//! `mqtt-broker-std`: the MQTT broker on blocking std threads. The command line is the
//! one every broker binary shares (`mqtt_adapter_common::cli`).

use std::sync::mpsc;
use std::time::Duration;

fn main() -> anyhow::Result<()> {
    mqtt_adapter_common::cli::main(
        "mqtt-broker-std",
        "An MQTT 3.1, 3.1.1 and 5.0 broker on blocking threads",
        |config| {
            let running = adapter_std::server::start(config, None)?;
            let (tx, rx) = mpsc::channel();
            mqtt_adapter_common::cli::on_shutdown_signal(move || {
                let _ = tx.send(());
            })?;
            loop {
                match rx.recv_timeout(Duration::from_millis(250)) {
                    Ok(()) => {
                        running.shutdown();
                        return Ok(());
                    }
                    Err(_) if running.is_stopped() => {
                        anyhow::bail!("the broker stopped: see the log")
                    }
                    Err(_) => {}
                }
            }
        },
    )
}
