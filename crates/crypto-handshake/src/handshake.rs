//! [`Handshake`]: the sans-IO handshake state machine.
//!
//! # Messages
//! Every Noise message travels as a frame: a 2-byte big-endian length, then
//! the message. Handshake messages are at most [`MAX_HANDSHAKE_MESSAGE`]
//! bytes.
//! ```text
//! XX:  I -> R  preamble | frame(e)
//!      R -> I  reply    | frame(e, ee, s, es, payload_R)
//!      I -> R  frame(s, se, payload_I)
//! IK:  I -> R  preamble | frame(e, es, s, ss, payload_I)
//!      R -> I  reply    | frame(e, ee, se, payload_R)
//!      I -> R  frame(transport message: early_I, empty if none)
//! ```
//! `payload_*` is the [identity payload](crate::payload), followed by the
//! sender's early data if it has any ([`Handshake::with_early_data`]): the
//! responder's in its message 2, the XX initiator's in its message 3. The IK
//! initiator's message 1 carries the identity payload alone (it can be
//! replayed); its early data is the plaintext of the key confirmation.
//! Each side's early data is encrypted, and sent only once the keys bind
//! it to this handshake; a peer without early data sends none, so peers
//! that never use it (other Noise implementations) interoperate unchanged.
//!
//! IK message 1 can be replayed by anyone who recorded it, so the IK
//! responder does not finish until the initiator proves it holds the
//! session keys with a third message, a transport message (key
//! confirmation, its plaintext the initiator's early data); a replayed IK
//! message 1 thus never completes, like a replayed XX message 1.
//!
//! # Driving it
//! - [`Handshake::read_input`] with the bytes received; it consumes only what
//!   the handshake needs and returns how many bytes it took: bytes after the
//!   last handshake message belong to the transport.
//! - [`Handshake::take_output`] after every call, and send what it returns.
//! - [`Handshake::is_finished`], then [`Handshake::finish`] for the peer id
//!   and the transport keys.
//!
//! Errors are final: after one, the machine refuses further input with
//! [`HandshakeError::OutOfOrder`], but [`Handshake::take_output`] may still
//! hold a reply that tells the peer why (version, suite, IK rejected); send
//! it before closing.

use std::sync::Arc;

use knotwork_core::{Keypair, PeerId};

use crate::cipher::{CipherState, KEY_LEN, TAG_LEN};
use crate::payload::{self, STATIC_KEY_LEN};
use crate::preamble::{self, PREAMBLE_LEN, Pattern, Status, Suite, VERSION};
use crate::resolver::{KeyPair, Resolver};
use crate::{HandshakeError, KnownPeers};

/// The most early data a side may send ([`Handshake::with_early_data`]).
pub const MAX_EARLY_DATA: usize = 8 * 1024;
/// The largest handshake message accepted: the longest we send without
/// early data is 224 bytes; with it, at most [`MAX_EARLY_DATA`] more.
pub const MAX_HANDSHAKE_MESSAGE: usize = 1024 + MAX_EARLY_DATA;
/// Length of the frame length prefix.
pub const LEN_PREFIX: usize = 2;

/// Chooses early data given the peer, if known ([`EarlyData::Chosen`]).
pub type ChooseEarlyData = Box<dyn FnOnce(Option<&PeerId>) -> Vec<u8> + Send>;

/// What a side sends as early data ([`Handshake::with_early_data`]).
pub enum EarlyData {
    /// These bytes, whoever the peer is.
    Bytes(Vec<u8>),
    /// Bytes chosen just before they are sent, given the peer if the
    /// handshake has authenticated it by then: always for an initiator
    /// (it sends its early data after the responder's identity), for an
    /// IK responder (the dialer's identity is in message 1), never for an
    /// XX responder (`None`). So a dialer can decline, inside the
    /// handshake, a peer it finds it is already connected to or has
    /// banned. Over [`MAX_EARLY_DATA`] bytes fails the handshake with
    /// [`HandshakeError::EarlyDataTooLarge`].
    Chosen(ChooseEarlyData),
}

impl EarlyData {
    /// Early data chosen by `choose` once the peer is known (see
    /// [`EarlyData::Chosen`]).
    pub fn chosen(choose: impl FnOnce(Option<&PeerId>) -> Vec<u8> + Send + 'static) -> Self {
        Self::Chosen(Box::new(choose))
    }

