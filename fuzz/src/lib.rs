//! The checks behind the `decode` fuzz target, shared with `make-seeds`, which writes
//! seeds in the input format read here and runs every seed through [`run`]. The `session`
//! target's are in [`session`], the `broker` target's in [`broker`], the `config` target's
//! in [`config`].
//!
//! # Input format
//!
//! The first byte is the *selector*, the rest is the byte stream fed to the decoder:
//!
//! | bits | meaning |
//! |------|---------|
//! | 0-1  | decoder: 0 [`Decoder::server`] (no version until a CONNECT), 1 [`Decoder::client`] 3.1, 2 client 3.1.1, 3 client 5.0 |
//! | 2-3  | maximum packet size: 0 [`MAX_PACKET_SIZE`] (unlimited), 1 64 bytes, 2 1024 bytes, 3 16 bytes |
//! | 4-7  | `n`: the second pass feeds the stream in chunks of `n + 1` bytes |
//!
//! Build a selector with [`selector`].

use bytes::BytesMut;
use mqtt_proto::{DecodeError, Decoder, EncodeError, Packet, ProtocolVersion, MAX_PACKET_SIZE};

pub mod broker;
pub mod config;
pub mod session;

/// Selector bits 0-1: a server-side decoder, which learns the version from CONNECT.
pub const SERVER: u8 = 0;
/// Selector bits 0-1: a client-side decoder for MQTT 3.1.
pub const CLIENT_V3_1: u8 = 1;
/// Selector bits 0-1: a client-side decoder for MQTT 3.1.1.
pub const CLIENT_V3_1_1: u8 = 2;
/// Selector bits 0-1: a client-side decoder for MQTT 5.0.
pub const CLIENT_V5: u8 = 3;

/// Maximum packet sizes, indexed by selector bits 2-3.
pub const MAX_SIZES: [u32; 4] = [MAX_PACKET_SIZE, 64, 1024, 16];

/// The selector byte for a decoder (`SERVER`, `CLIENT_*`), an index into [`MAX_SIZES`] and
/// a chunk size of `1..=16` bytes.
pub fn selector(decoder: u8, max_size_index: u8, chunk: u8) -> u8 {
    assert!(decoder < 4 && max_size_index < 4 && (1..=16).contains(&chunk));
    decoder | max_size_index << 2 | (chunk - 1) << 4
}

/// The client-side selector bits for a protocol version.
pub fn client_for(version: ProtocolVersion) -> u8 {
    match version {
        ProtocolVersion::V3_1 => CLIENT_V3_1,
        ProtocolVersion::V3_1_1 => CLIENT_V3_1_1,
        _ => CLIENT_V5,
    }
}

/// The decoder a selector byte picks.
pub fn decoder_for(selector: u8) -> Decoder {
    let decoder = match selector & 3 {
        SERVER => Decoder::server(),
        CLIENT_V3_1 => Decoder::client(ProtocolVersion::V3_1),
        CLIENT_V3_1_1 => Decoder::client(ProtocolVersion::V3_1_1),
        _ => Decoder::client(ProtocolVersion::V5),
    };
    decoder.with_max_packet_size(MAX_SIZES[usize::from(selector >> 2 & 3)])
}

/// The chunk size of the second pass for a selector byte.
pub fn chunk_for(selector: u8) -> usize {
    usize::from(selector >> 4) + 1
}

/// What decoding a stream gave: the packets, then either the error that stopped the
/// decoder or `Ok(n)`, "need more bytes" with `n` bytes left in the buffer.
#[derive(Debug, PartialEq)]
pub struct Outcome {
    /// Packets decoded, in order.
    pub packets: Vec<Packet>,
    /// The error, or the number of bytes left over.
    pub end: Result<usize, DecodeError>,
}

/// Runs every check on one fuzz input. Panics when one fails.
///
/// 1. The stream, all in one buffer, is decoded until `Ok(None)` or an error. Each call
///    consumes at most what it was given and at most the maximum packet size; what is left
///    is exactly the rest of the input. `Ok(None)` and errors leave the buffer and the
///    decoder's version as they were, and decoding again gives the same error. Only a
///    CONNECT changes the version, to its own. Whatever `decode_borrowed` finds at the
///    same point (an acknowledgement or a ping read from a borrowed slice), `decode`
///    returns, taking as many bytes.
/// 2. Every decoded packet goes through [`check_round_trip`].
/// 3. The same stream, fed in chunks, gives the same packets and the same end (a
///    streaming decoder must not depend on how the bytes arrive).
pub fn run(data: &[u8]) {
    let Some((&sel, input)) = data.split_first() else {
        return;
    };
    let decoder = decoder_for(sel);
    let whole = decode_whole(decoder.clone(), input);
    let chunked = decode_chunked(decoder, input, chunk_for(sel));
    assert_eq!(
        whole, chunked,
        "chunked decoding differs from decoding all at once"
    );
}

