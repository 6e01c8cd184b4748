//! `mqtt-broker-smol`: the MQTT broker on smol. The command line is the one every broker
//! binary shares (`mqtt_adapter_common::cli`). smol's executor runs `SMOL_THREADS`
//! threads if set, else `[runtime] worker_threads` (default: one per core).

use adapter_smol::Spawner;

fn main() -> anyhow::Result<()> {
    mqtt_adapter_common::cli::main(
        "mqtt-broker-smol",
        "An MQTT 3.1, 3.1.1 and 5.0 broker on smol",
        |config| {
            if std::env::var_os("SMOL_THREADS").is_none() {
                // Read once, when smol's executor starts: before anything is spawned.
                std::env::set_var("SMOL_THREADS", config.runtime.threads().to_string());
            }
            smol::block_on(adapter_smol::serve(config, Spawner::smol()))
        },
    )
}