    /// The bytes to send to `peer`, checked against [`MAX_EARLY_DATA`].
    fn resolve(self, peer: Option<&PeerId>) -> Result<Vec<u8>, HandshakeError> {
        let data = match self {
            Self::Bytes(data) => data,
            Self::Chosen(choose) => choose(peer),
        };
        check_early_len(data.len())?;
        Ok(data)
    }
}

impl From<Vec<u8>> for EarlyData {
    fn from(data: Vec<u8>) -> Self {
        Self::Bytes(data)
    }
}

impl std::fmt::Debug for EarlyData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Bytes(data) => f.debug_tuple("Bytes").field(&data.len()).finish(),
            Self::Chosen(_) => f.write_str("Chosen"),
        }
    }
}

fn check_early_len(len: usize) -> Result<(), HandshakeError> {
    if len > MAX_EARLY_DATA {
        return Err(HandshakeError::EarlyDataTooLarge {
            len,
            max: MAX_EARLY_DATA,
        });
    }
    Ok(())
}

/// The long-term keys a node handshakes with: its Ed25519 identity, an
/// X25519 Noise static key pair and the identity payload binding the two.
#[derive(Clone)]
pub struct StaticIdentity {
    identity: Keypair,
    static_key: KeyPair,
    payload: Vec<u8>,
}

impl std::fmt::Debug for StaticIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticIdentity")
            .field("peer_id", &self.identity.peer_id())
            .finish_non_exhaustive()
    }
}

fn noise_err(e: snow::Error) -> HandshakeError {
    match e {
        snow::Error::Decrypt => HandshakeError::HandshakeDecrypt,
        snow::Error::Input | snow::Error::Dh => HandshakeError::MalformedMessage,
        other => HandshakeError::Noise(other.to_string()),
    }
}

/// A snow builder for `pattern` and `suite` with our static key pair (see
/// [`crate::resolver`]), and the ephemeral key fixed if `ephemeral` is
/// given (see [`Overrides`]).
fn builder<'a>(
    pattern: Pattern,
    suite: Suite,
    static_key: &'a KeyPair,
    ephemeral: Option<&'a [u8; STATIC_KEY_LEN]>,
) -> Result<snow::Builder<'a>, HandshakeError> {
    let params: snow::params::NoiseParams = preamble::noise_params(pattern, suite)
        .parse()
        .map_err(noise_err)?;
    let b = snow::Builder::with_resolver(params, Box::new(Resolver::new(Some(static_key.clone()))))
        .local_private_key(&static_key.private)
        .map_err(noise_err)?;
    Ok(match ephemeral {
        Some(e) => b.fixed_ephemeral_key_for_testing_only(e),
        None => b,
    })
}

/// What tests fix that a real handshake leaves alone: the protocol version
/// announced (the version-mismatch tests) and the ephemeral private key
/// (the spec's test vectors, which need the same bytes on every run). Real
/// handshakes use [`Overrides::NONE`]: version [`VERSION`], a fresh random
/// ephemeral key.
#[derive(Clone, Copy)]
struct Overrides {
    version: u8,
    ephemeral: Option<[u8; STATIC_KEY_LEN]>,
}

impl Overrides {
    const NONE: Self = Self {
        version: VERSION,
        ephemeral: None,
    };
}

fn key32(bytes: &[u8]) -> Result<[u8; STATIC_KEY_LEN], HandshakeError> {
    bytes
        .try_into()
        .map_err(|_| HandshakeError::MalformedMessage)
}

impl StaticIdentity {
    /// A fresh random X25519 static key bound to `identity`.
    pub fn generate(identity: Keypair) -> Result<Self, HandshakeError> {
        Ok(Self::with_static_key(identity, KeyPair::generate()?))
    }

    /// `static_key` bound to `identity`.
    fn with_static_key(identity: Keypair, static_key: KeyPair) -> Self {
        let payload = payload::make(&identity, &static_key.public);
        Self {
            identity,
            static_key,
            payload,
        }
    }

    /// The Ed25519 identity.
    pub fn keypair(&self) -> &Keypair {
        &self.identity
    }

    /// Our peer id.
    pub fn peer_id(&self) -> PeerId {
        self.identity.peer_id()
    }

