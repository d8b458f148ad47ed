//! What a WebSocket peer can send us: oversized frames, text, pings, close,
//! and plain HTTP; each against a real listener on loopback.
#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use knotwork_core::{Listener, PeerAddr, Transport, TransportError};
use knotwork_transport_ws::{DEFAULT_MAX_MESSAGE, WsError, WsListener, WsTransport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

async fn listener() -> (WsListener, PeerAddr) {
    let l = WsTransport::default()
        .listen(&"ws/127.0.0.1:0/knot".parse().unwrap())
        .await
        .unwrap();
    let addr = l.local_addr();
    (l, addr)
}

fn port(addr: &PeerAddr) -> u16 {
    let PeerAddr::Ws(ws) = addr else {
        panic!("not ws: {addr}")
    };
    ws.port()
}

/// A tungstenite client without our limits, as a hostile peer would be.
async fn raw_client(addr: &PeerAddr) -> tokio_tungstenite::WebSocketStream<TcpStream> {
    let tcp = TcpStream::connect(("127.0.0.1", port(addr))).await.unwrap();
    let config = WebSocketConfig::default()
        .max_frame_size(None)
        .max_message_size(None);
    let url = format!("ws://127.0.0.1:{}/knot", port(addr));
    tokio_tungstenite::client_async_with_config(url, tcp, Some(config))
        .await
        .unwrap()
        .0
}

/// A raw client and the accepted end; the upgrade advances while accept
/// is polled, so the two run together.
async fn connected(
    l: &mut WsListener,
    addr: &PeerAddr,
) -> (
    tokio_tungstenite::WebSocketStream<TcpStream>,
    (knotwork_transport_ws::Conn, PeerAddr),
) {
    let (client, accepted) = tokio::join!(raw_client(addr), l.accept());
    (client, accepted.unwrap())
}

fn ws_error(e: &std::io::Error) -> &WsError {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<WsError>())
        .unwrap_or_else(|| panic!("not a WsError: {e:?}"))
}

#[tokio::test]
async fn an_oversized_frame_is_refused_by_name() {
    let (mut l, addr) = listener().await;
    let (mut client, (mut server, _)) = connected(&mut l, &addr).await;
    let big = vec![7u8; DEFAULT_MAX_MESSAGE + 1];
    let send = client.send(Message::Binary(big.into()));
    let mut buf = vec![0u8; 1024];
    let (sent, read) = tokio::join!(send, server.read(&mut buf));
    sent.unwrap();
    let e = read.unwrap_err();
    assert!(
        matches!(ws_error(&e), WsError::TooLarge { size, max } if *size == DEFAULT_MAX_MESSAGE + 1 && *max == DEFAULT_MAX_MESSAGE),
        "{e:?}"
    );
}

#[tokio::test]
async fn a_huge_frame_header_is_refused_before_its_payload() {
    let (mut l, addr) = listener().await;
    let mut tcp = TcpStream::connect(("127.0.0.1", port(&addr)))
        .await
        .unwrap();
    tcp.write_all(
        b"GET /knot HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .unwrap();
    let (mut server, _) = l.accept().await.unwrap();
    let mut response = [0u8; 12];
    tcp.read_exact(&mut response).await.unwrap();
    assert_eq!(&response, b"HTTP/1.1 101");
    // FIN + binary, masked, 64-bit length 2^40, a mask, and no payload.
    let mut header = vec![0x82, 0xff];
    header.extend_from_slice(&(1u64 << 40).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    tcp.write_all(&header).await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(10), server.read(&mut buf))
        .await
        .expect("refused from the header alone, without waiting for the payload");
    let e = read.unwrap_err();
    assert!(
        matches!(ws_error(&e), WsError::TooLarge { size, .. } if *size == 1 << 40),
        "{e:?}"
    );
}

#[tokio::test]
async fn a_text_message_is_refused_by_name() {
    let (mut l, addr) = listener().await;
    let (mut client, (mut server, _)) = connected(&mut l, &addr).await;
    client.send(Message::Text("hello".into())).await.unwrap();
    let mut buf = [0u8; 8];
    let e = server.read(&mut buf).await.unwrap_err();
    assert!(matches!(ws_error(&e), WsError::TextMessage), "{e:?}");
}

#[tokio::test]
async fn pings_are_answered_and_close_is_eof() {
    let (mut l, addr) = listener().await;
    let (mut client, (mut server, _)) = connected(&mut l, &addr).await;
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        got
    });
    client
        .send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();
    match client.next().await.unwrap().unwrap() {
        Message::Pong(data) => assert_eq!(&data[..], b"are you there"),
        other => panic!("expected a pong, got {other:?}"),
    }
    client
        .send(Message::Binary(b"bytes".to_vec().into()))
        .await
        .unwrap();
    client.close(None).await.unwrap();
    assert_eq!(
        reader.await.unwrap(),
        b"bytes",
        "close frame is EOF after the bytes"
    );
    // Our end answered the close.
    match client.next().await {
        Some(Ok(Message::Close(_))) | None => {}
        other => panic!("expected the close answer, got {other:?}"),
    }
}

