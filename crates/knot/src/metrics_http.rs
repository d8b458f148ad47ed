//! The HTTP endpoint of `knot run --metrics`: `GET /metrics` answered with
//! the node's registry ([`Metrics::encode`]) by a minimal HTTP/1.1
//! responder: one request per connection, at most [`MAX_CLIENTS`] at once,
//! a request head of at most [`MAX_REQUEST_HEAD`] bytes read within
//! [`REQUEST_TIMEOUT`], anything else answered 404/400. Bind it to loopback
//! or a private address.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use knotwork_node::Metrics;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The longest HTTP request head the endpoint reads.
pub(crate) const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// Time a client has to send its request head.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Requests the endpoint serves at once; more wait in the listen backlog.
pub(crate) const MAX_CLIENTS: usize = 8;

/// Serves `GET /metrics` of `metrics` on `addr` until the returned server is dropped.
pub(crate) async fn serve(metrics: &Metrics, addr: SocketAddr) -> std::io::Result<MetricsServer> {
    let listener = TcpListener::bind(addr).await?;
    let local_addr = listener.local_addr()?;
    let metrics = metrics.clone();
    let task = tokio::spawn(async move {
        // At most MAX_CLIENTS requests at once: more wait in the listen
        // backlog, so an open endpoint cannot eat the process's file
        // descriptors (review finding L7).
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CLIENTS));
        loop {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(REQUEST_TIMEOUT, respond(stream, &metrics)).await;
                drop(permit);
            });
        }
    });
    Ok(MetricsServer { local_addr, task })
}

/// The running HTTP endpoint of [`serve`]; stops when dropped.
#[derive(Debug)]
pub(crate) struct MetricsServer {
    local_addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl MetricsServer {
    /// The address it listens on.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one request head and answers it.
async fn respond(mut stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_REQUEST_HEAD {
            return reply(&mut stream, "431 Request Header Fields Too Large", "").await;
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(buf.get(..n).unwrap_or_default());
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    match (parts.next(), parts.next()) {
        (Some(b"GET"), Some(b"/metrics")) => reply(&mut stream, "200 OK", &metrics.encode()).await,
        (Some(_), Some(_)) => reply(&mut stream, "404 Not Found", "").await,
        _ => reply(&mut stream, "400 Bad Request", "").await,
    }
}

async fn reply(stream: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn endpoint_answers_metrics_404_and_garbage() {
        let m = Metrics::new();
        let server = serve(&m, "127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = server.local_addr();
        let get = |req: &'static [u8]| async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(req).await.unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        let ok = get(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("knot_peers 0"), "{ok}");
        let missing = get(b"GET /other HTTP/1.1\r\n\r\n").await;
        assert!(missing.starts_with("HTTP/1.1 404"));
        let bad = get(b"garbage\r\n\r\n").await;
        assert!(bad.starts_with("HTTP/1.1 400"));
        let huge = get(&[b'a'; 9 * 1024]).await;
        assert!(huge.starts_with("HTTP/1.1 431"));
        // Silent clients hold at most MAX_CLIENTS slots; the next request
        // waits for one to time out instead of opening a connection task.
        let mut silent = Vec::new();
        for _ in 0..MAX_CLIENTS {
            silent.push(TcpStream::connect(addr).await.unwrap());
        }
        let waiting = tokio::time::timeout(
            Duration::from_millis(300),
            get(b"GET /metrics HTTP/1.1\r\n\r\n"),
        )
        .await;
        assert!(waiting.is_err(), "served past the client limit");
        drop(silent);
    }
}
