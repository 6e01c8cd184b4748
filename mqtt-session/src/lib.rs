//! The protocol state of one MQTT connection (QoS 0/1/2, packet ids, inflight limits,
//! ordering, session resume, keep-alive, topic aliases) as a pure, deterministic state
//! machine, in the client and the server role, for MQTT 3.1, 3.1.1 and 5.0 with one code
//! path.
//!
//! It does no IO and never reads the clock: bytes and commands go in with the time, and
//! bytes, events and the next deadline come out. See [`Connection`] for the run loop:
//!
//! ```
//! use mqtt_session::{Config, Connection, Event};
//! use mqtt_proto::{Connect, MqttString, ProtocolVersion, Publish, QoS, TopicName};
//! use std::time::Instant;
//!
//! let now = Instant::now(); // the caller's clock; the crate never reads it
//! let mut client = Connection::client(Config::default());
//! let mut server = Connection::server(Config::default(), now);
//! client
//!     .connect(now, Connect::new(ProtocolVersion::V5, MqttString::new("c1").unwrap()))
//!     .unwrap();
//! server.handle_input(now, &client.poll_transmit().unwrap());
//! let Some(Event::ConnectReceived(_)) = server.poll_event() else { panic!() };
//! server.accept(now, Default::default(), None).unwrap();
//! client.handle_input(now, &server.poll_transmit().unwrap());
//! assert!(matches!(client.poll_event(), Some(Event::Connected(_))));
//!
//! let mut msg = Publish::new(TopicName::new("a/b").unwrap(), "hi");
//! msg.qos = QoS::AtLeastOnce;
//! let id = client.publish(now, msg).unwrap();
//! server.handle_input(now, &client.poll_transmit().unwrap());
//! assert!(matches!(server.poll_event(), Some(Event::Message(_))));
//! client.handle_input(now, &server.poll_transmit().unwrap()); // PUBACK
//! assert_eq!(
//!     client.poll_event(),
//!     Some(Event::Delivered { packet_id: id.unwrap(), reason_code: Default::default() })
//! );
//! ```
//!
//! Retries: MQTT resends unacknowledged messages only when a session resumes on a new
//! connection ([MQTT-4.4.0-1]); there is no timed retransmission on a live connection.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod config;
mod connection;
mod error;
mod event;
mod state;
mod timer;

pub use config::Config;
pub use connection::{Connection, Role};
pub use error::{CloseReason, UsageError, Violation};
pub use event::{DropReason, Event};
pub use state::{EncodedPublish, Inflight, SessionState};