#[tokio::test]
async fn our_dial_sends_binary_frames_to_a_plain_websocket_server() {
    // tungstenite's own server (no knotwork code) accepts our dial.
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (stream, _) = tcp.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(stream).await.unwrap();
        let first = ws.next().await.unwrap().unwrap();
        let end = ws.next().await;
        (first, end)
    });
    let addr: PeerAddr = format!("ws/127.0.0.1:{port}/knot").parse().unwrap();
    let mut c = WsTransport::default().dial(&addr).await.unwrap();
    c.write_all(b"knot").await.unwrap();
    c.write_all(b"work").await.unwrap();
    c.flush().await.unwrap();
    c.shutdown().await.unwrap();
    let (first, end) = server.await.unwrap();
    assert_eq!(
        first,
        Message::Binary(b"knotwork".to_vec().into()),
        "writes until a flush make one message"
    );
    assert!(
        matches!(end, Some(Ok(Message::Close(_)))),
        "shutdown sends a close frame: {end:?}"
    );
}

/// Sends `request` on a fresh TCP connection and returns the whole answer.
async fn http(addr: &PeerAddr, request: &str) -> String {
    let mut tcp = TcpStream::connect(("127.0.0.1", port(addr))).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).await.unwrap();
    answer
}

#[tokio::test]
async fn plain_http_gets_a_4xx_and_the_listener_carries_on() {
    let (mut l, addr) = listener().await;
    let accepting = tokio::spawn(async move {
        let conn = l.accept().await;
        (conn.map(|(_, from)| from), l)
    });
    let plain = http(&addr, "GET /knot HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(
        plain.starts_with("HTTP/1.1 426 Upgrade Required\r\n"),
        "{plain}"
    );
    assert!(plain.contains("\r\nUpgrade: websocket\r\n"), "{plain}");
    let elsewhere = http(
        &addr,
        "GET /other HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await;
    assert!(
        elsewhere.starts_with("HTTP/1.1 404 Not Found\r\n"),
        "{elsewhere}"
    );
    let post = http(&addr, "POST /knot HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(post.starts_with("HTTP/1.1 405 "), "{post}");
    // Refused requests never reach accept; a real dial does.
    let _c = WsTransport::default().dial(&addr).await.unwrap();
    let (from, _l) = accepting.await.unwrap();
    assert_eq!(from.unwrap().scheme(), "ws");
}

#[tokio::test]
async fn wss_is_left_to_a_tls_front() {
    let ws = WsTransport::default();
    let wss: PeerAddr = "wss/127.0.0.1:443/knot".parse().unwrap();
    assert!(
        matches!(ws.dial(&wss).await, Err(TransportError::UnsupportedAddr(ref a)) if *a == wss)
    );
    assert!(
        matches!(ws.listen(&wss).await, Err(TransportError::UnsupportedAddr(ref a)) if *a == wss)
    );
    let named: PeerAddr = "ws/localhost:0/knot".parse().unwrap();
    assert!(matches!(
        ws.listen(&named).await,
        Err(TransportError::UnsupportedAddr(_))
    ));
}

#[tokio::test]
async fn a_refused_upgrade_is_a_named_dial_error() {
    let (mut l, addr) = listener().await;
    // Upgrades (and refusals) advance while accept is polled.
    let _accepting = tokio::spawn(async move { l.accept().await.map(|_| ()) });
    let PeerAddr::Ws(ws) = &addr else { panic!() };
    let other: PeerAddr = format!("ws/127.0.0.1:{}/other", ws.port()).parse().unwrap();
    match WsTransport::default().dial(&other).await {
        Err(TransportError::Io(e)) => assert!(matches!(ws_error(&e), WsError::Upgrade(_)), "{e:?}"),
        other => panic!("dial to another path: {other:?}"),
    }
}
