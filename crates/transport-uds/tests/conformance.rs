//! UdsTransport through the shared transport conformance suite, on socket
//! files in a temporary directory.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use knotwork_core::PeerAddr;
use knotwork_testkit::transport::Subject;
use knotwork_transport_uds::UdsTransport;

fn subject() -> Subject<UdsTransport> {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let next = AtomicUsize::new(0);
    Subject::new(UdsTransport::default(), move || {
        let n = next.fetch_add(1, Ordering::Relaxed);
        let path = dir.path().join(format!("s{n}.sock"));
        PeerAddr::uds(path.to_str().unwrap()).unwrap()
    })
}

knotwork_testkit::transport_conformance!(subject());
