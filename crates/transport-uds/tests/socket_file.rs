//! The socket file: its mode, stale and live files at the listen path, and
//! its removal when the listener is dropped.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use knotwork_core::{Listener, PeerAddr, Transport, TransportError};
use knotwork_transport_uds::{UdsConfig, UdsTransport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn addr(path: &Path) -> PeerAddr {
    PeerAddr::uds(path.to_str().unwrap()).unwrap()
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o777
}

fn in_dir(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("node.sock")
}

#[tokio::test]
async fn socket_file_is_owner_only_by_default_and_configurable() {
    let dir = tempfile::tempdir().unwrap();
    let path = in_dir(&dir);
    let l = UdsTransport::default().listen(&addr(&path)).await.unwrap();
    assert_eq!(mode(&path), 0o600);
    drop(l);
    let group = UdsTransport::new(UdsConfig::default().with_mode(Some(0o660)));
    let _l = group.listen(&addr(&path)).await.unwrap();
    assert_eq!(mode(&path), 0o660);
    // The owner (this test) can still dial an owner-only socket.
    group.dial(&addr(&path)).await.unwrap();
}

#[tokio::test]
async fn a_stale_socket_file_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = in_dir(&dir);
    // A std listener leaves its file behind when dropped, like a process
    // that died.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let uds = UdsTransport::default();
    match uds.dial(&addr(&path)).await {
        Err(TransportError::ConnectionRefused(a)) => assert_eq!(a, addr(&path)),
        other => panic!("dial to a stale socket: {other:?}"),
    }
    let mut l = uds.listen(&addr(&path)).await.unwrap();
    let mut c = uds.dial(&addr(&path)).await.unwrap();
    let (mut s, from) = l.accept().await.unwrap();
    assert_eq!(
        from,
        addr(&path),
        "an accepted peer reports the listen path"
    );
    c.write_all(b"fresh").await.unwrap();
    let mut buf = [0u8; 5];
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"fresh");
}

#[tokio::test]
async fn a_live_socket_is_addr_in_use_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = in_dir(&dir);
    let live = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let uds = UdsTransport::default();
    match uds.listen(&addr(&path)).await {
        Err(TransportError::AddrInUse(a)) => assert_eq!(a, addr(&path)),
        other => panic!("listen over a live socket: {other:?}"),
    }
    // The live listener still has its file and its connections.
    uds.dial(&addr(&path)).await.unwrap();
    live.accept().unwrap();
}

#[tokio::test]
async fn a_file_that_is_not_a_socket_is_never_removed() {
    let dir = tempfile::tempdir().unwrap();
    let path = in_dir(&dir);
    fs::write(&path, b"precious").unwrap();
    match UdsTransport::default().listen(&addr(&path)).await {
        Err(TransportError::AddrInUse(_)) => {}
        other => panic!("listen over a regular file: {other:?}"),
    }
    assert_eq!(fs::read(&path).unwrap(), b"precious");
}

#[tokio::test]
async fn drop_removes_the_file_but_not_a_successors() {
    let dir = tempfile::tempdir().unwrap();
    let path = in_dir(&dir);
    let uds = UdsTransport::default();
    drop(uds.listen(&addr(&path)).await.unwrap());
    assert!(!path.exists());
    // Someone removes our file and binds their own: dropping ours leaves it.
    let ours = uds.listen(&addr(&path)).await.unwrap();
    fs::remove_file(&path).unwrap();
    let theirs = std::os::unix::net::UnixListener::bind(&path).unwrap();
    drop(ours);
    assert!(path.exists(), "the successor's socket file is kept");
    uds.dial(&addr(&path)).await.unwrap();
    theirs.accept().unwrap();
}

#[tokio::test]
async fn a_missing_directory_is_an_io_error() {
    let path = PathBuf::from("/nonexistent-knotwork-dir/node.sock");
    match UdsTransport::default().listen(&addr(&path)).await {
        Err(TransportError::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::NotFound),
        other => panic!("listen in a missing directory: {other:?}"),
    }
}
