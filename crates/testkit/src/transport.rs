//! The transport conformance suite: what every [`Transport`] must do, as
//! async checks over a [`Subject`].
//!
//! Each check is a public `async fn` taking the subject; the
//! [`transport_conformance!`](crate::transport_conformance) macro makes one
//! `#[tokio::test]` per check in a `conformance` module. Every check ends
//! within [`CHECK_TIMEOUT`] or fails; none of them measures time.
//!
//! | check | what it asserts |
//! |---|---|
//! | [`listen_and_dial`] | `local_addr` is dialable (a port 0 is replaced), accept reports an address of the same scheme, bytes flow both ways |
//! | [`bulk_echo`] | [`BULK`] bytes echoed back intact while both directions are busy |
//! | [`shutdown_gives_eof`] | a writer's shutdown is EOF at the reader after all its bytes; with half-close, the reader can still answer |
//! | [`drop_ends_the_peer`] | a dropped connection ends the other end's reads |
//! | [`many_connections`] | [`CONCURRENT`] connections at once, each with its own bytes |
//! | [`writer_waits`] | a writer whose reader stops reading is held back (no unbounded buffer) |
//! | [`second_listen_in_use`] | listening again on a bound address is `AddrInUse` |
//! | [`dial_to_nothing_refused`] | dialing an address nobody listens on is `ConnectionRefused` |
//! | [`foreign_address_unsupported`] | another transport's address is `UnsupportedAddr` for listen and dial |
//! | [`secure_channel`] | the Noise handshake authenticates both ends over it and [`BULK`] bytes cross the `SecureStream` |

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use knotwork_core::{Keypair, Listener, PeerAddr, Transport, TransportError};
use knotwork_crypto_handshake::SecureConfig;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Longest any one check may take.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes each way in [`bulk_echo`].
pub const BULK: usize = 4 << 20;
/// Connections open at once in [`many_connections`].
pub const CONCURRENT: usize = 64;
/// Bytes [`writer_waits`] tries to write into a connection nobody reads.
pub const UNREAD: usize = 64 << 20;

/// A transport under test and how to address it.
pub struct Subject<T> {
    /// The transport.
    pub transport: T,
    /// A fresh address to listen on for each call (port 0, a new path, …).
    pub listen_addr: Arc<dyn Fn() -> PeerAddr + Send + Sync>,
    /// An address of another transport, which this one must refuse.
    pub foreign: PeerAddr,
    /// Whether a reader that saw EOF can still write back to the end that
    /// shut down (TCP and Unix sockets can; a WebSocket close ends both
    /// directions).
    pub half_close: bool,
}

impl<T: Transport> Subject<T> {
    /// A subject with half-close and `mem/1` as the foreign address.
    pub fn new(transport: T, listen_addr: impl Fn() -> PeerAddr + Send + Sync + 'static) -> Self {
        Subject {
            transport,
            listen_addr: Arc::new(listen_addr),
            foreign: PeerAddr::Mem(1),
            half_close: true,
        }
    }

    /// Sets the foreign address.
    pub fn with_foreign(mut self, addr: PeerAddr) -> Self {
        self.foreign = addr;
        self
    }

    /// Declares that the transport has no half-close.
    pub fn without_half_close(mut self) -> Self {
        self.half_close = false;
        self
    }

    async fn listen(&self) -> T::Listener {
        let addr = (self.listen_addr)();
        self.transport
            .listen(&addr)
            .await
            .unwrap_or_else(|e| panic!("listen on {addr}: {e}"))
    }

    async fn dial(&self, addr: &PeerAddr) -> T::Connection {
        self.transport
            .dial(addr)
            .await
            .unwrap_or_else(|e| panic!("dial {addr}: {e}"))
    }

    /// A dialed connection and the accepted end of it.
    async fn pair(&self, listener: &mut T::Listener) -> (T::Connection, T::Connection) {
        let addr = listener.local_addr();
        let (dialed, accepted) = tokio::join!(self.dial(&addr), listener.accept());
        let (accepted, _) = accepted.unwrap_or_else(|e| panic!("accept on {addr}: {e}"));
        (dialed, accepted)
    }
}

/// Runs `check` under [`CHECK_TIMEOUT`].
pub async fn within<F: Future>(what: &str, check: F) -> F::Output {
    tokio::time::timeout(CHECK_TIMEOUT, check)
        .await
        .unwrap_or_else(|_| panic!("{what}: no result in {CHECK_TIMEOUT:?}"))
}

/// `local_addr` is dialable, accept reports an address of the same scheme,
/// and bytes flow both ways.
pub async fn listen_and_dial<T: Transport>(s: &Subject<T>) {
    let mut listener = s.listen().await;
    let local = listener.local_addr();
    assert_eq!(local.scheme(), (s.listen_addr)().scheme());
    let (dialed, accepted) = tokio::join!(s.dial(&local), listener.accept());
    let (mut server, from) = accepted.unwrap();
    assert_eq!(from.scheme(), local.scheme(), "accepted from {from}");
    let mut client = dialed;
    client.write_all(b"ping").await.unwrap();
    client.flush().await.unwrap();
    let mut buf = [0u8; 4];
    server.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
    server.write_all(b"pong").await.unwrap();
    server.flush().await.unwrap();
    client.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"pong");
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 12) as u8)
        .collect()
}