    /// The X25519 static public key (what peers cache to dial us with IK).
    pub fn static_public(&self) -> &[u8; STATIC_KEY_LEN] {
        &self.static_key.public
    }
}

/// A finished handshake: who the peer is and the two transport directions.
#[derive(Debug)]
pub struct Established {
    /// The authenticated remote peer.
    pub remote: PeerId,
    /// The remote X25519 static key (cache it to dial with IK next time).
    pub remote_static: [u8; STATIC_KEY_LEN],
    /// The negotiated suite.
    pub suite: Suite,
    /// The pattern used.
    pub pattern: Pattern,
    /// Encrypts what we send.
    pub send: CipherState,
    /// Decrypts what we receive.
    pub recv: CipherState,
    /// The early data the peer sent with its identity (empty if none; see
    /// [`Handshake::with_early_data`]).
    pub early_data: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Initiator,
    Responder,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Responder: waiting for the initiator's preamble.
    Preamble,
    /// Initiator: waiting for the responder's reply.
    Reply,
    /// Waiting for the next Noise handshake message.
    Message,
    /// IK responder: waiting for the initiator's key confirmation.
    Confirm,
    Done,
    Failed,
}

/// The sans-IO handshake state machine; see the module docs for the
/// polling contract.
pub struct Handshake {
    role: Role,
    step: Step,
    pattern: Pattern,
    suite: Suite,
    noise: Option<snow::HandshakeState>,
    static_key: KeyPair,
    payload: Vec<u8>,
    /// Our early data, sent after our identity payload.
    early: EarlyData,
    /// The peer's early data.
    remote_early: Vec<u8>,
    expected: Option<PeerId>,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    remote: Option<(PeerId, [u8; STATIC_KEY_LEN])>,
    ciphers: Option<(CipherState, CipherState)>,
    /// Responder: the accepted preamble, echoed in the reply.
    accepted: Option<preamble::RawPreamble>,
    /// Noise messages read so far.
    received: u8,
    /// Identity payloads already checked (see [`Handshake::with_known_peers`]).
    checked: Option<Arc<KnownPeers>>,
    /// The ephemeral key a test fixed (see [`Overrides`]); `None` when real.
    ephemeral: Option<[u8; STATIC_KEY_LEN]>,
}

impl std::fmt::Debug for Handshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handshake")
            .field("role", &self.role)
            .field("step", &self.step)
            .field("pattern", &self.pattern)
            .field("suite", &self.suite)
            .finish_non_exhaustive()
    }
}

fn push_frame(out: &mut Vec<u8>, msg: &[u8]) -> Result<(), HandshakeError> {
    let len = u16::try_from(msg.len()).map_err(|_| HandshakeError::FrameTooLarge {
        len: msg.len(),
        max: usize::from(u16::MAX),
    })?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(msg);
    Ok(())
}

/// The most a Noise handshake message adds to its payload: two public
/// keys (one encrypted) and two AEAD tags.
const NOISE_OVERHEAD: usize = 2 * STATIC_KEY_LEN + 2 * TAG_LEN;

/// Appends to `out` the next Noise message carrying `payload`, framed,
/// written in place (no buffer of its own).
fn push_noise(
    out: &mut Vec<u8>,
    noise: &mut snow::HandshakeState,
    payload: &[u8],
) -> Result<(), HandshakeError> {
    let start = out.len();
    out.resize(start + LEN_PREFIX + payload.len() + NOISE_OVERHEAD, 0);
    let written = noise
        .write_message(
            payload,
            out.get_mut(start + LEN_PREFIX..).unwrap_or_default(),
        )
        .map_err(noise_err)
        .and_then(|n| {
            let len = u16::try_from(n).map_err(|_| HandshakeError::FrameTooLarge {
                len: n,
                max: usize::from(u16::MAX),
            })?;
            Ok((n, len))
        });
    match written {
        Ok((n, len)) => {
            out.truncate(start + LEN_PREFIX + n);
            if let Some(prefix) = out.get_mut(start..start + LEN_PREFIX) {
                prefix.copy_from_slice(&len.to_be_bytes());
            }
            Ok(())
        }
        Err(e) => {
            out.truncate(start);
            Err(e)
        }
    }
}