/// Decodes `input` from one buffer, checking each call; see [`run`].
pub fn decode_whole(mut decoder: Decoder, input: &[u8]) -> Outcome {
    let max = decoder.max_packet_size() as usize;
    let mut buf = BytesMut::from(input);
    let mut offset = 0;
    let mut packets = Vec::new();
    loop {
        let version = decoder.version();
        // What the borrowed reading finds, `decode` finds too, taking as many bytes.
        let borrowed = decoder.decode_borrowed(&buf);
        match decoder.decode(&mut buf) {
            Ok(Some(packet)) => {
                let used = (input.len() - offset)
                    .checked_sub(buf.len())
                    .expect("decode grew the buffer");
                if let Some((b, n)) = &borrowed {
                    assert_eq!(b, &packet, "decode_borrowed disagrees with decode");
                    assert_eq!(*n, used, "decode_borrowed took another length");
                }
                assert!(used > 0, "a packet was decoded from no bytes");
                assert!(used <= max, "{used}-byte packet over the {max}-byte limit");
                offset += used;
                assert_eq!(&buf[..], &input[offset..], "the rest of the buffer changed");
                match &packet {
                    Packet::Connect(c) => {
                        assert_eq!(decoder.version(), Some(c.protocol_version))
                    }
                    _ => assert_eq!(decoder.version(), version, "version changed"),
                }
                let version = decoder
                    .version()
                    .expect("a packet was decoded without a version");
                check_round_trip(&packet, version, used);
                packets.push(packet);
            }
            Ok(None) => {
                assert!(
                    borrowed.is_none(),
                    "decode_borrowed found a packet decode did not"
                );
                assert_eq!(&buf[..], &input[offset..], "Ok(None) changed the buffer");
                assert_eq!(decoder.version(), version, "Ok(None) changed the version");
                return Outcome {
                    packets,
                    end: Ok(buf.len()),
                };
            }
            Err(e) => {
                assert!(
                    borrowed.is_none(),
                    "decode_borrowed found a packet decode refused"
                );
                assert_eq!(
                    &buf[..],
                    &input[offset..],
                    "an error changed the buffer: {e:?}"
                );
                assert_eq!(decoder.version(), version, "an error changed the version");
                let _ = (e.reason_code(), e.connack_refusal(), e.to_string());
                assert_eq!(
                    decoder.decode(&mut buf),
                    Err(e.clone()),
                    "error not repeatable"
                );
                assert_eq!(&buf[..], &input[offset..]);
                return Outcome {
                    packets,
                    end: Err(e),
                };
            }
        }
    }
}

/// Decodes `input` fed `chunk` bytes at a time, draining the buffer after each chunk.
pub fn decode_chunked(mut decoder: Decoder, input: &[u8], chunk: usize) -> Outcome {
    let mut buf = BytesMut::new();
    let mut packets = Vec::new();
    for piece in input.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            let len = buf.len();
            match decoder.decode(&mut buf) {
                Ok(Some(packet)) => {
                    assert!(buf.len() < len, "a packet was decoded from no bytes");
                    packets.push(packet);
                }
                Ok(None) => {
                    assert_eq!(buf.len(), len, "Ok(None) changed the buffer");
                    break;
                }
                Err(e) => {
                    assert_eq!(buf.len(), len, "an error changed the buffer");
                    return Outcome {
                        packets,
                        end: Err(e),
                    };
                }
            }
        }
    }
    Outcome {
        packets,
        end: Ok(buf.len()),
    }
}

/// Checks that a packet decoded from `used` bytes with `version` (the decoder's version
/// after the decode: a CONNECT's own) encodes again:
///
/// - `encode(.., version, MAX_PACKET_SIZE)` succeeds and writes `encoded_len(version)`
///   bytes, no more than the `used` bytes it was decoded from (what was accepted under a
///   size limit can be sent under it);
/// - encoding appends to what the buffer holds, and with a limit one byte below the size
///   fails with `PacketTooLarge` and leaves the buffer untouched;
/// - every proper prefix of the encoding decodes to `Ok(None)`, and the whole decodes,
///   with a client decoder of `version`, to an equal packet, consuming all of it.
pub fn check_round_trip(packet: &Packet, version: ProtocolVersion, used: usize) {
    let len = packet.encoded_len(version);
    let mut wire = BytesMut::new();
    let n = match packet.encode(&mut wire, version, MAX_PACKET_SIZE) {
        Ok(n) => n,
        Err(e) => panic!("a decoded packet does not encode in {version}: {e:?}\n{packet:?}"),
    };
    assert_eq!(n, wire.len(), "encode returned a wrong length");
    assert_eq!(n, len, "encoded_len disagrees with encode");
    assert!(
        n <= used,
        "re-encoding takes {n} bytes, the input took {used}"
    );

    let mut appended = BytesMut::from(&b"prefix"[..]);
    assert_eq!(
        packet.encode(&mut appended, version, MAX_PACKET_SIZE),
        Ok(n)
    );
    assert_eq!(&appended[..6], b"prefix");
    assert_eq!(&appended[6..], &wire[..], "encode is not deterministic");

    let limit = u32::try_from(n - 1).expect("packet larger than u32");
    let mut untouched = BytesMut::from(&b"prefix"[..]);
    match packet.encode(&mut untouched, version, limit) {
        Err(EncodeError::PacketTooLarge { size, max }) => {
            assert_eq!((size, max), (n, limit), "PacketTooLarge with wrong numbers")
        }
        other => panic!("encode over the limit gave {other:?}"),
    }
    assert_eq!(
        &untouched[..],
        b"prefix",
        "a failed encode wrote to the buffer"
    );

    let decoder = Decoder::client(version);
    let mut prefix = wire.clone();
    for k in (0..n).rev() {
        prefix.truncate(k);
        assert_eq!(
            decoder.clone().decode(&mut prefix),
            Ok(None),
            "a {k}-byte prefix of a {n}-byte encoding is not incomplete"
        );
        assert_eq!(prefix.len(), k);
    }

    let mut again = wire.clone();
    match decoder.clone().decode(&mut again) {
        Ok(Some(decoded)) => {
            assert!(again.is_empty(), "bytes left after decoding the encoding");
            assert_eq!(&decoded, packet, "the encoding decodes to another packet");
        }
        other => panic!(
            "the encoding of {packet:?} in {version} does not decode: {other:?}\n{:02x?}",
            &wire[..]
        ),
    }
}