/// Writes `data` in uneven pieces, then flushes.
async fn write_pieces(w: &mut (impl AsyncWrite + Unpin), data: &[u8]) {
    let mut size = 1;
    let mut rest = data;
    while !rest.is_empty() {
        let (now, later) = rest.split_at(size.min(rest.len()));
        w.write_all(now).await.unwrap();
        rest = later;
        size = (size * 7 + 3) % 100_000 + 1;
    }
    w.flush().await.unwrap();
}

/// [`BULK`] bytes echoed back intact while both directions are busy.
pub async fn bulk_echo<T: Transport>(s: &Subject<T>) {
    let mut listener = s.listen().await;
    let (client, mut server) = s.pair(&mut listener).await;
    let echo = async move {
        let mut buf = vec![0u8; 32 * 1024];
        let mut total = 0;
        while total < BULK {
            let n = server.read(&mut buf).await.unwrap();
            assert!(n > 0, "eof after {total} of {BULK} bytes");
            server.write_all(&buf[..n]).await.unwrap();
            server.flush().await.unwrap();
            total += n;
        }
        server
    };
    let (mut rd, mut wr) = tokio::io::split(client);
    let sent = pattern(BULK, 7);
    let send = write_pieces(&mut wr, &sent);
    let receive = async {
        let mut got = vec![0u8; BULK];
        rd.read_exact(&mut got).await.unwrap();
        got
    };
    let (_, _server, got) = tokio::join!(send, echo, receive);
    assert!(got == sent, "echoed bytes differ");
}

/// A writer's shutdown is EOF at the reader after all its bytes; with
/// half-close the reader can then still answer, and the answer's end is EOF
/// at the first end too.
pub async fn shutdown_gives_eof<T: Transport>(s: &Subject<T>) {
    let mut listener = s.listen().await;
    let (mut client, mut server) = s.pair(&mut listener).await;
    let sent = pattern(100_000, 3);
    let write = async {
        write_pieces(&mut client, &sent).await;
        client.shutdown().await.unwrap();
    };
    let mut got = Vec::new();
    let read = server.read_to_end(&mut got);
    let ((), read) = tokio::join!(write, read);
    read.unwrap();
    assert!(
        got == sent,
        "{} bytes before eof, {} sent",
        got.len(),
        sent.len()
    );
    if s.half_close {
        server.write_all(b"answer").await.unwrap();
        server.shutdown().await.unwrap();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, b"answer");
    } else {
        let mut rest = Vec::new();
        let n = client.read_to_end(&mut rest).await.unwrap();
        assert_eq!(n, 0, "no half-close: the shut down end sees eof");
    }
}

/// A dropped connection ends the other end's reads: EOF, or an error that
/// says the peer went away.
pub async fn drop_ends_the_peer<T: Transport>(s: &Subject<T>) {
    let mut listener = s.listen().await;
    let (mut client, mut server) = s.pair(&mut listener).await;
    client.write_all(b"last").await.unwrap();
    client.flush().await.unwrap();
    let mut buf = [0u8; 4];
    server.read_exact(&mut buf).await.unwrap();
    drop(client);
    match server.read(&mut buf).await {
        Ok(0) => {}
        Ok(n) => panic!("read {n} bytes from a dropped peer"),
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
            ),
            "unexpected error after the peer dropped: {e:?}"
        ),
    }
}

/// [`CONCURRENT`] connections at once, each echoing its own bytes.
pub async fn many_connections<T: Transport>(s: &Subject<T>)
where
    T::Listener: 'static,
{
    let mut listener = s.listen().await;
    let addr = listener.local_addr();
    let server = tokio::spawn(async move {
        let mut echoes = Vec::new();
        for _ in 0..CONCURRENT {
            let (mut conn, _) = listener.accept().await.unwrap();
            echoes.push(tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                conn.read_exact(&mut buf).await.unwrap();
                conn.write_all(&buf).await.unwrap();
                conn.flush().await.unwrap();
                let mut end = [0u8; 1];
                let _ = conn.read(&mut end).await;
            }));
        }
        echoes
    });
    let clients = (0..CONCURRENT).map(|i| {
        let addr = addr.clone();
        async move {
            let mut conn = s.dial(&addr).await;
            let mine = pattern(1024, i as u8);
            conn.write_all(&mine).await.unwrap();
            conn.flush().await.unwrap();
            let mut back = vec![0u8; 1024];
            conn.read_exact(&mut back).await.unwrap();
            assert!(back == mine, "connection {i} got another's bytes");
        }
    });
    join_all(clients).await;
    for echo in server.await.unwrap() {
        echo.await.unwrap();
    }
}

