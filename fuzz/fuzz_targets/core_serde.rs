//! Arbitrary bytes into the serde of `PeerId` and `PeerAddr` as a peer's
//! message carries them (postcard, through `knotwork_wire::decode`): the
//! text forms are parsed from bytes the peer chose.
//!
//! Checks: nothing panics; a decoded message re-encodes and decodes to
//! itself, and each field's text parses back to the same value.
#![no_main]

use knotwork_core::{PeerAddr, PeerId};
use knotwork_wire::{Message, decode, encode};
use libfuzzer_sys::fuzz_target;
use serde::{Deserialize, Serialize};

/// A message an application might send: who it is and where to answer.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Hello {
    from: PeerId,
    reply_to: Vec<PeerAddr>,
}

impl Message for Hello {
    const NAME: &'static str = "fuzz/hello/1";
    // from: 1 + 44; reply_to: 1 + 8 × (2 + 160).
    const MAX_BYTES: usize = 45 + 1 + 8 * 162;
}

fuzz_target!(|data: &[u8]| {
    let Ok(hello) = decode::<Hello>(data) else {
        return;
    };
    let again = encode(&hello).expect("a decoded message re-encodes");
    assert_eq!(decode::<Hello>(&again).expect("re-encoded bytes decode"), hello);
    assert_eq!(hello.from.to_string().parse::<PeerId>().expect("parses"), hello.from);
    for a in &hello.reply_to {
        assert_eq!(&a.to_string().parse::<PeerAddr>().expect("parses"), a);
    }
});
