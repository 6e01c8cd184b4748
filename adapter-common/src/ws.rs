//! MQTT over WebSocket, the parts every adapter shares: the server handshake's rules
//! (the path must match, the `mqtt` subprotocol is echoed), and the framing of a server's
//! binary and close frames for writers that write frames themselves.
//!
//! Binary frames carry the MQTT byte stream: packets may span frames, and a frame may
//! hold many packets. Text frames are not MQTT ([MQTT-6.0.0-1]).

use tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tungstenite::http;

/// The handshake callback for a listener on `path` (`*`: any path): a request for
/// another path gets 404; when the client offers the `mqtt` subprotocol it is echoed.
/// Works with `tungstenite::accept_hdr`, `tokio_tungstenite::accept_hdr_async` and
/// `async_tungstenite::accept_hdr_async`.
// The callback's error type is tungstenite's.
#[allow(clippy::result_large_err)]
pub fn handshake(
    path: &str,
) -> impl FnOnce(&Request, Response) -> Result<Response, ErrorResponse> + Send + Unpin + 'static {
    let path = path.to_string();
    move |req: &Request, mut resp: Response| {
        if path != "*" && req.uri().path() != path {
            let mut r =
                ErrorResponse::new(Some(format!("no MQTT endpoint at {}", req.uri().path())));
            *r.status_mut() = http::StatusCode::NOT_FOUND;
            return Err(r);
        }
        if offers_mqtt(req.headers()) {
            resp.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                http::HeaderValue::from_static("mqtt"),
            );
        }
        Ok(resp)
    }
}

/// Whether the headers offer the `mqtt` subprotocol.
pub fn offers_mqtt(headers: &http::HeaderMap) -> bool {
    headers
        .get_all("Sec-WebSocket-Protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("mqtt"))
}

/// Appends the header of an unmasked (server to client) final binary frame of `len`
/// bytes; the payload follows it.
pub fn binary_header(len: usize, out: &mut Vec<u8>) {
    out.push(0x82);
    if len < 126 {
        out.push(len as u8);
    } else if len <= u16::MAX as usize {
        out.push(126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
}

/// An unmasked close frame with status 1000 (normal closure).
pub const CLOSE_FRAME: [u8; 4] = [0x88, 0x02, 0x03, 0xE8];

#[cfg(test)]
mod tests {
    use super::*;
    use tungstenite::protocol::frame::FrameHeader;

    #[test]
    fn headers_decode_as_tungstenite_reads_them() {
        for len in [0usize, 1, 125, 126, 127, 65535, 65536, 1 << 20] {
            let mut out = vec![];
            binary_header(len, &mut out);
            let mut cursor = std::io::Cursor::new(out.as_slice());
            let (h, n) = FrameHeader::parse(&mut cursor).unwrap().unwrap();
            assert_eq!(n, len as u64);
            assert!(h.is_final);
            assert!(h.mask.is_none());
            assert_eq!(cursor.position() as usize, out.len());
        }
        let mut cursor = std::io::Cursor::new(&CLOSE_FRAME[..]);
        let (h, n) = FrameHeader::parse(&mut cursor).unwrap().unwrap();
        assert_eq!(n, 2);
        assert_eq!(
            h.opcode,
            tungstenite::protocol::frame::coding::OpCode::Control(
                tungstenite::protocol::frame::coding::Control::Close
            )
        );
    }
}