/// A writer whose reader stops reading is held back: [`UNREAD`] bytes do not
/// all go out in [`HELD_FOR`] of virtual time (the test's runtime must be a
/// current-thread one, as `#[tokio::test]` makes).
pub async fn writer_waits<T: Transport>(s: &Subject<T>) {
    let mut listener = s.listen().await;
    let (mut client, _server) = s.pair(&mut listener).await;
    let big = vec![0u8; UNREAD];
    let write = async {
        client.write_all(&big).await?;
        client.flush().await
    };
    // On virtual time: once the writer waits and nothing else can run, the
    // clock jumps to the deadline. A transport that buffered without bound
    // would finish the write without ever waiting.
    tokio::time::pause();
    let outcome = tokio::time::timeout(HELD_FOR, write).await;
    tokio::time::resume();
    assert!(
        outcome.is_err(),
        "{UNREAD} bytes went out to a reader that reads nothing: {outcome:?}"
    );
}

/// How long [`writer_waits`] gives the writer, in virtual time.
pub const HELD_FOR: Duration = Duration::from_millis(500);

/// Listening again on a bound address is `AddrInUse`.
pub async fn second_listen_in_use<T: Transport>(s: &Subject<T>) {
    let listener = s.listen().await;
    let addr = listener.local_addr();
    match s.transport.listen(&addr).await {
        Err(TransportError::AddrInUse(a)) => assert_eq!(a, addr),
        Err(other) => panic!("second listen on {addr}: {other:?}"),
        Ok(_) => panic!("second listen on {addr} succeeded"),
    }
}

/// Dialing an address whose listener is gone is `ConnectionRefused`.
pub async fn dial_to_nothing_refused<T: Transport>(s: &Subject<T>) {
    let addr = s.listen().await.local_addr();
    match s.transport.dial(&addr).await {
        Err(TransportError::ConnectionRefused(a)) => assert_eq!(a, addr),
        Err(other) => panic!("dial to {addr} with no listener: {other:?}"),
        Ok(_) => panic!("dial to {addr} with no listener succeeded"),
    }
}

/// Another transport's address is `UnsupportedAddr` for listen and dial.
pub async fn foreign_address_unsupported<T: Transport>(s: &Subject<T>) {
    let foreign = &s.foreign;
    assert!(
        matches!(s.transport.listen(foreign).await, Err(TransportError::UnsupportedAddr(ref a)) if a == foreign),
        "listen on {foreign}"
    );
    assert!(
        matches!(s.transport.dial(foreign).await, Err(TransportError::UnsupportedAddr(ref a)) if a == foreign),
        "dial {foreign}"
    );
}

/// The Noise handshake authenticates both ends over the transport (the
/// dialer pins the listener's PeerId), and [`BULK`] bytes cross the
/// `SecureStream` one way while an answer comes back.
pub async fn secure_channel<T: Transport>(s: &Subject<T>) {
    let mut listener = s.listen().await;
    let (client, server) = s.pair(&mut listener).await;
    let (a, b) = (Keypair::generate().unwrap(), Keypair::generate().unwrap());
    let (a_id, b_id) = (a.peer_id(), b.peer_id());
    let (dialer, accepter) = (SecureConfig::new(a).unwrap(), SecureConfig::new(b).unwrap());
    let (client, server) = tokio::join!(
        dialer.upgrade_outbound(client, Some(b_id)),
        accepter.upgrade_inbound(server)
    );
    let (mut client, mut server) = (client.unwrap(), server.unwrap());
    assert_eq!(
        (client.remote_peer_id(), server.remote_peer_id()),
        (b_id, a_id)
    );
    let sent = pattern(BULK, 11);
    let send = async {
        write_pieces(&mut client, &sent).await;
        let mut answer = [0u8; 2];
        client.read_exact(&mut answer).await.unwrap();
        answer
    };
    let receive = async {
        let mut got = vec![0u8; BULK];
        server.read_exact(&mut got).await.unwrap();
        server.write_all(b"ok").await.unwrap();
        server.flush().await.unwrap();
        got
    };
    let (answer, got) = tokio::join!(send, receive);
    assert_eq!(&answer, b"ok");
    assert!(got == sent, "bytes through the SecureStream differ");
}

/// The suite as tests: `transport_conformance!(subject())` makes a module
/// `conformance` with one `#[tokio::test]` per check, each building its
/// subject with the given expression.
#[macro_export]
macro_rules! transport_conformance {
    ($subject:expr) => {
        mod conformance {
            use super::*;
            $crate::transport_conformance!(@tests $subject;
                listen_and_dial, bulk_echo, shutdown_gives_eof, drop_ends_the_peer,
                many_connections, writer_waits, second_listen_in_use,
                dial_to_nothing_refused, foreign_address_unsupported, secure_channel);
        }
    };
    (@tests $subject:expr; $($check:ident),*) => {
        $(
            #[tokio::test]
            async fn $check() {
                let subject = $subject;
                $crate::transport::within(
                    stringify!($check),
                    $crate::transport::$check(&subject),
                )
                .await;
            }
        )*
    };
}
