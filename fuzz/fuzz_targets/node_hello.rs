//! Arbitrary bytes as a peer's early data in the Noise handshake: the
//! node's hello (one frame, a `Version` or a `Disconnect`).
//!
//! Checks: nothing panics; an accepted version re-encodes as a hello and
//! reads back to itself.
#![no_main]

use knotwork_node::version::Hello;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(version) = Hello::version_in(data) {
        let again = Hello::Version(version.clone())
            .to_bytes()
            .expect("a read version re-encodes");
        assert_eq!(Hello::version_in(&again).expect("reads back"), version);
    }
});
