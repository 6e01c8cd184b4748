//! Black-box scenarios against the brokers, interop with clients the project did not
//! write, and the report of which specification statements the tests reference.

pub mod brokers;
pub mod raw;
pub mod scenarios;
pub mod spec_coverage;
