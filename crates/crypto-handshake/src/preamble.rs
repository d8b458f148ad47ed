//! The preamble: the first bytes of a connection, sent in clear, naming the
//! protocol version, the Noise pattern and the cipher suite.
//!
//! # Format
//! ```text
//! initiator -> responder (8 bytes): b"KNTW" | version u8 | pattern u8 | suite u8 | 0u8
//! responder -> initiator (8 bytes): b"KNTW" | version u8 | pattern u8 | suite u8 | status u8
//! ```
//! The initiator's 8 bytes are the Noise prologue, so a preamble rewritten
//! on the way makes the handshake fail. The responder's reply echoes what it
//! received (or says why it refuses, in `status`) so that such a rewrite is
//! reported by name ([`HandshakeError::SuiteDowngrade`],
//! [`HandshakeError::VersionMismatch`]) rather than as a bare decryption
//! failure.

use crate::HandshakeError;

/// Magic bytes opening every knotwork Noise connection.
pub const MAGIC: [u8; 4] = *b"KNTW";
/// The protocol version this crate speaks.
pub const VERSION: u8 = 1;
/// Length of the preamble and of the reply, in bytes.
pub const PREAMBLE_LEN: usize = 8;

/// A Noise cipher suite (DH is always 25519, hash always SHA-256).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Suite {
    /// `Noise_*_25519_ChaChaPoly_SHA256`.
    ChaChaPoly,
    /// `Noise_*_25519_AESGCM_SHA256`.
    AesGcm,
}

impl Suite {
    /// Both suites; every peer accepts either.
    pub const ALL: [Suite; 2] = [Suite::ChaChaPoly, Suite::AesGcm];

    /// The suite this machine runs fastest: AES-GCM when the CPU has AES
    /// instructions, ChaCha20-Poly1305 otherwise.
    pub fn preferred() -> Suite {
        if aes_accelerated() {
            Suite::AesGcm
        } else {
            Suite::ChaChaPoly
        }
    }

    /// The byte naming this suite in the preamble.
    pub fn to_byte(self) -> u8 {
        match self {
            Suite::ChaChaPoly => 1,
            Suite::AesGcm => 2,
        }
    }

    /// The suite named by `b`.
    pub fn from_byte(b: u8) -> Result<Suite, HandshakeError> {
        match b {
            1 => Ok(Suite::ChaChaPoly),
            2 => Ok(Suite::AesGcm),
            other => Err(HandshakeError::UnsupportedSuite(other)),
        }
    }

    pub(crate) fn noise_name(self) -> &'static str {
        match self {
            Suite::ChaChaPoly => "ChaChaPoly",
            Suite::AesGcm => "AESGCM",
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn aes_accelerated() -> bool {
    std::arch::is_x86_feature_detected!("aes") && std::arch::is_x86_feature_detected!("pclmulqdq")
}

#[cfg(target_arch = "aarch64")]
fn aes_accelerated() -> bool {
    std::arch::is_aarch64_feature_detected!("aes")
        && std::arch::is_aarch64_feature_detected!("pmull")
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn aes_accelerated() -> bool {
    false
}

/// A Noise handshake pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pattern {
    /// XX: both static keys sent encrypted; nothing known in advance.
    Xx,
    /// IK: the initiator already knows the responder's static key.
    Ik,
}

impl Pattern {
    /// The byte naming this pattern in the preamble.
    pub fn to_byte(self) -> u8 {
        match self {
            Pattern::Xx => 1,
            Pattern::Ik => 2,
        }
    }

    /// The pattern named by `b`.
    pub fn from_byte(b: u8) -> Result<Pattern, HandshakeError> {
        match b {
            1 => Ok(Pattern::Xx),
            2 => Ok(Pattern::Ik),
            other => Err(HandshakeError::UnsupportedPattern(other)),
        }
    }

    pub(crate) fn noise_name(self) -> &'static str {
        match self {
            Pattern::Xx => "XX",
            Pattern::Ik => "IK",
        }
    }
}

/// The full Noise protocol name for `pattern` and `suite`.
pub fn noise_params(pattern: Pattern, suite: Suite) -> String {
    format!(
        "Noise_{}_25519_{}_SHA256",
        pattern.noise_name(),
        suite.noise_name()
    )
}

/// The responder's verdict on the initiator's preamble.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// Accepted; the handshake continues.
    Ok,
    /// The version is not ours.
    VersionMismatch,
    /// The suite or pattern byte is unknown.
    Unsupported,
    /// IK message 1 did not decrypt with our static key: redial with XX.
    IkRejected,
}

impl Status {
    fn to_byte(self) -> u8 {
        match self {
            Status::Ok => 0,
            Status::VersionMismatch => 1,
            Status::Unsupported => 2,
            Status::IkRejected => 3,
        }
    }

