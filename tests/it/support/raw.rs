//! A raw TCP server for responses no well-behaved HTTP stack would send: a
//! body that trickles in one byte a second, a request never answered, a body
//! cut off halfway, a chunked body that never ends, and a huge body generated
//! on the fly (never held in memory). axum would not misbehave like this, so
//! the server speaks HTTP/1.1 by hand on a tokio `TcpListener`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// How the server misbehaves once it has read a request.
#[derive(Debug, Clone, Copy)]
pub enum Misbehaviour {
    /// A 200 head without a length, then one byte of a feed every second, forever.
    OneByteASecond,
    /// Reads the request and never answers; the connection stays open.
    NeverAnswers,
    /// Promises `Content-Length: 100000`, sends the first part of a feed, closes.
    ClosesMidBody,
    /// `Transfer-Encoding: chunked`, a small chunk every 100 ms, never the last chunk.
    EndlessChunks,
    /// A feed-looking body of `bytes` bytes, generated as it is sent; with a
    /// `Content-Length` header or delimited by closing the connection.
    Huge { bytes: u64, declare_length: bool },
}

/// A misbehaving server on loopback. Dropping it stops it and its connections.
pub struct RawServer {
    pub addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl RawServer {
    pub async fn start(behaviour: Misbehaviour) -> RawServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = requests.clone();
        let task = tokio::spawn(async move {
            // Connections live in this set, so aborting the task closes them too.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let counter = counter.clone();
                connections.spawn(async move {
                    let _ = serve(stream, behaviour, &counter).await;
                });
            }
        });
        RawServer {
            addr,
            requests,
            task,
        }
    }

    /// A listener that never accepts, its backlog already full: connecting to
    /// it hangs (the kernel drops the SYNs) until the client's connect timeout.
    pub async fn unaccepting() -> RawServer {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(1).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut held = Vec::new();
        while held.len() < 64 {
            match tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => held.push(stream),
                _ => break,
            }
        }
        let task = tokio::spawn(async move {
            let _keep = (listener, held);
            std::future::pending::<()>().await
        });
        RawServer {
            addr,
            requests: Arc::new(AtomicUsize::new(0)),
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// How many requests the server has read.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for RawServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The first bytes of every body this server sends: an RSS feed's opening.
const FEED_START: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<rss version=\"2.0\"><channel>\
    <title>Misbehaving</title><link>http://example.test/</link><description>d</description>\n";

async fn serve(
    mut stream: TcpStream,
    behaviour: Misbehaviour,
    requests: &AtomicUsize,
) -> std::io::Result<()> {
    read_request_head(&mut stream).await?;
    requests.fetch_add(1, Ordering::SeqCst);
    match behaviour {
        Misbehaviour::OneByteASecond => {
            stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/rss+xml\r\nconnection: close\r\n\r\n")
                .await?;
            for byte in FEED_START.bytes().cycle() {
                stream.write_all(&[byte]).await?;
                stream.flush().await?;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Ok(())
        }
        Misbehaviour::NeverAnswers => {
            // Hold the connection until the client gives up (or the server is dropped).
            let mut buf = [0u8; 1024];
            while stream.read(&mut buf).await? > 0 {}
            Ok(())
        }
        Misbehaviour::ClosesMidBody => {
            stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/rss+xml\r\ncontent-length: 100000\r\n\r\n")
                .await?;
            stream.write_all(FEED_START.as_bytes()).await?;
            stream
                .write_all(b"<item><title>Half a story</title><link>http://example.test/1</link>")
                .await?;
            stream.flush().await?;
            stream.shutdown().await
        }
        Misbehaviour::EndlessChunks => {
            stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/rss+xml\r\ntransfer-encoding: chunked\r\n\r\n")
                .await?;
            write_chunk(&mut stream, FEED_START.as_bytes()).await?;
            loop {
                write_chunk(&mut stream, b"<!-- still here -->\n").await?;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Misbehaviour::Huge {
            bytes,
            declare_length,
        } => {
            let mut head = String::from(
                "HTTP/1.1 200 OK\r\ncontent-type: application/rss+xml\r\nconnection: close\r\n",
            );
            if declare_length {
                head.push_str(&format!("content-length: {bytes}\r\n"));
            }
            head.push_str("\r\n");
            stream.write_all(head.as_bytes()).await?;
            stream.write_all(FEED_START.as_bytes()).await?;
            let filler = "<item><title>Filler</title><description>Padding to make the feed \
                          enormous.</description></item>\n"
                .repeat(512);
            let mut left = bytes.saturating_sub(FEED_START.len() as u64);
            while left > 0 {
                let n = left.min(filler.len() as u64) as usize;
                stream.write_all(&filler.as_bytes()[..n]).await?;
                left -= n as u64;
            }
            stream.shutdown().await
        }
    }
}

async fn write_chunk(stream: &mut TcpStream, data: &[u8]) -> std::io::Result<()> {
    stream
        .write_all(format!("{:x}\r\n", data.len()).as_bytes())
        .await?;
    stream.write_all(data).await?;
    stream.write_all(b"\r\n").await?;
    stream.flush().await
}

/// Reads up to the blank line that ends a request head (bodies are not expected).
async fn read_request_head(stream: &mut TcpStream) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(())
}
