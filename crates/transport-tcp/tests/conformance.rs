//! TcpTransport through the shared transport conformance suite, on IPv4
//! loopback.
#![allow(clippy::unwrap_used)]

use knotwork_testkit::transport::Subject;
use knotwork_transport_tcp::TcpTransport;

fn subject() -> Subject<TcpTransport> {
    Subject::new(TcpTransport::default(), || {
        "tcp/127.0.0.1:0".parse().unwrap()
    })
}

knotwork_testkit::transport_conformance!(subject());
