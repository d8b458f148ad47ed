//! [`DialAddr`]: an address to dial and, optionally, the peer expected there.

use std::fmt;
use std::str::FromStr;

use super::{AddrParseError, MAX_ADDR_TEXT_LEN, PeerAddr, parse_peer_id};
use crate::PeerId;

/// Longest text form of a [`DialAddr`]: an address of [`MAX_ADDR_TEXT_LEN`]
/// bytes plus `/p2p/` and a PeerId of at most 44 characters.
pub const MAX_DIAL_ADDR_TEXT_LEN: usize = MAX_ADDR_TEXT_LEN + 5 + 44;

/// An address to dial, and the identity the handshake must find there.
///
/// Text form: `<any PeerAddr text>` or `<any PeerAddr text>/p2p/<PeerId>`,
/// e.g. `tcp/seed.example.com:4000/p2p/8Ak…`. The suffix is split off at the
/// last `/`: no [`PeerAddr`] text ends in `/p2p/<segment>` (the paths of
/// `uds` and `ws` addresses have no `p2p` segment), so each text has one
/// meaning. A relay address already names its target: a pin on it must
/// name the same peer ([`AddrParseError::PinMismatch`]).
///
/// The pin is not part of [`PeerAddr`] so that an address compares equal
/// however it was learnt.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DialAddr {
    /// Where to dial.
    pub addr: PeerAddr,
    /// The peer the handshake must authenticate there; `None` accepts any.
    pub peer: Option<PeerId>,
}

impl DialAddr {
    /// An address pinned to `peer`; checks a relay address's target.
    pub fn pinned(addr: PeerAddr, peer: PeerId) -> Result<Self, AddrParseError> {
        if matches!(&addr, PeerAddr::Relay(r) if r.target != peer) {
            return Err(AddrParseError::PinMismatch);
        }
        Ok(DialAddr {
            addr,
            peer: Some(peer),
        })
    }
}

impl From<PeerAddr> for DialAddr {
    fn from(addr: PeerAddr) -> Self {
        DialAddr { addr, peer: None }
    }
}

impl From<&PeerAddr> for DialAddr {
    fn from(addr: &PeerAddr) -> Self {
        DialAddr {
            addr: addr.clone(),
            peer: None,
        }
    }
}

impl fmt::Display for DialAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.peer {
            Some(peer) => write!(f, "{}/p2p/{peer}", self.addr),
            None => write!(f, "{}", self.addr),
        }
    }
}

impl FromStr for DialAddr {
    type Err = AddrParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() > MAX_DIAL_ADDR_TEXT_LEN {
            return Err(AddrParseError::TooLong(s.len()));
        }
        let pinned = s
            .rsplit_once('/')
            .and_then(|(head, id)| Some((head.strip_suffix("/p2p")?, id)));
        match pinned {
            Some((addr, id)) => DialAddr::pinned(addr.parse()?, parse_peer_id(id)?),
            None => Ok(DialAddr::from(s.parse::<PeerAddr>()?)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Keypair;

    fn id() -> PeerId {
        Keypair::generate().unwrap().peer_id()
    }

    #[test]
    fn pins_round_trip_and_do_not_change_the_address() {
        let (p, q) = (id(), id());
        for addr in [
            "tcp/1.2.3.4:4000",
            "tcp/seed.example.com:4000",
            "uds//run/knot.sock",
            "ws/[::1]:80/knot",
            "ws/h:80",
            "ble/p2p",
            "mem/1",
        ] {
            let plain: DialAddr = addr.parse().unwrap();
            assert_eq!(plain.peer, None);
            assert_eq!(plain.to_string(), addr);
            let text = format!("{addr}/p2p/{p}");
            let pinned: DialAddr = text.parse().unwrap();
            assert_eq!((&pinned.addr, pinned.peer), (&plain.addr, Some(p)));
            assert_eq!(pinned.to_string(), text);
        }
        let relay = format!("relay/mem/1/{p}/{q}");
        assert_eq!(
            format!("{relay}/p2p/{q}").parse::<DialAddr>().unwrap().peer,
            Some(q)
        );
        assert_eq!(
            format!("{relay}/p2p/{p}").parse::<DialAddr>(),
            Err(AddrParseError::PinMismatch)
        );
        assert_eq!(relay.parse::<DialAddr>().unwrap().peer, None);
    }

    #[test]
    fn bad_pins_are_named() {
        use AddrParseError::*;
        let p = id();
        let cases = [
            ("mem/1/p2p/nope".to_string(), InvalidPeerId("nope".into())),
            ("mem/1/p2p/".to_string(), InvalidPeerId("".into())),
            (format!("/p2p/{p}"), MissingScheme),
            (format!("mem/x/p2p/{p}"), InvalidMemPort("x".into())),
            (
                "x".repeat(MAX_DIAL_ADDR_TEXT_LEN + 1),
                TooLong(MAX_DIAL_ADDR_TEXT_LEN + 1),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(text.parse::<DialAddr>(), Err(want), "{text}");
        }
    }
}
