//! The record format carried inside GATT writes and notifications, and its
//! two halves: [`Fragmenter`] (records → ATT-sized fragments) and
//! [`Reassembler`] (fragments → records).
//!
//! # Format
//! Each direction of a connection is one ordered byte stream cut into
//! fragments of at most `MTU − 3` bytes (one write-without-response or one
//! notification each). Records follow each other in that stream with no
//! regard for fragment boundaries: a record may start in one fragment and end
//! several fragments later, and one fragment may hold the ends and starts of
//! several records.
//!
//! ```text
//! DATA    0x00  len: varint (1..=max_message)  len bytes of message
//! CREDIT  0x01  n: varint                      the sender may send n more data bytes
//! CLOSE   0x02                                 the sender will send no more data
//! ```
//! A varint is unsigned LEB128 of at most five bytes holding a `u32`. A
//! message of under 128 bytes costs 2 bytes of header, under 16 KiB 3 bytes.

use std::collections::VecDeque;

use bytes::{BufMut, Bytes, BytesMut};

use crate::BleError;

/// Tag of a data record.
pub const TAG_DATA: u8 = 0x00;
/// Tag of a credit record.
pub const TAG_CREDIT: u8 = 0x01;
/// Tag of a close record.
pub const TAG_CLOSE: u8 = 0x02;
/// Longest record header: a tag and a five-byte varint.
pub const MAX_HEADER: usize = 6;
/// Smallest ATT MTU (Bluetooth Core: LE default).
pub const MIN_MTU: u16 = 23;
/// Largest ATT MTU.
pub const MAX_MTU: u16 = 517;
/// Bytes of an ATT write or notification PDU that are not payload.
pub const ATT_OVERHEAD: u16 = 3;

/// Checks an ATT MTU and returns the payload per fragment (`mtu − 3`).
pub fn fragment_payload(mtu: u16) -> Result<usize, BleError> {
    if (MIN_MTU..=MAX_MTU).contains(&mtu) {
        Ok(usize::from(mtu - ATT_OVERHEAD))
    } else {
        Err(BleError::InvalidMtu(mtu))
    }
}

/// Bytes of header a data record of `len` bytes carries.
pub fn header_len(len: u32) -> usize {
    1 + varint_len(len)
}

fn varint_len(mut v: u32) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