impl Handshake {
    fn new(role: Role, step: Step, pattern: Pattern, suite: Suite, local: &StaticIdentity) -> Self {
        Self {
            role,
            step,
            pattern,
            suite,
            noise: None,
            static_key: local.static_key.clone(),
            payload: local.payload.clone(),
            early: EarlyData::Bytes(Vec::new()),
            remote_early: Vec::new(),
            expected: None,
            inbuf: Vec::new(),
            out: Vec::new(),
            remote: None,
            ciphers: None,
            accepted: None,
            received: 0,
            checked: None,
            ephemeral: None,
        }
    }

    /// Lets the handshake skip the Ed25519 check of a peer's identity
    /// payload that `known` has seen checked before, byte for byte, and
    /// record the ones it checks (see [`KnownPeers`]). The payload must
    /// still name the Noise static key this handshake authenticated.
    pub fn with_known_peers(mut self, known: Arc<KnownPeers>) -> Self {
        self.checked = Some(known);
        self
    }

    /// Sends `data` to the peer within the handshake, encrypted, right
    /// after our identity payload: a responder's in message 2 (set it
    /// before the first input), an initiator's in its last message. The
    /// peer finds it in [`Established::early_data`]. What a protocol on top
    /// would send first (a version, a hello) then costs no round trip of
    /// its own. `data` may be chosen once the peer is known
    /// ([`EarlyData::Chosen`]). Errors: [`HandshakeError::EarlyDataTooLarge`]
    /// over [`MAX_EARLY_DATA`] bytes, [`HandshakeError::OutOfOrder`] once the
    /// message that carries it is written.
    pub fn with_early_data(mut self, data: impl Into<EarlyData>) -> Result<Self, HandshakeError> {
        let data = data.into();
        if let EarlyData::Bytes(bytes) = &data {
            check_early_len(bytes.len())?;
        }
        let written = match self.role {
            Role::Responder => self.step != Step::Preamble,
            Role::Initiator => matches!(self.step, Step::Done | Step::Failed),
        };
        if written {
            return Err(HandshakeError::OutOfOrder);
        }
        self.early = data;
        Ok(self)
    }

    /// Our early data, chosen now if it waited for the peer.
    fn our_early(&mut self) -> Result<Vec<u8>, HandshakeError> {
        let early = std::mem::replace(&mut self.early, EarlyData::Bytes(Vec::new()));
        early.resolve(self.remote.as_ref().map(|(peer, _)| peer))
    }

    /// An XX initiator proposing `suite`; with `expected`, the handshake
    /// fails with [`HandshakeError::PeerIdMismatch`] unless that peer answers.
    pub fn xx_initiator(
        local: &StaticIdentity,
        suite: Suite,
        expected: Option<PeerId>,
    ) -> Result<Self, HandshakeError> {
        Self::initiator(local, Pattern::Xx, suite, expected, None, Overrides::NONE)
    }

    /// An IK initiator that knows `expected`'s static key `remote_static`.
    pub fn ik_initiator(
        local: &StaticIdentity,
        suite: Suite,
        expected: PeerId,
        remote_static: &[u8; STATIC_KEY_LEN],
    ) -> Result<Self, HandshakeError> {
        Self::initiator(
            local,
            Pattern::Ik,
            suite,
            Some(expected),
            Some(remote_static),
            Overrides::NONE,
        )
    }

    /// An initiator; `overrides` is [`Overrides::NONE`] except in tests.
    fn initiator(
        local: &StaticIdentity,
        pattern: Pattern,
        suite: Suite,
        expected: Option<PeerId>,
        remote_static: Option<&[u8; STATIC_KEY_LEN]>,
        overrides: Overrides,
    ) -> Result<Self, HandshakeError> {
        let pre = preamble::encode(overrides.version, pattern, suite);
        let mut b = builder(
            pattern,
            suite,
            &local.static_key,
            overrides.ephemeral.as_ref(),
        )?
        .prologue(&pre)
        .map_err(noise_err)?;
        if let Some(rs) = remote_static {
            b = b.remote_public_key(rs).map_err(noise_err)?;
        }
        let mut noise = b.build_initiator().map_err(noise_err)?;
        let mut hs = Self::new(Role::Initiator, Step::Reply, pattern, suite, local);
        hs.expected = expected;
        let first_payload: &[u8] = match pattern {
            Pattern::Xx => &[],
            Pattern::Ik => &hs.payload,
        };
        hs.out.extend_from_slice(&pre);
        push_noise(&mut hs.out, &mut noise, first_payload)?;
        hs.noise = Some(noise);
        Ok(hs)
    }

