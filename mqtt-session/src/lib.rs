//! The protocol state of one MQTT connection (QoS 1/2, packet ids, inflight, ordering,
//! keep-alive) as a pure, deterministic state machine, in the client and the server role.
#![forbid(unsafe_code)]
