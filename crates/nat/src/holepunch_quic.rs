//! Hole punching over UDP with QUIC: the QUIC half of [`crate::holepunch`].
//!
//! The relay coordinates as for TCP (the same [`Punch`](crate::holepunch::Punch)
//! exchange carries `quic/` candidates too); then both sides dial every
//! QUIC candidate of the other from their own QUIC listen socket
//! ([`QuicTransport::dial_from`]), so each NAT maps the listen port outward
//! and lets the other side's packets in as answers. A first Initial that
//! reaches the other NAT before that side's own packets opened it is
//! dropped, and QUIC's handshake retransmits it; a router that answers
//! early TCP SYNs with a reset (which kills a TCP punch) does not touch
//! UDP. Both dials can succeed (each listener also accepts the other's
//! dial): the node keeps one channel, the one dialed by the smaller PeerId.
//! The connection is authenticated by QUIC's own handshake, so the node
//! runs no Noise on it ([`RawConn::of`]).
//!
//! A node does this only with a QUIC transport given to [`Nat::quic`](crate::Nat::quic)
//! and a QUIC listen address.

use std::net::SocketAddr;

use knotwork_core::{PeerAddr, PeerId, TransportError};
use knotwork_node::{NodeHandle, RawConn, SessionKind};
use knotwork_transport_quic::QuicTransport;

use crate::Inner;

/// Dials the QUIC ones of `targets` from our QUIC listen socket, all at
/// once, and runs the node's pipeline on the first that connects (the
/// caller waits for the direct channel, which may come in through our
/// listener instead).
pub(crate) async fn punch(node: &NodeHandle, nat: &Inner, peer: PeerId, targets: &[PeerAddr]) {
    let Some(quic) = nat.quic.get() else {
        return;
    };
    let local = node.listen_addrs().iter().find_map(|a| match a {
        PeerAddr::Quic(sa) => Some(*sa),
        _ => None,
    });
    let targets: Vec<SocketAddr> = targets
        .iter()
        .filter_map(|a| match a {
            PeerAddr::Quic(sa) => Some(*sa),
            _ => None,
        })
        .collect();
    let Some(local) = local.filter(|_| !targets.is_empty()) else {
        return;
    };
    let dials = targets
        .iter()
        .map(|sa| Box::pin(dial(quic, local, PeerAddr::Quic(*sa), peer)));
    match futures::future::select_ok(dials).await {
        Ok(((conn, addr), _)) => {
            let conn = RawConn::of::<QuicTransport>(conn);
            if let Err(e) = node.establish(conn, addr, SessionKind::Manual).await {
                tracing::debug!(peer = %peer.short(), "punched QUIC connection failed: {e}");
            }
        }
        Err(e) => tracing::debug!(peer = %peer.short(), "QUIC hole punch dials failed: {e}"),
    }
}

/// One dial of `addr` from `local`, insisting on `peer`.
async fn dial(
    quic: &QuicTransport,
    local: SocketAddr,
    addr: PeerAddr,
    peer: PeerId,
) -> Result<(knotwork_transport_quic::QuicConnection, PeerAddr), TransportError> {
    let conn = quic.dial_from(local, &addr, Some(peer)).await?;
    Ok((conn, addr))
}