    /// A responder; it accepts either pattern and either suite.
    pub fn responder(local: &StaticIdentity) -> Self {
        // Pattern and suite are placeholders until the preamble arrives.
        Self::new(
            Role::Responder,
            Step::Preamble,
            Pattern::Xx,
            Suite::ChaChaPoly,
            local,
        )
    }

    /// The negotiated suite (for a responder: known once the preamble is read).
    pub fn suite(&self) -> Suite {
        self.suite
    }

    /// The pattern (for a responder: known once the preamble is read).
    pub fn pattern(&self) -> Pattern {
        self.pattern
    }

    /// True while the machine waits for input.
    pub fn wants_input(&self) -> bool {
        matches!(
            self.step,
            Step::Preamble | Step::Reply | Step::Message | Step::Confirm
        )
    }

    /// True once the handshake completed; call [`Handshake::finish`].
    pub fn is_finished(&self) -> bool {
        self.step == Step::Done
    }

    /// How many more bytes the handshake is sure to take (at least one
    /// while [`Handshake::wants_input`]; 0 otherwise): the rest of the
    /// current item, and for a preamble also the length prefix of the frame
    /// that always follows it (one read instead of two). A driver may read
    /// up to this many bytes and never read past the handshake.
    pub fn bytes_wanted(&self) -> usize {
        if !self.wants_input() {
            return 0;
        }
        let next_prefix = match self.step {
            Step::Preamble | Step::Reply => LEN_PREFIX,
            _ => 0,
        };
        (self.item_len() + next_prefix)
            .saturating_sub(self.inbuf.len())
            .max(1)
    }

    fn item_len(&self) -> usize {
        match self.step {
            Step::Preamble | Step::Reply => PREAMBLE_LEN,
            _ => match self.inbuf.as_slice() {
                [hi, lo, ..] => LEN_PREFIX + usize::from(u16::from_be_bytes([*hi, *lo])),
                _ => LEN_PREFIX,
            },
        }
    }

    /// Bytes to send to the peer now (empty if none).
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// The connection ended: [`HandshakeError::Truncated`] if the handshake
    /// was still waiting for bytes, `Ok` if it had finished.
    pub fn handle_eof(&mut self) -> Result<(), HandshakeError> {
        if self.wants_input() {
            self.step = Step::Failed;
            return Err(HandshakeError::Truncated);
        }
        Ok(())
    }

    /// Feeds received bytes; returns how many were consumed. Never consumes
    /// past the end of the handshake.
    pub fn read_input(&mut self, mut input: &[u8]) -> Result<usize, HandshakeError> {
        if !self.wants_input() {
            return if self.step == Step::Done && input.is_empty() {
                Ok(0)
            } else {
                Err(HandshakeError::OutOfOrder)
            };
        }
        let mut consumed = 0;
        while !input.is_empty() && self.wants_input() {
            let want = self.item_len().saturating_sub(self.inbuf.len());
            let (take, rest) = input.split_at(want.min(input.len()));
            self.inbuf.extend_from_slice(take);
            consumed += take.len();
            input = rest;
            if let Err(e) = self.process_if_complete() {
                self.step = Step::Failed;
                self.inbuf = Vec::new();
                return Err(e);
            }
        }
        Ok(consumed)
    }

    fn process_if_complete(&mut self) -> Result<(), HandshakeError> {
        let framed = !matches!(self.step, Step::Preamble | Step::Reply);
        if framed && self.inbuf.len() == LEN_PREFIX {
            let len = self.item_len() - LEN_PREFIX;
            if len > MAX_HANDSHAKE_MESSAGE {
                return Err(HandshakeError::FrameTooLarge {
                    len,
                    max: MAX_HANDSHAKE_MESSAGE,
                });
            }
        }
        if self.inbuf.len() < self.item_len() {
            return Ok(());
        }
        let item = std::mem::take(&mut self.inbuf);
        match self.step {
            Step::Preamble => self.on_preamble(&item),
            Step::Reply => self.on_reply(&item),
            Step::Message => self.on_message(item.get(LEN_PREFIX..).unwrap_or_default()),
            Step::Confirm => self.on_confirm(item.get(LEN_PREFIX..).unwrap_or_default()),
            Step::Done | Step::Failed => Err(HandshakeError::OutOfOrder),
        }
    }

