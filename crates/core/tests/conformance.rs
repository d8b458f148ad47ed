//! MemoryTransport through the shared transport conformance suite.
#![allow(clippy::unwrap_used)]

use knotwork_core::MemoryTransport;
use knotwork_testkit::transport::Subject;

fn subject() -> Subject<MemoryTransport> {
    Subject::new(MemoryTransport::new(), || "mem/0".parse().unwrap())
        .with_foreign("tcp/127.0.0.1:1".parse().unwrap())
}

knotwork_testkit::transport_conformance!(subject());
