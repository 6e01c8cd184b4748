//! Decodes arbitrary bytes with a decoder chosen by the first byte, then checks that every
//! decoded packet encodes back to an equal packet; see `mqtt_proto_fuzz::run` (src/lib.rs)
//! for the input format and every check.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mqtt_proto_fuzz::run(data));
