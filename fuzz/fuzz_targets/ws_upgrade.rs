//! Arbitrary bytes as the request head a WebSocket listener reads from a
//! TCP peer, into `upgrade::check_request`.
//!
//! Checks: nothing panics; an upgrade comes only from a complete head of
//! at most MAX_REQUEST_HEAD bytes with nothing after it, and is answered
//! with a 101; every refusal is answered with a 4xx and its body length.
#![no_main]

use knotwork_transport_ws::upgrade::{MAX_REQUEST_HEAD, check_request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match check_request(data, "knot") {
        Ok(Some(up)) => {
            assert!(data.len() <= MAX_REQUEST_HEAD && data.ends_with(b"\n"));
            assert!(up.response().starts_with("HTTP/1.1 101 "));
        }
        Ok(None) => assert!(data.len() < MAX_REQUEST_HEAD),
        Err(refusal) => {
            let (code, _) = refusal.status();
            assert!((400..500).contains(&code));
            let text = refusal.response();
            let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
            assert!(head.contains(&format!("Content-Length: {}", body.len())));
        }
    }
});
