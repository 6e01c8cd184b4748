//! Drives `mqtt_session::Connection` (a server, a client, or a client wired to a server)
//! with an arbitrary list of operations and checks the session after each; see
//! `mqtt_proto_fuzz::session` (src/session.rs) for the operations and every check.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mqtt_proto_fuzz::session::{run, Input};

fuzz_target!(|input: Input| {
    run(&input);
});