    fn on_preamble(&mut self, item: &[u8]) -> Result<(), HandshakeError> {
        let bytes: [u8; PREAMBLE_LEN] = item.try_into().map_err(|_| HandshakeError::Truncated)?;
        let raw = preamble::decode_raw(&bytes)?;
        if raw.last != 0 {
            return Err(HandshakeError::BadPreamble);
        }
        if raw.version != VERSION {
            self.out = preamble::encode_reply(&raw, Status::VersionMismatch).to_vec();
            return Err(HandshakeError::VersionMismatch {
                ours: VERSION,
                theirs: raw.version,
            });
        }
        let chosen =
            Pattern::from_byte(raw.pattern).and_then(|p| Ok((p, Suite::from_byte(raw.suite)?)));
        let (pattern, suite) = match chosen {
            Ok(ps) => ps,
            Err(e) => {
                self.out = preamble::encode_reply(&raw, Status::Unsupported).to_vec();
                return Err(e);
            }
        };
        self.pattern = pattern;
        self.suite = suite;
        let noise = builder(pattern, suite, &self.static_key, self.ephemeral.as_ref())?
            .prologue(&bytes)
            .map_err(noise_err)?
            .build_responder()
            .map_err(noise_err)?;
        self.noise = Some(noise);
        self.step = Step::Message;
        self.accepted = Some(raw);
        Ok(())
    }

    fn on_reply(&mut self, item: &[u8]) -> Result<(), HandshakeError> {
        let bytes: [u8; PREAMBLE_LEN] = item.try_into().map_err(|_| HandshakeError::Truncated)?;
        preamble::check_reply(&bytes, self.pattern, self.suite)?;
        self.step = Step::Message;
        Ok(())
    }

    fn noise(&mut self) -> Result<&mut snow::HandshakeState, HandshakeError> {
        self.noise.as_mut().ok_or(HandshakeError::OutOfOrder)
    }

    fn read_noise(&mut self, msg: &[u8]) -> Result<Vec<u8>, HandshakeError> {
        let mut payload = vec![0u8; msg.len()];
        let n = self
            .noise()?
            .read_message(msg, &mut payload)
            .map_err(noise_err)?;
        payload.truncate(n);
        Ok(payload)
    }

    /// Writes the next Noise message; `with_payload`: our identity payload
    /// and early data.
    fn write_noise(&mut self, with_payload: bool) -> Result<(), HandshakeError> {
        let payload = if with_payload {
            let mut early = self.our_early()?;
            let mut payload = std::mem::take(&mut self.payload);
            payload.append(&mut early);
            payload
        } else {
            Vec::new()
        };
        let noise = self.noise.as_mut().ok_or(HandshakeError::OutOfOrder)?;
        push_noise(&mut self.out, noise, &payload)
    }

    /// Checks the identity payload at the start of `payload`; what follows
    /// it is the peer's early data.
    fn authenticate(&mut self, payload: &[u8]) -> Result<(), HandshakeError> {
        let (identity, early) = payload
            .split_at_checked(payload::PAYLOAD_LEN)
            .ok_or(HandshakeError::BadPayload(payload.len()))?;
        self.take_remote_early(early)?;
        let remote_static = key32(self.noise()?.get_remote_static().unwrap_or_default())?;
        let remote = payload::verify(identity, &remote_static, self.checked.as_deref())?;
        if let Some(expected) = self.expected
            && expected != remote
        {
            return Err(HandshakeError::PeerIdMismatch {
                expected,
                got: remote,
            });
        }
        self.remote = Some((remote, remote_static));
        Ok(())
    }

    fn take_remote_early(&mut self, early: &[u8]) -> Result<(), HandshakeError> {
        check_early_len(early.len())?;
        self.remote_early = early.to_vec();
        Ok(())
    }

    fn split(&mut self) -> Result<(), HandshakeError> {
        let mut noise = self.noise.take().ok_or(HandshakeError::OutOfOrder)?;
        if !noise.is_handshake_finished() {
            return Err(HandshakeError::OutOfOrder);
        }
        let (i_to_r, r_to_i): ([u8; KEY_LEN], [u8; KEY_LEN]) = noise.dangerously_get_raw_split();
        let a = CipherState::new(self.suite, &i_to_r, 0)?;
        let b = CipherState::new(self.suite, &r_to_i, 0)?;
        self.ciphers = Some(match self.role {
            Role::Initiator => (a, b),
            Role::Responder => (b, a),
        });
        Ok(())
    }

