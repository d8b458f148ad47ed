//! knotwork-crypto-handshake: Noise XX/IK handshake bound to the Ed25519 identity and the SecureStream.
//!
//! **Not implemented yet.** This crate is a placeholder in the workspace
//! layout; it exports nothing. The work is tracked in issue 3.
