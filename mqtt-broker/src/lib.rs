//! The pure MQTT broker core: routing, retained messages, wills, sessions, queues, auth
//! decisions, hooks and `$SYS`, driven by an adapter with bytes, time and answers.
#![forbid(unsafe_code)]