    fn reply(&mut self, status: Status) -> Result<(), HandshakeError> {
        let raw = self.accepted.ok_or(HandshakeError::OutOfOrder)?;
        self.out
            .extend_from_slice(&preamble::encode_reply(&raw, status));
        Ok(())
    }

    fn on_message(&mut self, msg: &[u8]) -> Result<(), HandshakeError> {
        self.received = self.received.saturating_add(1);
        match (self.role, self.pattern) {
            (Role::Responder, Pattern::Xx) if self.received == 1 => {
                // XX message 1: e, empty payload.
                if !self.read_noise(msg)?.is_empty() {
                    return Err(HandshakeError::MalformedMessage);
                }
                self.reply(Status::Ok)?;
                self.write_noise(true)
            }
            (Role::Responder, Pattern::Xx) => {
                // XX message 3: s, se, payload.
                let payload = self.read_noise(msg)?;
                self.authenticate(&payload)?;
                self.split()?;
                self.step = Step::Done;
                Ok(())
            }
            (Role::Responder, Pattern::Ik) => {
                // IK message 1: e, es, s, ss, payload.
                let payload = match self.read_noise(msg) {
                    Err(HandshakeError::HandshakeDecrypt) => {
                        // Our static key is not the one the dialer knew.
                        self.reply(Status::IkRejected)?;
                        return Err(HandshakeError::HandshakeDecrypt);
                    }
                    other => other?,
                };
                self.authenticate(&payload)?;
                if !self.remote_early.is_empty() {
                    // Early data rides in the confirmation, not in a
                    // message anyone may replay.
                    return Err(HandshakeError::MalformedMessage);
                }
                self.reply(Status::Ok)?;
                self.write_noise(true)?;
                self.split()?;
                self.step = Step::Confirm;
                Ok(())
            }
            (Role::Initiator, Pattern::Xx) => {
                // XX message 2: e, ee, s, es, payload; we answer with message 3.
                let payload = self.read_noise(msg)?;
                self.authenticate(&payload)?;
                self.write_noise(true)?;
                self.split()?;
                self.step = Step::Done;
                Ok(())
            }
            (Role::Initiator, Pattern::Ik) => {
                // IK message 2: e, ee, se, payload; we confirm the keys.
                let payload = self.read_noise(msg)?;
                self.authenticate(&payload)?;
                self.split()?;
                let mut msg = self.our_early()?;
                let send = self
                    .ciphers
                    .as_mut()
                    .map(|(send, _)| send)
                    .ok_or(HandshakeError::OutOfOrder)?;
                let tag = send.seal_in_place(&mut msg)?;
                msg.extend_from_slice(&tag);
                push_frame(&mut self.out, &msg)?;
                self.step = Step::Done;
                Ok(())
            }
        }
    }

    fn on_confirm(&mut self, msg: &[u8]) -> Result<(), HandshakeError> {
        let recv = self
            .ciphers
            .as_mut()
            .map(|(_, recv)| recv)
            .ok_or(HandshakeError::OutOfOrder)?;
        let mut buf = msg.to_vec();
        let plain = recv.open_in_place(&mut buf).map_err(|e| match e {
            HandshakeError::Decrypt | HandshakeError::FrameTooShort(_) => {
                HandshakeError::HandshakeDecrypt
            }
            other => other,
        })?;
        self.take_remote_early(plain)?;
        self.step = Step::Done;
        Ok(())
    }

    /// The outcome of a finished handshake.
    pub fn finish(self) -> Result<Established, HandshakeError> {
        if self.step != Step::Done {
            return Err(HandshakeError::OutOfOrder);
        }
        let ((remote, remote_static), (send, recv)) = self
            .remote
            .zip(self.ciphers)
            .ok_or(HandshakeError::OutOfOrder)?;
        Ok(Established {
            remote,
            remote_static,
            suite: self.suite,
            pattern: self.pattern,
            send,
            recv,
            early_data: self.remote_early,
        })
    }
}

#[cfg(test)]
#[path = "handshake_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "handshake_vectors.rs"]
mod vectors;
