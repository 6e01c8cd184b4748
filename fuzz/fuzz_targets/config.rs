//! Parses arbitrary text as the broker's TOML configuration and checks what comes out: no
//! panic, a deterministic answer, the invariants of an accepted configuration, and a
//! broker core that runs with it; see `mqtt_proto_fuzz::config` (src/config.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Text that is not UTF-8 is made so, rather than thrown away.
    mqtt_proto_fuzz::config::run(&String::from_utf8_lossy(data));
});
