//! [`MemoryTransport`]: an in-process network of bounded pipes.
//!
//! It behaves like TCP where tests care: a second `listen` on a port fails
//! with [`TransportError::AddrInUse`], a dial to a port nobody listens on fails
//! with [`TransportError::ConnectionRefused`], each direction of a connection
//! is a bounded buffer (a writer waits when the reader stops reading), and a
//! dropped end gives the other end EOF. Listening on `mem/0` picks a free port.
//!
//! Each [`MemoryTransport::new`] is a separate network; clones share it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use tokio::io::DuplexStream;
use tokio::sync::mpsc;

use crate::PeerAddr;
use crate::transport::{Listener, Transport, TransportError};

/// Bytes buffered per direction of a connection, by default.
pub const DEFAULT_PIPE_CAPACITY: usize = 64 * 1024;
/// Connections waiting in a listener's accept queue, at most.
pub const ACCEPT_BACKLOG: usize = 128;
/// The first port handed out for `mem/0` listeners and for dialers.
const FIRST_EPHEMERAL_PORT: u64 = 1 << 16;

type Incoming = (DuplexStream, PeerAddr);

#[derive(Default)]
struct Network {
    listeners: HashMap<u64, mpsc::Sender<Incoming>>,
    next_port: u64,
}

impl Network {
    fn ephemeral_port(&mut self) -> u64 {
        loop {
            let port = FIRST_EPHEMERAL_PORT.wrapping_add(self.next_port);
            self.next_port = self.next_port.wrapping_add(1);
            if !self.listeners.contains_key(&port) {
                return port;
            }
        }
    }
}

/// An in-process transport for tests and examples; see the module docs.
#[derive(Clone)]
pub struct MemoryTransport {
    net: Arc<Mutex<Network>>,
    capacity: usize,
}

impl Default for MemoryTransport {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryTransport {
    /// A new, empty network with [`DEFAULT_PIPE_CAPACITY`] bytes per direction.
    pub fn new() -> Self {
        Self::with_capacity(DEFAULT_PIPE_CAPACITY)
    }

    /// A new, empty network buffering at most `capacity` bytes per direction.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            net: Arc::new(Mutex::new(Network::default())),
            capacity: capacity.max(1),
        }
    }

    fn net(&self) -> MutexGuard<'_, Network> {
        // A poisoned lock only means another thread panicked mid-update of a
        // map that stays consistent; keep using it.
        self.net.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Accepts connections on one memory port; frees the port when dropped.
pub struct MemoryListener {
    port: u64,
    incoming: mpsc::Receiver<Incoming>,
    transport: MemoryTransport,
}

impl Drop for MemoryListener {
    fn drop(&mut self) {
        self.transport.net().listeners.remove(&self.port);
    }
}

#[async_trait]
impl Listener for MemoryListener {
    type Connection = DuplexStream;

    fn local_addr(&self) -> PeerAddr {
        PeerAddr::Mem(self.port)
    }

    async fn accept(&mut self) -> Result<(DuplexStream, PeerAddr), TransportError> {
        self.incoming
            .recv()
            .await
            .ok_or(TransportError::ListenerClosed)
    }
}

#[async_trait]
impl Transport for MemoryTransport {
    type Connection = DuplexStream;
    type Listener = MemoryListener;

    async fn listen(&self, addr: &PeerAddr) -> Result<MemoryListener, TransportError> {
        let PeerAddr::Mem(requested) = addr else {
            return Err(TransportError::UnsupportedAddr(addr.clone()));
        };
        let mut net = self.net();
        let port = match *requested {
            0 => net.ephemeral_port(),
            p if net.listeners.contains_key(&p) => {
                return Err(TransportError::AddrInUse(addr.clone()));
            }
            p => p,
        };
        let (tx, rx) = mpsc::channel(ACCEPT_BACKLOG);
        net.listeners.insert(port, tx);
        Ok(MemoryListener {
            port,
            incoming: rx,
            transport: self.clone(),
        })
    }

