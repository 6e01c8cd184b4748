//! `mqtt-broker`: the MQTT broker on tokio. The command line is the one every broker
//! binary shares (`mqtt_adapter_common::cli`).
//!
//! With the `jemalloc` feature (`cargo run --release -p adapter-tokio --features
//! jemalloc`), the binary allocates with jemalloc instead of the system allocator: about
//! a tenth less memory per idle connection on Linux with glibc (BENCHMARKS.md, "Parked
//! idle connections"), whose aligned allocations (tokio's tasks and socket
//! registrations) leave holes that jemalloc's size classes do not. Off by default: it
//! builds jemalloc from C sources, which needs a C compiler and `make`; Unix only.

#[cfg(all(feature = "jemalloc", unix))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
