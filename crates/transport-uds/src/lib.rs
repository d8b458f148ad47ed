//! knotwork-transport-uds: the [`Transport`] trait over Unix stream sockets.
//!
//! [`UdsTransport`] listens on and dials `uds/<absolute path>` addresses
//! ([`PeerAddr::Uds`]). A listener's socket file:
//!
//! - gets [`UdsConfig::mode`] (owner-only `0600` by default) between `bind`
//!   and `listen`, so a peer can connect only once the mode is set;
//! - replaces a *stale* file, one left by a process that died: when `bind`
//!   finds the path taken by a socket that refuses connections, the file is
//!   removed and bound again. A socket that accepts (a live listener, or one
//!   whose backlog is full) gives [`TransportError::AddrInUse`], and so does
//!   a path that is not a socket: such files are never removed;
//! - is removed when the [`UdsListener`] is dropped, if it is still the file
//!   this listener bound (same device and inode).
//!
//! A Unix socket's peers have no address of their own, so an accepted
//! connection reports the listen address. Dialing a path where nothing
//! listens (no file, or a stale one) is [`TransportError::ConnectionRefused`];
//! a dial that takes longer than [`UdsConfig::dial_timeout`] is
//! [`TransportError::Timeout`].
//!
//! # Example
//! ```
//! use knotwork_core::{Listener, PeerAddr, Transport};
//! use knotwork_transport_uds::UdsTransport;
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = std::env::temp_dir().join(format!("knotwork-uds-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir)?;
//! let path = dir.join("node.sock");
//! let addr = PeerAddr::uds(path.to_str().ok_or("path")?)?;
//! let uds = UdsTransport::default();
//! let mut listener = uds.listen(&addr).await?;
//! let mut client = uds.dial(&addr).await?;
//! let (mut server, from) = listener.accept().await?;
//! assert_eq!(from, addr);
//! client.write_all(b"hi").await?;
//! let mut buf = [0u8; 2];
//! server.read_exact(&mut buf).await?;
//! drop(listener);
//! assert!(!path.exists(), "the listener removed its socket file");
//! # std::fs::remove_dir(&dir)?;
//! # Ok(()) }
//! ```

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use knotwork_core::{Listener, PeerAddr, Transport, TransportError, UdsPath};
use socket2::{Domain, SockAddr, Socket, Type};
use tokio::net::{UnixListener as TokioListener, UnixStream};

/// Connections waiting to be accepted, at most (the kernel caps it at
/// `net.core.somaxconn`).
const BACKLOG: i32 = 1024;

/// Settings of a [`UdsTransport`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct UdsConfig {
    /// Permission bits of a listener's socket file; `None` leaves what the
    /// process umask gives. Connecting needs write permission on the file.
    pub mode: Option<u32>,
    /// How long a dial may take before it fails with [`TransportError::Timeout`].
    pub dial_timeout: Duration,
}

impl Default for UdsConfig {
    fn default() -> Self {
        Self {
            mode: Some(0o600),
            dial_timeout: Duration::from_secs(10),
        }
    }
}

impl UdsConfig {
    /// Sets [`UdsConfig::mode`].
    pub fn with_mode(mut self, mode: Option<u32>) -> Self {
        self.mode = mode;
        self
    }

    /// Sets [`UdsConfig::dial_timeout`].
    pub fn with_dial_timeout(mut self, timeout: Duration) -> Self {
        self.dial_timeout = timeout;
        self
    }
}

/// Unix stream sockets behind the [`Transport`] trait; see the crate docs.
#[derive(Clone, Debug, Default)]
pub struct UdsTransport {
    config: UdsConfig,
}

impl UdsTransport {
    /// A transport with the given settings.
    pub fn new(config: UdsConfig) -> Self {
        Self { config }
    }

    /// The settings in use.
    pub fn config(&self) -> &UdsConfig {
        &self.config
    }

    /// Binds, sets the mode, then listens.
    fn bind(&self, path: &Path) -> io::Result<Socket> {
        let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
        socket.bind(&SockAddr::unix(path)?)?;
        let listening = self
            .config
            .mode
            .map_or(Ok(()), |mode| {
                fs::set_permissions(path, fs::Permissions::from_mode(mode))
            })
            .and_then(|()| socket.listen(BACKLOG));
        if let Err(e) = listening {
            // The file is ours and nobody can be connected yet.
            let _ = fs::remove_file(path);
            return Err(e);
        }
        Ok(socket)
    }
}

fn uds_path(addr: &PeerAddr) -> Result<&UdsPath, TransportError> {
    match addr {
        PeerAddr::Uds(path) => Ok(path),
        other => Err(TransportError::UnsupportedAddr(other.clone())),
    }
}

/// Whether `path` is a socket file that nobody accepts on.
async fn is_stale(path: &Path) -> bool {
    let is_socket = fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket());
    is_socket
        && matches!(
            UnixStream::connect(path).await,
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused
        )
}

/// The device and inode of the file at `path`.
fn file_id(path: &Path) -> io::Result<(u64, u64)> {
    fs::symlink_metadata(path).map(|m| (m.dev(), m.ino()))
}

/// Accepts inbound connections on one socket path; removes the socket file
/// when dropped.
#[derive(Debug)]
pub struct UdsListener {
    inner: TokioListener,
    addr: PeerAddr,
    path: UdsPath,
    /// The socket file's (device, inode), to leave a successor's file alone.
    file: (u64, u64),
}

impl Drop for UdsListener {
    fn drop(&mut self) {
        let path = self.path.as_path();
        if file_id(path).is_ok_and(|id| id == self.file) {
            let _ = fs::remove_file(path);
        }
    }
}

#[async_trait]
impl Listener for UdsListener {
    type Connection = UnixStream;

    fn local_addr(&self) -> PeerAddr {
        self.addr.clone()
    }

    async fn accept(&mut self) -> Result<(UnixStream, PeerAddr), TransportError> {
        let (stream, _) = self.inner.accept().await?;
        Ok((stream, self.addr.clone()))
    }
}

#[async_trait]
impl Transport for UdsTransport {
    type Connection = UnixStream;
    type Listener = UdsListener;

    async fn listen(&self, addr: &PeerAddr) -> Result<UdsListener, TransportError> {
        let path = uds_path(addr)?;
        let socket = match self.bind(path.as_path()) {
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                if !is_stale(path.as_path()).await {
                    return Err(TransportError::AddrInUse(addr.clone()));
                }
                // Gone already if another listener raced us here; its bind
                // or ours then finds the path taken.
                let _ = fs::remove_file(path.as_path());
                self.bind(path.as_path())
            }
            other => other,
        }
        .map_err(|e| match e.kind() {
            io::ErrorKind::AddrInUse => TransportError::AddrInUse(addr.clone()),
            _ => TransportError::Io(e),
        })?;
        let file = file_id(path.as_path())?;
        socket.set_nonblocking(true)?;
        let inner = TokioListener::from_std(socket.into())?;
        Ok(UdsListener {
            inner,
            addr: addr.clone(),
            path: path.clone(),
            file,
        })
    }

    async fn dial(&self, addr: &PeerAddr) -> Result<UnixStream, TransportError> {
        let path = uds_path(addr)?;
        tokio::time::timeout(
            self.config.dial_timeout,
            UnixStream::connect(path.as_path()),
        )
        .await
        .map_err(|_| TransportError::Timeout(addr.clone()))?
        .map_err(|e| match e.kind() {
            io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound => {
                TransportError::ConnectionRefused(addr.clone())
            }
            _ => TransportError::Io(e),
        })
    }
}
