//! Interop with an independent WebSocket implementation: PyPI `websockets`
//! 15.0.1, driven by `tests/interop/ws_client.py` over real TCP on
//! 127.0.0.1.
//!
//! The Python client completes the opening handshake against our own
//! request check and 101 response (it verifies `Sec-WebSocket-Accept`),
//! sends a binary message, and reports the type of what we send back
//! (`bytes`: a binary frame). A ping is answered; a text message is refused
//! by name on our side and ends the connection.
//!
//! Ignored by default (it needs Python): run `cargo xtask interop ws`,
//! which installs `websockets` into .venv and sets `KNOTWORK_PYTHON`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use knotwork_core::{Listener, PeerAddr, Transport};
use knotwork_transport_ws::{WsError, WsTransport};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

fn python() -> PathBuf {
    match std::env::var_os("KNOTWORK_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => panic!(
            "KNOTWORK_PYTHON is not set: run `cargo xtask interop ws` \
             (it installs websockets into .venv and sets it)"
        ),
    }
}

#[tokio::test]
#[ignore = "needs Python's websockets: cargo xtask interop ws"]
async fn python_websockets_client_upgrades_and_sees_binary_frames() {
    let ws = WsTransport::default();
    let mut listener = ws
        .listen(&"ws/127.0.0.1:0/knot".parse().unwrap())
        .await
        .unwrap();
    let PeerAddr::Ws(addr) = listener.local_addr() else {
        panic!("ws listener")
    };
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/ws_client.py");
    let mut child = Command::new(python())
        .arg(script)
        .arg(addr.url())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the python client");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();

    let (mut conn, from) = listener.accept().await.unwrap();
    assert_eq!(from.scheme(), "ws");
    let mut hello = [0u8; 17];
    conn.read_exact(&mut hello).await.unwrap();
    assert_eq!(&hello, b"hello from python");
    conn.write_all(b"hello from knotwork").await.unwrap();
    conn.flush().await.unwrap();
    // The ping is answered while we read; then the text message arrives.
    let e = tokio::time::timeout(Duration::from_secs(30), conn.read(&mut hello))
        .await
        .expect("the python client's text message")
        .unwrap_err();
    let named = e.get_ref().and_then(|i| i.downcast_ref::<WsError>());
    assert!(matches!(named, Some(WsError::TextMessage)), "{e:?}");
    drop(conn);

    let mut said = Vec::new();
    while let Some(line) = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("python client too slow")
        .unwrap()
    {
        said.push(line);
    }
    let status = child.wait().await.unwrap();
    assert!(status.success(), "python client failed: {said:?}");
    assert_eq!(
        said.first().map(String::as_str),
        Some("upgraded"),
        "{said:?}"
    );
    assert_eq!(
        said.get(1).map(String::as_str),
        Some(format!("frame bytes {}", hex(b"hello from knotwork")).as_str()),
        "{said:?}"
    );
    assert_eq!(said.get(2).map(String::as_str), Some("pong"), "{said:?}");
    assert!(
        said.get(3).is_some_and(|l| l.starts_with("end")),
        "{said:?}"
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
