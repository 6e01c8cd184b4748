//! Drives the `mqtt_broker::Broker` core with an arbitrary list of operations over several
//! connections (raw bytes and packets, or real `mqtt_session` clients) and checks its
//! outputs and state after each call; see `mqtt_proto_fuzz::broker` (src/broker.rs) for the
//! operations and every check.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mqtt_proto_fuzz::broker::{run, Input};

fuzz_target!(|input: Input| {
    run(&input);
});
