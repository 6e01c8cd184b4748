//! `mqtt-broker`: the MQTT broker on tokio. The command line is the one every broker
//! binary shares (`mqtt_adapter_common::cli`).

fn main() -> anyhow::Result<()> {
    mqtt_adapter_common::cli::main(
        "mqtt-broker",
        "An MQTT 3.1, 3.1.1 and 5.0 broker",
        |config| {
            let rt = adapter_tokio::runtime(&config.runtime)?;
            rt.block_on(async move {
                let mut running = adapter_tokio::server::start(config, None).await?;
                tokio::select! {
                    _ = shutdown_signal() => {
                        running.shutdown().await;
                        Ok(())
                    }
                    _ = running.stopped() => Err(anyhow::anyhow!("the broker stopped: see the log")),
                }
            })
        },
    )
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