    fn from_byte(b: u8) -> Result<Status, HandshakeError> {
        match b {
            0 => Ok(Status::Ok),
            1 => Ok(Status::VersionMismatch),
            2 => Ok(Status::Unsupported),
            3 => Ok(Status::IkRejected),
            _ => Err(HandshakeError::BadPreamble),
        }
    }
}

/// The initiator's preamble, as sent (and bound into the prologue).
pub(crate) fn encode(version: u8, pattern: Pattern, suite: Suite) -> [u8; PREAMBLE_LEN] {
    let [m0, m1, m2, m3] = MAGIC;
    [
        m0,
        m1,
        m2,
        m3,
        version,
        pattern.to_byte(),
        suite.to_byte(),
        0,
    ]
}

/// The raw fields of a preamble or reply, checked for magic only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RawPreamble {
    pub(crate) version: u8,
    pub(crate) pattern: u8,
    pub(crate) suite: u8,
    pub(crate) last: u8,
}

pub(crate) fn decode_raw(bytes: &[u8; PREAMBLE_LEN]) -> Result<RawPreamble, HandshakeError> {
    let [m0, m1, m2, m3, version, pattern, suite, last] = *bytes;
    if [m0, m1, m2, m3] != MAGIC {
        return Err(HandshakeError::NotAHandshake);
    }
    Ok(RawPreamble {
        version,
        pattern,
        suite,
        last,
    })
}

/// The responder's reply to a raw preamble.
pub(crate) fn encode_reply(raw: &RawPreamble, status: Status) -> [u8; PREAMBLE_LEN] {
    let [m0, m1, m2, m3] = MAGIC;
    [
        m0,
        m1,
        m2,
        m3,
        VERSION,
        raw.pattern,
        raw.suite,
        status.to_byte(),
    ]
}

/// What the initiator learns from the reply, checked against what it sent.
pub(crate) fn check_reply(
    reply: &[u8; PREAMBLE_LEN],
    pattern: Pattern,
    suite: Suite,
) -> Result<(), HandshakeError> {
    let raw = decode_raw(reply)?;
    let status = Status::from_byte(raw.last)?;
    if raw.version != VERSION || status == Status::VersionMismatch {
        return Err(HandshakeError::VersionMismatch {
            ours: VERSION,
            theirs: raw.version,
        });
    }
    let seen = Suite::from_byte(raw.suite)?;
    if seen != suite {
        return Err(HandshakeError::SuiteDowngrade { sent: suite, seen });
    }
    if Pattern::from_byte(raw.pattern)? != pattern {
        return Err(HandshakeError::BadPreamble);
    }
    match status {
        Status::Ok => Ok(()),
        Status::IkRejected => Err(HandshakeError::IkRejected),
        Status::Unsupported => Err(HandshakeError::UnsupportedSuite(raw.suite)),
        Status::VersionMismatch => Err(HandshakeError::VersionMismatch {
            ours: VERSION,
            theirs: raw.version,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preamble_fields_round_trip() {
        for pattern in [Pattern::Xx, Pattern::Ik] {
            for suite in Suite::ALL {
                let bytes = encode(VERSION, pattern, suite);
                let raw = decode_raw(&bytes).unwrap();
                assert_eq!(Pattern::from_byte(raw.pattern).unwrap(), pattern);
                assert_eq!(Suite::from_byte(raw.suite).unwrap(), suite);
                let reply = encode_reply(&raw, Status::Ok);
                check_reply(&reply, pattern, suite).unwrap();
            }
        }
    }

    #[test]
    fn bad_magic_is_not_a_handshake() {
        let err = decode_raw(b"GET / HT").unwrap_err();
        assert!(matches!(err, HandshakeError::NotAHandshake));
    }

    #[test]
    fn unknown_suite_and_pattern_are_named() {
        assert!(matches!(
            Suite::from_byte(9),
            Err(HandshakeError::UnsupportedSuite(9))
        ));
        assert!(matches!(
            Pattern::from_byte(0),
            Err(HandshakeError::UnsupportedPattern(0))
        ));
    }

    #[test]
    fn reply_with_other_suite_is_a_downgrade() {
        let sent = encode(VERSION, Pattern::Xx, Suite::AesGcm);
        let mut raw = decode_raw(&sent).unwrap();
        raw.suite = Suite::ChaChaPoly.to_byte();
        let reply = encode_reply(&raw, Status::Ok);
        assert!(matches!(
            check_reply(&reply, Pattern::Xx, Suite::AesGcm),
            Err(HandshakeError::SuiteDowngrade {
                sent: Suite::AesGcm,
                seen: Suite::ChaChaPoly
            })
        ));
    }

    #[test]
    fn noise_names() {
        assert_eq!(
            noise_params(Pattern::Xx, Suite::AesGcm),
            "Noise_XX_25519_AESGCM_SHA256"
        );
        assert_eq!(
            noise_params(Pattern::Ik, Suite::ChaChaPoly),
            "Noise_IK_25519_ChaChaPoly_SHA256"
        );
    }
}
