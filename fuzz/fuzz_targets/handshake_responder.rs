//! Arbitrary bytes fed to a handshake responder, in chunks.
//!
//! Input layout: byte 0 is the chunk size (0: everything at once), the rest
//! is what the "initiator" sends. Checks: nothing panics; `read_input` never
//! claims more bytes than it was given; no input completes the handshake
//! (message 3 / the IK confirmation need the responder's fresh ephemeral
//! key, which no recorded or forged input has).
#![no_main]

use std::sync::OnceLock;

use knotwork_core::Keypair;
use knotwork_crypto_handshake::{Handshake, StaticIdentity};
use libfuzzer_sys::fuzz_target;

fn identity() -> &'static StaticIdentity {
    static ID: OnceLock<StaticIdentity> = OnceLock::new();
    ID.get_or_init(|| {
        let kp = Keypair::generate().expect("keypair");
        StaticIdentity::generate(kp).expect("static identity")
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, stream)) = data.split_first() else {
        return;
    };
    let chunk = if chunk == 0 {
        stream.len().max(1)
    } else {
        usize::from(chunk)
    };
    let mut r = Handshake::responder(identity());
    for part in stream.chunks(chunk) {
        match r.read_input(part) {
            Ok(n) => assert!(n <= part.len()),
            Err(_) => break,
        }
        let _ = r.take_output();
    }
    assert!(!r.is_finished());
});
