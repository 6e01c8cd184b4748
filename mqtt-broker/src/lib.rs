//! The pure MQTT broker core: routing with wildcards and shared subscriptions, retained
//! messages, wills, clean and persistent sessions with takeover and expiry, bounded
//! offline queues, authentication requests, ACL, hooks and `$SYS`, for MQTT 3.1, 3.1.1
//! and 5.0 clients at once.
//!
//! It does no IO and never reads the clock: an adapter feeds it connections, bytes and
//! time, and carries out its outputs. See [`Broker`].
//!
//! Besides the protocol crates and `bytes`, it uses `hashbrown` for its `HashTable`
//! (the client-id index keeps session keys alone and reads each id from its session,
//! which std's `HashMap` cannot do) and `smallvec` (subscription-tree level names up to
//! 16 bytes kept in their map key rather than in an allocation each): both are about
//! memory per idle connection.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod acl;
mod broker;
mod config;
mod smallmap;
mod store;
mod tree;
mod types;

pub use acl::{covers, Access, Acl, Rule, Who};
pub use broker::Broker;
pub use config::{BrokerConfig, DropPolicy};
pub use store::{MemoryStore, Record, Snapshot, StoredMessage, StoredSession};
pub use tree::{Match, SessionKey, SubEntry, SubscriptionTree};
pub use types::*;
