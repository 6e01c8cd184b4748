//! `mqtt-broker-async-std`: the same broker as `mqtt-broker-smol`, its tasks on
//! async-std's executor (build with `--features async-std`). The command line is the one
//! every broker binary shares (`mqtt_adapter_common::cli`).

use adapter_smol::Spawner;

fn main() -> anyhow::Result<()> {
    mqtt_adapter_common::cli::main(
        "mqtt-broker-async-std",
        "An MQTT 3.1, 3.1.1 and 5.0 broker on async-std",
        |config| async_std::task::block_on(adapter_smol::serve(config, Spawner::async_std())),
    )
}
