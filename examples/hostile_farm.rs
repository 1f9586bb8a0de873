//! A local farm of hostile feeds, for measuring what `feedwatch once` costs against
//! them (peak RSS, time) from the outside. One plain HTTP/1.1 server on loopback,
//! written by hand so it can misbehave; every body is generated (none held in
//! memory except the small gzip bomb and the two large feeds, built at start).
//!
//! ```text
//! cargo build --release --example hostile_farm
//! target/release/examples/hostile_farm 8790 &
//! /usr/bin/time -v target/release/feedwatch once --config CONFIG
//! ```
//!
//! Paths (the argument is the port, default 8790):
//! `/huge-declared` and `/huge-streamed` (100 MB, with and without `Content-Length`),
//! `/gzip-bomb` (~50 KB of gzip inflating to 50 MiB), `/trickle` (one byte a second),
//! `/silent` (never answers), `/mid-body` (closes halfway), `/endless` (chunked, never
//! ends), `/bulletins` (100,000 items), `/big-item` (one 5 MB item), `/deep` (content
//! nested 100,000 levels), `/small` (three items, a baseline).

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const FEED_START: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<rss version=\"2.0\" \
    xmlns:content=\"http://purl.org/rss/1.0/modules/content/\"><channel><title>Farm</title>\
    <link>http://farm.test/</link><description>Hostile feeds</description>\n";
const FEED_END: &str = "</channel></rss>\n";

/// Bodies built once at start.
struct Prepared {
    gzip_bomb: Vec<u8>,
    bulletins: String,
    big_item: String,
    deep: String,
    small: String,
}

fn prepare(port: u16) -> std::io::Result<Prepared> {
    let base = format!("http://127.0.0.1:{port}");
    let date = chrono::Utc::now().to_rfc2822();
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..50 {
        encoder.write_all(&zeros)?;
    }
    let gzip_bomb = encoder.finish()?;

    let mut bulletins = String::from(FEED_START);
    for n in 0..100_000 {
        bulletins += &format!(
            "<item><title>Bulletin {n}</title><link>{base}/b/{n}</link><pubDate>{date}</pubDate>\
             <description>Council bulletin number {n} lists item {n} of the agenda.</description></item>\n"
        );
    }
    bulletins += FEED_END;

    let paragraph = "<p>The finance committee reviewed the harbour budget line by line.</p>\n";
    let big_item = format!(
        "{FEED_START}<item><title>The whole budget</title><link>{base}/budget/</link>\
         <content:encoded><![CDATA[{}]]></content:encoded></item>\n{FEED_END}",
        paragraph.repeat(5_000_000 / paragraph.len() + 1)
    );
    let deep = format!(
        "{FEED_START}<item><title>Deep markup</title><link>{base}/deep/</link>\
         <content:encoded><![CDATA[{}Deep inside.{}]]></content:encoded></item>\n{FEED_END}",
        "<div>".repeat(100_000),
        "</div>".repeat(100_000)
    );
    let small = format!(
        "{FEED_START}{}{FEED_END}",
        (0..3)
            .map(|n| format!(
                "<item><title>Small {n}</title><link>{base}/small/{n}</link>\
                 <pubDate>{date}</pubDate><description>Item {n} of a small feed about \
                 {}.</description></item>\n",
                ["ferries", "libraries", "trams"][n]
            ))
            .collect::<String>()
    );
    Ok(Prepared {
        gzip_bomb,
        bulletins,
        big_item,
        deep,
        small,
    })
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(8790);
    let prepared = Arc::new(prepare(port)?);
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    eprintln!("hostile farm on http://127.0.0.1:{port}/");
    loop {
        let (stream, _) = listener.accept().await?;
        let prepared = prepared.clone();
        tokio::spawn(async move {
            if let Err(e) = serve(stream, &prepared).await {
                eprintln!("connection ended: {e}");
            }
        });
    }
}

async fn serve(mut stream: TcpStream, prepared: &Prepared) -> std::io::Result<()> {
    let path = read_path(&mut stream).await?;
    eprintln!("GET {path}");
    let ok = |extra: &str| {
        format!("HTTP/1.1 200 OK\r\ncontent-type: application/rss+xml\r\n{extra}\r\n")
    };
    match path.as_str() {
        "/huge-declared" | "/huge-streamed" => {
            let total: u64 = 100 * 1000 * 1000;
            let head = if path == "/huge-declared" {
                ok(&format!("content-length: {total}\r\nconnection: close\r\n"))
            } else {
                ok("connection: close\r\n")
            };
            stream.write_all(head.as_bytes()).await?;
            let filler = "<item><title>Filler</title></item>\n".repeat(2048);
            let mut left = total;
            while left > 0 {
                let n = left.min(filler.len() as u64) as usize;
                stream.write_all(&filler.as_bytes()[..n]).await?;
                left -= n as u64;
            }
            stream.shutdown().await
        }
        "/gzip-bomb" => {
            let head = ok(&format!(
                "content-encoding: gzip\r\ncontent-length: {}\r\n",
                prepared.gzip_bomb.len()
            ));
            stream.write_all(head.as_bytes()).await?;
            stream.write_all(&prepared.gzip_bomb).await
        }
        "/trickle" => {
            stream
                .write_all(ok("connection: close\r\n").as_bytes())
                .await?;
            for byte in FEED_START.bytes().cycle() {
                stream.write_all(&[byte]).await?;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Ok(())
        }
        "/silent" => {
            let mut buf = [0u8; 1024];
            while stream.read(&mut buf).await? > 0 {}
            Ok(())
        }
        "/mid-body" => {
            stream
                .write_all(ok("content-length: 100000\r\n").as_bytes())
                .await?;
            stream.write_all(FEED_START.as_bytes()).await?;
            stream.shutdown().await
        }
        "/endless" => {
            stream
                .write_all(ok("transfer-encoding: chunked\r\n").as_bytes())
                .await?;
            loop {
                let chunk = "<!-- still here -->\n";
                stream
                    .write_all(format!("{:x}\r\n{chunk}\r\n", chunk.len()).as_bytes())
                    .await?;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        "/bulletins" => send(&mut stream, prepared.bulletins.as_bytes()).await,
        "/big-item" => send(&mut stream, prepared.big_item.as_bytes()).await,
        "/deep" => send(&mut stream, prepared.deep.as_bytes()).await,
        "/small" => send(&mut stream, prepared.small.as_bytes()).await,
        _ => {
            stream
                .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                .await
        }
    }
}

/// A 200 head with `extra` header lines (each ending in CRLF).
fn ok(extra: &str) -> String {
    format!("HTTP/1.1 200 OK\r\ncontent-type: application/rss+xml\r\n{extra}\r\n")
}

async fn send(stream: &mut TcpStream, body: &[u8]) -> std::io::Result<()> {
    let head = ok(&format!(
        "content-length: {}\r\nconnection: close\r\n",
        body.len()
    ));
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.shutdown().await
}

/// The path of the request line; the rest of the head is read and ignored.
async fn read_path(stream: &mut TcpStream) -> std::io::Result<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    Ok(line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .split('?')
        .next()
        .unwrap_or("/")
        .to_string())
}
