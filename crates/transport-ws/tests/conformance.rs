//! WsTransport through the shared transport conformance suite, on IPv4
//! loopback. WebSocket has no half-close (a close frame ends both ways).
#![allow(clippy::unwrap_used)]

use knotwork_testkit::transport::Subject;
use knotwork_transport_ws::WsTransport;

fn subject() -> Subject<WsTransport> {
    Subject::new(WsTransport::default(), || {
        "ws/127.0.0.1:0/knot".parse().unwrap()
    })
    .without_half_close()
}

knotwork_testkit::transport_conformance!(subject());