    async fn dial(&self, addr: &PeerAddr) -> Result<DuplexStream, TransportError> {
        let PeerAddr::Mem(port) = addr else {
            return Err(TransportError::UnsupportedAddr(addr.clone()));
        };
        let (sender, from) = {
            let mut net = self.net();
            let sender = net
                .listeners
                .get(port)
                .cloned()
                .ok_or_else(|| TransportError::ConnectionRefused(addr.clone()))?;
            (sender, PeerAddr::Mem(net.ephemeral_port()))
        };
        let (ours, theirs) = tokio::io::duplex(self.capacity);
        // Waits while the accept backlog is full, like a SYN queue.
        sender
            .send((theirs, from))
            .await
            .map_err(|_| TransportError::ConnectionRefused(addr.clone()))?;
        Ok(ours)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn second_listen_is_addr_in_use() {
        let t = MemoryTransport::new();
        let _l = t.listen(&PeerAddr::Mem(5)).await.unwrap();
        assert!(matches!(
            t.listen(&PeerAddr::Mem(5)).await,
            Err(TransportError::AddrInUse(PeerAddr::Mem(5)))
        ));
    }

    #[tokio::test]
    async fn dial_without_listener_is_refused() {
        let t = MemoryTransport::new();
        assert!(matches!(
            t.dial(&PeerAddr::Mem(9)).await,
            Err(TransportError::ConnectionRefused(PeerAddr::Mem(9)))
        ));
        // A dropped listener frees its port.
        let l = t.listen(&PeerAddr::Mem(9)).await.unwrap();
        drop(l);
        assert!(matches!(
            t.dial(&PeerAddr::Mem(9)).await,
            Err(TransportError::ConnectionRefused(_))
        ));
        t.listen(&PeerAddr::Mem(9)).await.unwrap();
    }

    #[tokio::test]
    async fn networks_are_separate_and_clones_share() {
        let a = MemoryTransport::new();
        let b = MemoryTransport::new();
        let _l = a.listen(&PeerAddr::Mem(1)).await.unwrap();
        assert!(b.dial(&PeerAddr::Mem(1)).await.is_err());
        assert!(a.clone().dial(&PeerAddr::Mem(1)).await.is_ok());
    }

    #[tokio::test]
    async fn port_zero_picks_a_port_and_bytes_flow_both_ways() {
        let t = MemoryTransport::new();
        let mut l = t.listen(&PeerAddr::Mem(0)).await.unwrap();
        let addr = l.local_addr();
        assert_ne!(addr, PeerAddr::Mem(0));
        let mut c = t.dial(&addr).await.unwrap();
        let (mut s, from) = l.accept().await.unwrap();
        assert!(matches!(from, PeerAddr::Mem(p) if p != 0));
        c.write_all(b"ping").await.unwrap();
        let mut buf = [0; 4];
        s.read_exact(&mut buf).await.unwrap();
        s.write_all(b"pong").await.unwrap();
        c.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong");
        drop(s);
        assert_eq!(c.read(&mut buf).await.unwrap(), 0, "EOF after peer drop");
    }

    #[tokio::test]
    async fn writer_waits_when_reader_stops() {
        let t = MemoryTransport::with_capacity(1024);
        let mut l = t.listen(&PeerAddr::Mem(0)).await.unwrap();
        let mut c = t.dial(&l.local_addr()).await.unwrap();
        let (_s, _) = l.accept().await.unwrap();
        let big = vec![0u8; 4096];
        let res =
            tokio::time::timeout(std::time::Duration::from_millis(50), c.write_all(&big)).await;
        assert!(res.is_err(), "write of 4 KiB into a 1 KiB pipe must block");
    }

    #[tokio::test]
    async fn non_memory_address_is_unsupported() {
        let t = MemoryTransport::new();
        let tcp: PeerAddr = "tcp/127.0.0.1:1".parse().unwrap();
        assert!(matches!(
            t.dial(&tcp).await,
            Err(TransportError::UnsupportedAddr(_))
        ));
    }
}
