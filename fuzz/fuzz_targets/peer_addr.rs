//! Arbitrary text as a peer's address (listen and observed addresses arrive
//! as text in the Version message), through the `PeerAddr` and `DialAddr`
//! parsers.
//!
//! Checks: nothing panics; an accepted address prints within the text
//! limit and its text parses back to the same address.
#![no_main]

use knotwork_core::{DialAddr, MAX_ADDR_TEXT_LEN, MAX_DIAL_ADDR_TEXT_LEN, PeerAddr};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(addr) = text.parse::<PeerAddr>() {
        let again = addr.to_string();
        assert!(again.len() <= MAX_ADDR_TEXT_LEN);
        assert_eq!(again.parse::<PeerAddr>(), Ok(addr));
    }
    if let Ok(dial) = text.parse::<DialAddr>() {
        let again = dial.to_string();
        assert!(again.len() <= MAX_DIAL_ADDR_TEXT_LEN);
        assert_eq!(again.parse::<DialAddr>(), Ok(dial));
    }
});
