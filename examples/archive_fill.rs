//! Fills a feedwatch database with many stories the way the daemon does, for measuring
//! `feedwatch backtest` (and `eval --stored`) on a realistic archive.
//!
//! ```text
//! cargo run --release --example archive_fill -- /tmp/fw-archive --stories 20000
//! target/release/feedwatch backtest --config /tmp/fw-archive/config.toml
//! ```
//!
//! It writes `DIR/config.toml` (the shipped default topics, no webhooks, the database
//! `sqlite://DIR/feedwatch.db` or `--database URL`), serves generated RSS feeds on a
//! loopback port, and runs one `once` pass through the library (`App::run_once`): every
//! story is fetched, parsed, normalised, deduplicated, matched and stored by the real
//! pipeline. Story texts come from the labelled development set
//! (`../shared/data/topics-dev.json`, or `--data PATH`): a dev-set title, sentences of
//! words drawn at random from the whole set's vocabulary (so topic words turn up at about
//! their usual rate, but word runs are new and stories are not near-duplicates of each
//! other), and in one story out of eight a real sentence of a dev-set story, which is what
//! makes most matches. Published dates are spread over the last 60 days.

use std::path::PathBuf;
use std::process::ExitCode;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;

/// Stories per generated feed (well under the default 10 MiB body cap).
const PER_FEED: usize = 2_500;

#[derive(Deserialize)]
struct DevSet {
    items: Vec<DevItem>,
}

#[derive(Deserialize)]
struct DevItem {
    title: String,
    body: String,
}

struct Args {
    dir: PathBuf,
    stories: usize,
    database: Option<String>,
    data: PathBuf,
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let mut dir = None;
    let mut stories = 20_000;
    let mut database = None;
    let mut data = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/data/topics-dev.json"
    ));
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--stories" => {
                stories = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .ok_or("--stories needs a number")?;
            }
            "--database" => database = Some(args.next().ok_or("--database needs a URL")?),
            "--data" => data = PathBuf::from(args.next().ok_or("--data needs a path")?),
            other if !other.starts_with('-') && dir.is_none() => dir = Some(PathBuf::from(other)),
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    Ok(Args {
        dir: dir.ok_or("give the directory to write the config (and database) into")?,
        stories,
        database,
        data,
    })
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            eprintln!(
                "usage: archive_fill DIR [--stories N] [--database URL] [--data topics-dev.json]"
            );
            return ExitCode::from(2);
        }
    };
    feedwatch::fetch::install_crypto_provider();
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    match runtime.block_on(fill(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn fill(args: Args) -> anyhow::Result<()> {
    let dev: DevSet = serde_json::from_str(&std::fs::read_to_string(&args.data)?)?;
    let sentences: Vec<String> = dev
        .items
        .iter()
        .flat_map(|i| i.body.split(". "))
        .map(|s| s.trim().trim_end_matches('.').to_owned())
        .filter(|s| s.split_whitespace().count() >= 5)
        .collect();
    let titles: Vec<&str> = dev.items.iter().map(|i| i.title.as_str()).collect();
    let words: Vec<&str> = dev
        .items
        .iter()
        .flat_map(|i| i.body.split_whitespace())
        .collect();
    let feeds = generate_feeds(args.stories, &titles, &words, &sentences);

    let base = serve(feeds.clone()).await;
    std::fs::create_dir_all(&args.dir)?;
    let dir = std::fs::canonicalize(&args.dir)?;
    let database = args
        .database
        .unwrap_or_else(|| format!("sqlite://{}", dir.join("feedwatch.db").display()));
    let repo_config: toml::Table = toml::from_str(&std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config.toml"
    ))?)?;
    let mut topics = toml::Table::new();
    topics.insert(
        "topics".into(),
        repo_config
            .get("topics")
            .cloned()
            .unwrap_or(toml::Value::Array(Vec::new())),
    );
    let mut config = format!(
        "[database]\nurl = \"{database}\"\nmax_connections = 4\n\n\
         [http]\nper_host_delay = \"0s\"\nmax_body_bytes = 104857600\n\n"
    );
    for n in 0..feeds.len() {
        config += &format!(
            "[[sources]]\nname = \"generated-{n}\"\nkind = \"feed\"\nurl = \"{base}feed/{n}\"\n\n"
        );
    }
    config += &toml::to_string(&topics)?;
    let path = dir.join("config.toml");
    std::fs::write(&path, config)?;

    let started = std::time::Instant::now();
    let app = feedwatch::app::App::build(feedwatch::config::Config::load(&path)?).await?;
    let report = app.run_once().await?;
    let counts = app.store().counts().await?;
    app.store().close().await;
    println!(
        "{} feeds polled ({} failed) in {:.1} s: {} new stories, {} duplicates; \
         the database holds {} stories and {} matches",
        report.sources,
        report.polls_failed,
        started.elapsed().as_secs_f64(),
        report.stories_new,
        report.stories_duplicate,
        counts.stories,
        counts.matches
    );
    println!("config: {}", path.display());
    Ok(())
}

/// RSS feeds of `PER_FEED` generated stories each, `stories` in all.
fn generate_feeds(
    stories: usize,
    titles: &[&str],
    words: &[&str],
    sentences: &[String],
) -> Vec<String> {
    let mut rng = StdRng::seed_from_u64(15);
    let now = chrono::Utc::now();
    let mut feeds = Vec::new();
    let mut i = 0;
    while i < stories {
        let mut feed = String::from(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<rss version=\"2.0\" \
             xmlns:content=\"http://purl.org/rss/1.0/modules/content/\"><channel>\
             <title>Generated</title><link>https://archive.example.test/</link>\n",
        );
        for _ in 0..PER_FEED.min(stories - i) {
            let title = titles[rng.random_range(0..titles.len())];
            let mut body = String::new();
            for _ in 0..rng.random_range(6..16) {
                let sentence: Vec<&str> = (0..rng.random_range(8..25))
                    .map(|_| words[rng.random_range(0..words.len())])
                    .collect();
                body += &format!("<p>{}.</p>", escape(&sentence.join(" ")));
            }
            if rng.random_range(0..8) == 0 {
                let real = &sentences[rng.random_range(0..sentences.len())];
                body += &format!("<p>{}.</p>", escape(real));
            }
            body += &format!(
                "<p>Archive reference {i}, desk {}.</p>",
                rng.random::<u32>()
            );
            let published = now - chrono::TimeDelta::minutes(rng.random_range(0..60 * 24 * 60));
            feed += &format!(
                "<item><title>{title} ({i})</title>\
                 <link>https://archive.example.test/{y}/story-{i}</link>\
                 <guid>https://archive.example.test/?p={i}</guid>\
                 <pubDate>{date}</pubDate>\
                 <content:encoded><![CDATA[{body}]]></content:encoded></item>\n",
                title = escape(title),
                y = published.format("%Y/%m/%d"),
                date = published.to_rfc2822(),
            );
            i += 1;
        }
        feed += "</channel></rss>\n";
        feeds.push(feed);
    }
    feeds
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Serves `feeds[n]` at `/feed/n` on a loopback port; returns the base URL.
async fn serve(feeds: Vec<String>) -> String {
    use axum::extract::Path;
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;

    let app = axum::Router::new().route(
        "/feed/{n}",
        axum::routing::get(move |Path(n): Path<usize>| {
            let feed = feeds.get(n).cloned();
            async move {
                match feed {
                    Some(body) => {
                        ([(header::CONTENT_TYPE, "application/rss+xml")], body).into_response()
                    }
                    None => StatusCode::NOT_FOUND.into_response(),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let addr = listener.local_addr().expect("the bound address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/")
}