/// Encodes a record header (`tag` + varint `value`) into a small buffer.
fn header(tag: u8, value: u32) -> Bytes {
    let mut b = BytesMut::with_capacity(MAX_HEADER);
    b.put_u8(tag);
    let mut v = value;
    while v >= 0x80 {
        // Low seven bits with the continuation bit; truncation is the point.
        b.put_u8((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    b.put_u8(v as u8);
    b.freeze()
}

/// What a [`Reassembler`] decodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// A complete message.
    Data(Bytes),
    /// The peer grants this many more bytes of data.
    Credit(u32),
    /// The peer closed its sending side.
    Close,
}

/// The send half: queues records and cuts them into fragments.
///
/// Credits are not checked here; [`Link`](crate::Link) does that.
#[derive(Debug)]
pub struct Fragmenter {
    payload: usize,
    pieces: VecDeque<Bytes>,
    queued: usize,
}

impl Fragmenter {
    /// A fragmenter for ATT MTU `mtu` (23..=517).
    pub fn new(mtu: u16) -> Result<Self, BleError> {
        Ok(Self {
            payload: fragment_payload(mtu)?,
            pieces: VecDeque::new(),
            queued: 0,
        })
    }

    /// Changes the MTU (after an MTU exchange); queued bytes are re-cut.
    pub fn set_mtu(&mut self, mtu: u16) -> Result<(), BleError> {
        self.payload = fragment_payload(mtu)?;
        Ok(())
    }

    /// Payload bytes per fragment.
    pub fn payload(&self) -> usize {
        self.payload
    }

    /// Bytes queued and not yet cut into fragments.
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Queues a data record. The caller checks length and credit.
    pub fn push_data(&mut self, msg: Bytes) {
        let Ok(len) = u32::try_from(msg.len()) else {
            return;
        };
        self.push(header(TAG_DATA, len));
        self.push(msg);
    }

    /// Queues a credit record.
    pub fn push_credit(&mut self, n: u32) {
        self.push(header(TAG_CREDIT, n));
    }

    /// Queues a close record.
    pub fn push_close(&mut self) {
        self.push(Bytes::from_static(&[TAG_CLOSE]));
    }

    fn push(&mut self, piece: Bytes) {
        self.queued += piece.len();
        self.pieces.push_back(piece);
    }

    /// The next fragment to write (at most `mtu − 3` bytes), or `None` when
    /// nothing is queued.
    pub fn poll_fragment(&mut self) -> Option<Bytes> {
        if self.queued == 0 {
            return None;
        }
        let first = self.pieces.front_mut()?;
        // A piece that fills a whole fragment goes out without a copy.
        if first.len() >= self.payload {
            let out = first.split_to(self.payload);
            if first.is_empty() {
                self.pieces.pop_front();
            }
            self.queued -= out.len();
            return Some(out);
        }
        let mut out = BytesMut::with_capacity(self.payload.min(self.queued));
        while out.len() < self.payload {
            let Some(piece) = self.pieces.front_mut() else {
                break;
            };
            let take = piece.len().min(self.payload - out.len());
            out.extend_from_slice(&piece.split_to(take));
            if piece.is_empty() {
                self.pieces.pop_front();
            }
        }
        self.queued -= out.len();
        Some(out.freeze())
    }
}

#[derive(Debug)]
enum State {
    /// Collecting a header; `have` bytes of `buf` are filled.
    Header { buf: [u8; MAX_HEADER], have: usize },
    /// Collecting `remaining` more bytes of a message into `buf`.
    Body { buf: BytesMut, remaining: usize },
}

/// The receive half: decodes records from fragments cut anywhere.
///
/// It enforces the receive limits: a data record longer than `max_message`
/// or than the credit granted so far is rejected from its header, before any
/// buffer is allocated. Errors are sticky.
#[derive(Debug)]
pub struct Reassembler {
    max_message: u32,
    credit: u32,
    closed: bool,
    state: State,
    error: Option<BleError>,
}

impl Reassembler {
    /// A reassembler accepting messages up to `max_message` bytes, with no
    /// credit granted yet.
    pub fn new(max_message: u32) -> Self {
        Self {
            max_message,
            credit: 0,
            closed: false,
            state: State::Header {
                buf: [0; MAX_HEADER],
                have: 0,
            },
            error: None,
        }
    }

    /// Grants the peer `n` more bytes of data (saturating).
    pub fn grant(&mut self, n: u32) {
        self.credit = self.credit.saturating_add(n);
    }

    /// Credit the peer has left.
    pub fn credit(&self) -> u32 {
        self.credit
    }

    /// Whether the peer sent a close record.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Feeds one fragment; every complete record goes to `on_record` in order.
    ///
    /// An error from `on_record` stops decoding and is returned (and kept).
    pub fn push(
        &mut self,
        mut input: &[u8],
        mut on_record: impl FnMut(Record) -> Result<(), BleError>,
    ) -> Result<(), BleError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        let result = loop {
            if input.is_empty() {
                break Ok(());
            }
            match self.step(&mut input) {
                Ok(Some(record)) => {
                    if let Err(e) = on_record(record) {
                        break Err(e);
                    }
                }
                Ok(None) => {}
                Err(e) => break Err(e),
            }
        };
        if let Err(e) = &result {
            self.error = Some(e.clone());
        }
        result
    }

    /// Consumes some of `input`; returns a record when one completes.
    fn step(&mut self, input: &mut &[u8]) -> Result<Option<Record>, BleError> {
        match &mut self.state {
            State::Body { buf, remaining } => {
                let take = (*remaining).min(input.len());
                let (now, rest) = input.split_at(take);
                buf.extend_from_slice(now);
                *input = rest;
                *remaining -= take;
                if *remaining > 0 {
                    return Ok(None);
                }
                let msg = std::mem::take(buf).freeze();
                self.reset();
                Ok(Some(Record::Data(msg)))
            }
            State::Header { buf, have } => {
                let Some((&byte, rest)) = input.split_first() else {
                    return Ok(None);
                };
                *input = rest;
                if let Some(slot) = buf.get_mut(*have) {
                    *slot = byte;
                }
                *have += 1;
                let filled = buf.get(..*have).unwrap_or_default();
                match parse_header(filled)? {
                    None => Ok(None),
                    Some((tag, value)) => self.on_header(tag, value),
                }
            }
        }
    }

    fn reset(&mut self) {
        self.state = State::Header {
            buf: [0; MAX_HEADER],
            have: 0,
        };
    }

    fn on_header(&mut self, tag: u8, value: u32) -> Result<Option<Record>, BleError> {
        self.reset();
        match tag {
            TAG_DATA => {
                if self.closed {
                    return Err(BleError::DataAfterClose);
                }
                if value > self.max_message {
                    return Err(BleError::MessageTooLarge {
                        len: u64::from(value),
                        max: self.max_message,
                    });
                }
                if value == 0 {
                    return Err(BleError::EmptyMessage);
                }
                if value > self.credit {
                    return Err(BleError::CreditViolation {
                        len: value,
                        available: self.credit,
                    });
                }
                self.credit -= value;
                let len = value as usize;
                self.state = State::Body {
                    buf: BytesMut::with_capacity(len),
                    remaining: len,
                };
                Ok(None)
            }
            TAG_CREDIT => Ok(Some(Record::Credit(value))),
            TAG_CLOSE => {
                self.closed = true;
                Ok(Some(Record::Close))
            }
            other => Err(BleError::UnknownRecord(other)),
        }
    }
}

/// Parses a header from its first bytes: `Ok(None)` while incomplete.
fn parse_header(buf: &[u8]) -> Result<Option<(u8, u32)>, BleError> {
    let Some((&tag, varint)) = buf.split_first() else {
        return Ok(None);
    };
    match tag {
        TAG_CLOSE => Ok(Some((tag, 0))),
        TAG_DATA | TAG_CREDIT => Ok(parse_varint(varint)?.map(|v| (tag, v))),
        other => Err(BleError::UnknownRecord(other)),
    }
}

/// Unsigned LEB128 into a `u32`: `Ok(None)` while incomplete.
fn parse_varint(buf: &[u8]) -> Result<Option<u32>, BleError> {
    let mut value: u64 = 0;
    for (i, &b) in buf.iter().enumerate() {
        if i >= 5 {
            return Err(BleError::BadVarint);
        }
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return u32::try_from(value)
                .map(Some)
                .map_err(|_| BleError::BadVarint);
        }
    }
    if buf.len() >= 5 {
        return Err(BleError::BadVarint);
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(r: &mut Reassembler, input: &[u8]) -> Result<Vec<Record>, BleError> {
        let mut out = Vec::new();
        r.push(input, |rec| {
            out.push(rec);
            Ok(())
        })?;
        Ok(out)
    }

    #[test]
    fn varint_lengths() {
        for (v, n) in [
            (0, 1),
            (127, 1),
            (128, 2),
            (16_383, 2),
            (16_384, 3),
            (u32::MAX, 5),
        ] {
            assert_eq!(varint_len(v), n);
            let h = header(TAG_CREDIT, v);
            assert_eq!(h.len(), 1 + n);
            assert_eq!(parse_header(&h).unwrap(), Some((TAG_CREDIT, v)));
        }
    }

    #[test]
    fn incomplete_header_is_none() {
        assert_eq!(parse_header(&[]).unwrap(), None);
        assert_eq!(parse_header(&[TAG_DATA]).unwrap(), None);
        assert_eq!(parse_header(&[TAG_DATA, 0x80, 0x80]).unwrap(), None);
    }

    #[test]
    fn overlong_varint_is_bad() {
        let mut r = Reassembler::new(100);
        let err = decode_all(&mut r, &[TAG_CREDIT, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01]);
        assert_eq!(err, Err(BleError::BadVarint));
    }

    #[test]
    fn varint_above_u32_is_bad() {
        let mut r = Reassembler::new(100);
        let err = decode_all(&mut r, &[TAG_CREDIT, 0xff, 0xff, 0xff, 0xff, 0x1f]);
        assert_eq!(err, Err(BleError::BadVarint));
    }

    #[test]
    fn unknown_tag() {
        let mut r = Reassembler::new(100);
        assert_eq!(
            decode_all(&mut r, &[0x7e]),
            Err(BleError::UnknownRecord(0x7e))
        );
    }

    #[test]
    fn huge_message_rejected_before_body() {
        let mut r = Reassembler::new(1000);
        r.grant(u32::MAX);
        // Claims 2^31 bytes; only the header arrives.
        let err = decode_all(&mut r, &[TAG_DATA, 0x80, 0x80, 0x80, 0x80, 0x08]);
        assert_eq!(
            err,
            Err(BleError::MessageTooLarge {
                len: 1 << 31,
                max: 1000
            })
        );
    }

    #[test]
    fn credit_violation() {
        let mut r = Reassembler::new(1000);
        r.grant(10);
        let err = decode_all(&mut r, &[TAG_DATA, 11]);
        assert_eq!(
            err,
            Err(BleError::CreditViolation {
                len: 11,
                available: 10
            })
        );
    }

    #[test]
    fn empty_message_rejected() {
        let mut r = Reassembler::new(1000);
        r.grant(10);
        assert_eq!(
            decode_all(&mut r, &[TAG_DATA, 0]),
            Err(BleError::EmptyMessage)
        );
    }

    #[test]
    fn data_after_close_rejected() {
        let mut r = Reassembler::new(1000);
        r.grant(10);
        assert_eq!(
            decode_all(&mut r, &[TAG_CLOSE, TAG_DATA, 1, 9]),
            Err(BleError::DataAfterClose)
        );
        assert!(r.is_closed());
    }

    #[test]
    fn errors_are_sticky() {
        let mut r = Reassembler::new(1000);
        assert_eq!(
            decode_all(&mut r, &[0x55]),
            Err(BleError::UnknownRecord(0x55))
        );
        assert_eq!(
            decode_all(&mut r, &[TAG_CLOSE]),
            Err(BleError::UnknownRecord(0x55))
        );
    }

    #[test]
    fn records_split_byte_by_byte() {
        let mut f = Fragmenter::new(23).unwrap();
        f.push_credit(300);
        f.push_data(Bytes::from(vec![7u8; 200]));
        f.push_close();
        let mut stream = Vec::new();
        while let Some(frag) = f.poll_fragment() {
            assert!(frag.len() <= 20);
            stream.extend_from_slice(&frag);
        }
        let mut r = Reassembler::new(1000);
        r.grant(200);
        let mut out = Vec::new();
        for b in stream {
            out.extend(decode_all(&mut r, &[b]).unwrap());
        }
        assert_eq!(
            out,
            vec![
                Record::Credit(300),
                Record::Data(Bytes::from(vec![7u8; 200])),
                Record::Close
            ]
        );
        assert_eq!(r.credit(), 0);
    }

    #[test]
    fn invalid_mtu() {
        assert_eq!(Fragmenter::new(22).err(), Some(BleError::InvalidMtu(22)));
        assert_eq!(Fragmenter::new(518).err(), Some(BleError::InvalidMtu(518)));
        assert_eq!(fragment_payload(517).unwrap(), 514);
    }
}
