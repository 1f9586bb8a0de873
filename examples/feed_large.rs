//! Generates one RSS feed with many WordPress-style items and times `parse_feed` on it.
//! Peak memory comes from the outside:
//!
//! `cargo build --release --example feed_large && /usr/bin/time -v target/release/examples/feed_large 100000 500`
//!
//! Arguments: number of items (default 100,000), bytes of `content:encoded` per item
//! (default 500).

use std::time::Instant;

use chrono::Utc;
use feedwatch::source::feed::parse_feed;
use url::Url;

fn main() {
    let mut args = std::env::args().skip(1);
    let items: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let body_bytes: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(500);

    let started = Instant::now();
    let feed = generate(items, body_bytes);
    let generated = started.elapsed();

    let url = Url::parse("https://large.example.test/feed/").expect("valid literal");
    let started = Instant::now();
    let parsed = parse_feed(
        feed.as_bytes(),
        Some("application/rss+xml"),
        &url,
        Utc::now(),
    );
    let elapsed = started.elapsed();
    match parsed {
        Ok(parsed) => {
            let missing = parsed.entries.iter().filter(|e| e.date_was_missing).count();
            println!(
                "{items} items, {:.1} MB body (generated in {:.2} s): parsed {} entries \
                 ({missing} without a date) in {:.2} s",
                feed.len() as f64 / 1e6,
                generated.as_secs_f64(),
                parsed.entries.len(),
                elapsed.as_secs_f64()
            );
        }
        Err(e) => println!(
            "{items} items: failed after {:.2} s: {e}",
            elapsed.as_secs_f64()
        ),
    }
}

fn generate(items: usize, body_bytes: usize) -> String {
    let paragraph = "Tariff talks resumed on Tuesday. ";
    let body: String = paragraph.repeat(body_bytes / paragraph.len() + 1)[..body_bytes].to_owned();
    let mut out = String::with_capacity(items * (body_bytes + 600) + 1024);
    out.push_str(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<rss version=\"2.0\" \
         xmlns:content=\"http://purl.org/rss/1.0/modules/content/\" \
         xmlns:dc=\"http://purl.org/dc/elements/1.1/\">\n<channel>\n\
         <title>Large generated feed</title>\n<link>https://large.example.test/</link>\n",
    );
    for i in 0..items {
        let day = 1 + i % 28;
        out.push_str(&format!(
            "<item>\n<title>Generated story number {i}</title>\n\
             <link>https://large.example.test/2024/05/{day:02}/story-{i}/</link>\n\
             <dc:creator><![CDATA[Writer {w}]]></dc:creator>\n\
             <pubDate>Tue, {day:02} May 2024 09:30:00 +0000</pubDate>\n\
             <category><![CDATA[Economy]]></category>\n\
             <guid isPermaLink=\"false\">https://large.example.test/?p={i}</guid>\n\
             <description><![CDATA[<p>Summary of story {i} [&#8230;]</p>]]></description>\n\
             <content:encoded><![CDATA[<p>{body}</p>]]></content:encoded>\n</item>\n",
            w = i % 50
        ));
    }
    out.push_str("</channel>\n</rss>\n");
    out
}
