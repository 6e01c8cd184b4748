#![allow(unsafe_code)] // the counting `GlobalAlloc` below; nothing else here is unsafe
//! Heap allocations made while decoding and encoding PUBLISH packets, counted by a global
//! allocator that wraps the system one.
//!
//! The count is per thread, so the test harness and tests running on other threads do not
//! disturb it. `cargo test -p mqtt-proto --test alloc -- --nocapture` also prints the
//! figures for the peer codecs used by the benchmarks.

use bytes::{Bytes, BytesMut};
use mqtt_proto::{
    Decoder, Packet, PacketId, ProtocolVersion, Publish, QoS, TopicName, MAX_PACKET_SIZE,
};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::hint::black_box;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn count_one() {
    // `try_with`: the slot may already be gone while the thread shuts down.
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

// SAFETY: every call is forwarded unchanged to `System`; the counter is a const-initialised
// thread-local `Cell`, which neither allocates nor has a destructor.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_one();
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_one();
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations `f` makes on this thread.
fn allocations(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

const PACKETS: usize = 1000;
const TOPIC: &str = "sensors/building-7/floor-3/room-12/temperature";

fn publish(qos: QoS) -> Publish {
    let mut p = Publish::new(TopicName::new(TOPIC).unwrap(), vec![0x5a; 256]);
    if qos != QoS::AtMostOnce {
        p.qos = qos;
        p.packet_id = PacketId::new(7);
    }
    p
}

/// One buffer holding `PACKETS` copies of the PUBLISH, as `version` encodes it.
fn stream(version: ProtocolVersion, qos: QoS) -> BytesMut {
    let mut frame = BytesMut::new();
    Packet::Publish(publish(qos))
        .encode(&mut frame, version, MAX_PACKET_SIZE)
        .unwrap();
    BytesMut::from(&frame.repeat(PACKETS)[..])
}

/// Allocations made by decoding every PUBLISH in `stream(version, qos)` (the buffer and the
/// decoder are made before counting starts).
fn decode_allocations(version: ProtocolVersion, qos: QoS) -> usize {
    let mut buf = stream(version, qos);
    let expected = publish(qos);
    let mut decoder = Decoder::client(version);
    let mut decoded = 0;
    let n = allocations(|| {
        while let Some(packet) = decoder.decode(&mut buf).unwrap() {
            let Packet::Publish(p) = black_box(packet) else {
                panic!("not a PUBLISH");
            };
            assert!(p == expected);
            decoded += 1;
        }
    });
    assert_eq!(decoded, PACKETS);
    assert!(buf.is_empty());
    n
}

/// Decoding a PUBLISH (3.1.1 and 5.0 without properties, QoS 0 and 1) allocates nothing.
///
/// Topic and payload are `Bytes` views of the read buffer, and the properties are empty.
/// The single allocation observed for all 1000 packets is `bytes`' own: the first
/// `BytesMut::split_to` on a buffer still in its plain-`Vec` form moves it to shared,
/// reference-counted storage (one small control block), after which each split is a
/// reference-count increment. So the bound is 1 per buffer, not per packet.
#[test]
fn decoding_publish_allocates_once_per_buffer_not_per_packet() {
    for version in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
            let n = decode_allocations(version, qos);
            println!("{version:?} {qos:?}: {n} allocation(s) for {PACKETS} decoded PUBLISH");
            assert!(
                n <= 1,
                "{version:?} {qos:?}: {n} allocations decoding {PACKETS} PUBLISH packets"
            );
        }
    }
}

/// Encoding a PUBLISH into a buffer that has room for it allocates nothing.
#[test]
fn encoding_publish_into_a_reused_buffer_does_not_allocate() {
    for version in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
            let packet = Packet::Publish(publish(qos));
            let mut buf = BytesMut::with_capacity(1024);
            let n = allocations(|| {
                for _ in 0..PACKETS {
                    buf.clear();
                    black_box(&packet)
                        .encode(&mut buf, version, MAX_PACKET_SIZE)
                        .unwrap();
                }
            });
            assert_eq!(n, 0, "{version:?} {qos:?}: encoding allocated");
        }
    }
}

/// The same count for the peer codecs of `benches/codec.rs`, printed for comparison
/// (`-- --nocapture`); only their decoding of the stream is checked.
#[test]
fn peer_decode_allocations_for_comparison() {
    let payload = Bytes::from(vec![0x5a; 256]);
    let count = |version, decode: &mut dyn FnMut(&mut BytesMut) -> bool| {
        let mut buf = stream(version, QoS::AtLeastOnce);
        let mut decoded = 0;
        let n = allocations(|| {
            while !buf.is_empty() {
                assert!(decode(&mut buf));
                decoded += 1;
            }
        });
        assert_eq!(decoded, PACKETS);
        n
    };
    let rows = [
        (
            "mqtt-proto v3.1.1",
            decode_allocations(ProtocolVersion::V3_1_1, QoS::AtLeastOnce),
        ),
        (
            "mqttbytes v4",
            count(ProtocolVersion::V3_1_1, &mut |b| {
                matches!(mqttbytes::v4::read(b, 1 << 20),
                    Ok(mqttbytes::v4::Packet::Publish(p)) if p.payload == payload)
            }),
        ),
        (
            "rumqttc v4",
            count(ProtocolVersion::V3_1_1, &mut |b| {
                matches!(rumqttc::mqttbytes::v4::Packet::read(b, 1 << 20),
                    Ok(rumqttc::mqttbytes::v4::Packet::Publish(p)) if p.payload == payload)
            }),
        ),
        (
            "mqtt-proto v5",
            decode_allocations(ProtocolVersion::V5, QoS::AtLeastOnce),
        ),
        (
            "mqttbytes v5",
            count(ProtocolVersion::V5, &mut |b| {
                matches!(mqttbytes::v5::read(b, 1 << 20),
                    Ok(mqttbytes::v5::Packet::Publish(p)) if p.payload == payload)
            }),
        ),
        (
            "rumqttc v5",
            count(ProtocolVersion::V5, &mut |b| {
                use rumqttc::v5::mqttbytes::v5::Packet;
                matches!(Packet::read(b, Some(1 << 20)),
                    Ok(Packet::Publish(p)) if p.payload == payload)
            }),
        ),
    ];
    println!("allocations decoding {PACKETS} PUBLISH QoS 1, 256 B payload, from one buffer:");
    for (name, n) in rows {
        println!("  {name:<18} {n:>5}");
    }
}
