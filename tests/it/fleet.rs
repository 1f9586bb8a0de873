//! Several `feedwatch run` daemons sharing one Postgres, as issue 14 runs them: three
//! daemons, a farm of 200 feeds on loopback and one webhook receiver, for a few
//! intervals, one daemon killed with SIGKILL halfway. Each daemon has its own config
//! file (so its own instance name) and its own `User-Agent`, so the farm can tell who
//! polled what and when.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::support::http::{Receiver, Resource, Site};
use crate::support::*;

const FEEDS: usize = 200;
/// Feeds that get a new item each round (in pairs carrying near copies of one story).
const PER_ROUND: usize = 20;
const ROUNDS: usize = 6;
const INTERVAL: Duration = Duration::from_secs(4);
const LEASE: Duration = Duration::from_secs(4);
/// How long the farm takes to answer, so that every daemon has polls in flight.
const ANSWER_DELAY: Duration = Duration::from_millis(100);

/// A made-up word, a pure function of `seed`: bodies of different stories share
/// almost no word 3-shingles, so only the intended copies are near duplicates.
fn word(seed: u64) -> String {
    const ONSETS: [&str; 12] = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t"];
    const VOWELS: [&str; 5] = ["a", "e", "i", "o", "u"];
    let bytes = blake3::hash(&seed.to_le_bytes());
    let b = bytes.as_bytes();
    (0..3)
        .map(|i| {
            format!(
                "{}{}",
                ONSETS[b[2 * i] as usize % ONSETS.len()],
                VOWELS[b[2 * i + 1] as usize % VOWELS.len()]
            )
        })
        .collect()
}

/// The body of story `story`: 80 made-up words, with a sentence about tariffs when
/// `matching`; `edit` changes one word (a syndicated copy).
fn body(story: u64, matching: bool, edit: bool) -> String {
    let mut words: Vec<String> = (0..80).map(|k| word(story * 1000 + k)).collect();
    if edit {
        words[40] = "changed".into();
    }
    let text = words.join(" ");
    if matching {
        format!("{text}. The government announced new tariffs on steel imports.")
    } else {
        format!("{text}.")
    }
}

/// One item of a feed.
struct Item {
    link: String,
    title: String,
    body: String,
}

fn render(items: &[Item]) -> Resource {
    let date = chrono::Utc::now().to_rfc2822();
    let items: String = items
        .iter()
        .rev()
        .map(|i| {
            format!(
                "<item><title>{}</title><link>{}</link><pubDate>{date}</pubDate>\
                 <description>{}</description></item>",
                i.title, i.link, i.body
            )
        })
        .collect();
    Resource::ok(
        "application/rss+xml",
        format!(
            "<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>farm</title>{items}</channel></rss>"
        ),
    )
    .with_delay(ANSWER_DELAY)
}

/// The farm's feeds, as items, and what storing them must give.
struct Farm {
    site: Site,
    feeds: Vec<Vec<Item>>,
    /// Every item link served.
    links: HashSet<String>,
    /// The alerts due: one per matching story, a pair of near copies being one story.
    alerts_due: usize,
    /// The near-copy pairs (original link, copy link).
    pairs: Vec<(String, String)>,
}

impl Farm {
    async fn start() -> Farm {
        let mut farm = Farm {
            site: Site::start().await,
            feeds: (0..FEEDS).map(|_| Vec::new()).collect(),
            links: HashSet::new(),
            alerts_due: 0,
            pairs: Vec::new(),
        };
        for f in 0..FEEDS {
            let matching = f % 4 == 0;
            farm.add(f, f as u64, matching, false);
            farm.alerts_due += usize::from(matching);
            farm.publish(f);
        }
        farm
    }

    fn add(&mut self, feed: usize, story: u64, matching: bool, edit: bool) -> String {
        let n = self.feeds[feed].len();
        let link = format!("https://fleet.example/{feed}/{n}/");
        self.feeds[feed].push(Item {
            link: link.clone(),
            title: format!("Story {story} in feed {feed}"),
            body: body(story, matching, edit),
        });
        self.links.insert(link.clone());
        link
    }

    fn publish(&self, feed: usize) {
        self.site
            .put(&format!("/feed/{feed}.xml"), render(&self.feeds[feed]));
    }

    /// Round `r`: `PER_ROUND` feeds get a new matching story, each pair of them near
    /// copies of one story, published at the same instant.
    fn round(&mut self, r: usize) {
        let first = (r - 1) * PER_ROUND % FEEDS;
        for pair in 0..PER_ROUND / 2 {
            let (a, b) = (first + 2 * pair, first + 2 * pair + 1);
            let story = 10_000 + (r * PER_ROUND + pair) as u64;
            let original = self.add(a, story, true, false);
            let copy = self.add(b, story, true, true);
            self.pairs.push((original, copy));
            self.alerts_due += 1;
        }
        for f in first..first + PER_ROUND {
            self.publish(f);
        }
    }
}

/// Who polled: the `User-Agent` each daemon is given.
fn poller(r: &crate::support::http::SeenRequest) -> String {
    r.headers
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_daemons_share_200_feeds_and_take_over_a_killed_ones_sources() {
    let Some(db) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    let mut farm = Farm::start().await;
    let receiver = Receiver::start().await;
    let sources: String = (0..FEEDS)
        .map(|f| {
            format!(
                "[[sources]]\nname = \"f{f}\"\nkind = \"feed\"\nurl = \"{}\"\n",
                farm.site.url(&format!("/feed/{f}.xml"))
            )
        })
        .collect();
    let config = |name: &str| {
        let head = config_head_with(&db.url, &format!("lease = \"{}s\"", LEASE.as_secs()))
            .replace("max_connections = 2", "max_connections = 4")
            .replace(
                "per_host_delay = \"0s\"",
                &format!(
                    "per_host_delay = \"0s\"\nper_host_concurrency = 64\nglobal_concurrency = 64\n\
                 user_agent = \"fleet-{name}\""
                ),
            );
        TestConfig::write(&format!(
            "{head}\n[defaults]\ninterval = \"{}s\"\n{TEST_TOPICS}\
             [[webhooks]]\nname = \"w\"\nurl = \"{}\"\nsecret = \"{SECRET}\"\n{sources}",
            INTERVAL.as_secs(),
            receiver.url()
        ))
    };
    let configs: Vec<(String, TestConfig)> = ["a", "b", "c"]
        .iter()
        .map(|n| (format!("fleet-{n}"), config(n)))
        .collect();
    let quiet = std::env::var("TEST_LOG").is_err();
    let spawn = |config: &TestConfig| {
        let mut cmd = command(&["run", "--config", config.path.to_str().unwrap()]);
        if quiet {
            // 200 sources polled every few seconds: one warning each about the short interval.
            cmd.stderr(std::process::Stdio::null());
        }
        cmd.spawn().expect("spawn feedwatch run")
    };
    let started = Instant::now();
    let mut daemons: Vec<_> = configs.iter().map(|(_, c)| spawn(c)).collect();

    // Every feed polled once: the fleet is up.
    let deadline = started + Duration::from_secs(60);
    loop {
        let polled: HashSet<String> = farm.site.requests().into_iter().map(|r| r.path).collect();
        if polled.len() == FEEDS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {FEEDS} feeds polled within 60 s",
            polled.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let up = Instant::now();
    eprintln!(
        "fleet: all {FEEDS} feeds polled {:.1} s after the three daemons were started",
        (up - started).as_secs_f64()
    );

    // Rounds of new stories, one per interval; the third daemon is killed halfway,
    // at a moment when it holds leases.
    let victim = feedwatch::config::default_instance(&configs[2].1.path);
    let mut killed: Option<(Instant, Vec<String>, Vec<String>)> = None;
    for r in 1..=ROUNDS {
        farm.round(r);
        let round_end = Instant::now() + INTERVAL;
        if r == ROUNDS / 2 + 1 {
            let held = format!(
                "SELECT name FROM sources WHERE lease_owner LIKE '{victim}/%' ORDER BY name"
            );
            let deadline = Instant::now() + Duration::from_secs(30);
            while db.texts(&held).await.is_empty() {
                assert!(
                    Instant::now() < deadline,
                    "the third daemon never held a lease"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            daemons[2].start_kill().unwrap();
            let at = Instant::now();
            daemons[2].wait().await.unwrap();
            let names: Vec<String> = db.texts(&held).await.into_iter().flatten().collect();
            let deliveries: Vec<String> = db
                .texts(&format!(
                    "SELECT id::text FROM deliveries WHERE lease_owner LIKE '{victim}/%'"
                ))
                .await
                .into_iter()
                .flatten()
                .collect();
            killed = Some((at, names, deliveries));
        }
        tokio::time::sleep_until(round_end.into()).await;
    }
    let (killed_at, killed_sources, killed_deliveries) = killed.expect("the kill happened");

    // Every alert arrives; then two more intervals of polling before the end.
    receiver
        .wait_for(farm.alerts_due, Duration::from_secs(60))
        .await;
    tokio::time::sleep(2 * INTERVAL).await;
    let ended = Instant::now();
    for daemon in &mut daemons[..2] {
        let exit = terminate(daemon, Duration::from_secs(15)).await;
        assert_eq!(exit.code(), Some(0));
    }

    let received = receiver.received();

    // Polls: per feed, in order, with who made them.
    let requests = farm.site.requests();
    let mut by_feed: BTreeMap<String, Vec<(Instant, String)>> = BTreeMap::new();
    for r in &requests {
        by_feed
            .entry(r.path.clone())
            .or_default()
            .push((r.at, poller(r)));
    }
    let lost: HashSet<String> = killed_sources
        .iter()
        .map(|name| format!("/feed/{}.xml", name.trim_start_matches('f')))
        .collect();
    // A poll is due a jittered interval (±10 %) after the last one was stored, and a
    // loaded machine adds the time to fetch, store and wake the scheduler: a gap under
    // two intervals means the source was polled in every interval; the percentiles
    // printed below show how far under.
    let slack = Duration::from_secs(2);
    let longest_gap = 2 * INTERVAL;
    let mut too_long = Vec::new();
    let mut gaps = Vec::new();
    let mut worst = (Duration::ZERO, String::new());
    let mut shortest = (Duration::MAX, String::new());
    for (path, polls) in &by_feed {
        let mut times: Vec<Instant> = polls.iter().map(|p| p.0).collect();
        times.push(ended);
        for w in times.windows(2) {
            let gap = w[1] - w[0];
            let spans_kill = w[0] <= killed_at && killed_at <= w[1];
            let allowed = if spans_kill && lost.contains(path) {
                longest_gap + LEASE
            } else {
                longest_gap
            };
            if gap > allowed {
                too_long.push(format!(
                    "{path} went {gap:?} without a poll (allowed {allowed:?})"
                ));
            }
            if w[1] != ended && !(spans_kill && lost.contains(path)) {
                gaps.push(gap);
            }
            if gap > worst.0 && !(spans_kill && lost.contains(path)) {
                worst = (gap, path.clone());
            }
            if w[1] != ended && gap < shortest.0 {
                shortest = (gap, path.clone());
            }
        }
    }

    // Polls per interval, and who made them.
    let mut per_interval: Vec<usize> = Vec::new();
    let mut per_daemon: BTreeMap<String, usize> = BTreeMap::new();
    for r in &requests {
        let slot = ((r.at - up).as_secs_f64() / INTERVAL.as_secs_f64()).floor();
        if slot >= 0.0 && r.at < ended {
            let slot = slot as usize;
            if per_interval.len() <= slot {
                per_interval.resize(slot + 1, 0);
            }
            per_interval[slot] += 1;
        }
        *per_daemon.entry(poller(r)).or_default() += 1;
    }
    let kill_slot = ((killed_at - up).as_secs_f64() / INTERVAL.as_secs_f64()) as usize;
    let survivors_after_kill: HashSet<String> = requests
        .iter()
        .filter(|r| r.at > killed_at)
        .map(poller)
        .collect();
    assert!(
        !survivors_after_kill.contains("fleet-c"),
        "the killed daemon polled after its death"
    );

    // The killed daemon's sources were taken over, once their leases lapsed.
    let mut takeovers = Vec::new();
    for path in &lost {
        let next = by_feed[path]
            .iter()
            .find(|(at, _)| *at > killed_at)
            .unwrap_or_else(|| {
                panic!("{path}, leased by the killed daemon, was never polled again")
            });
        assert_ne!(next.1, "fleet-c");
        takeovers.push(next.0 - killed_at);
    }
    takeovers.sort();

    eprintln!(
        "fleet: {} polls of {FEEDS} feeds over {:.1} s by {per_daemon:?}",
        requests.len(),
        (ended - started).as_secs_f64()
    );
    eprintln!(
        "fleet: polls per {}-s interval from the first full round: {per_interval:?} (daemon c killed in interval {kill_slot})",
        INTERVAL.as_secs()
    );
    gaps.sort();
    let pct = |p: usize| gaps[(gaps.len() - 1) * p / 100].as_secs_f64();
    eprintln!(
        "fleet: gaps between two polls of a feed (interval {INTERVAL:?}, jitter ±10 %): median {:.2} s, 99th percentile {:.2} s",
        pct(50),
        pct(99)
    );
    eprintln!(
        "fleet: longest gap between two polls of a feed not held by the killed daemon: {:.2} s ({}); shortest: {:.2} s ({})",
        worst.0.as_secs_f64(),
        worst.1,
        shortest.0.as_secs_f64(),
        shortest.1
    );
    eprintln!(
        "fleet: the killed daemon held {} sources and {} deliveries; they were polled again {:?} after the kill (lease {LEASE:?})",
        lost.len(),
        killed_deliveries.len(),
        takeovers
            .iter()
            .map(|t| format!("{:.2} s", t.as_secs_f64()))
            .collect::<Vec<_>>()
    );
    assert!(too_long.is_empty(), "{too_long:#?}");
    // None twice in one interval: the next poll waits for the jittered interval.
    assert!(
        shortest.0 >= INTERVAL - INTERVAL / 10 - Duration::from_millis(50),
        "{} polled twice within {:?}",
        shortest.1,
        shortest.0
    );
    assert!(
        takeovers.last().is_none_or(|t| *t <= LEASE + slack),
        "{takeovers:?}"
    );

    // Every story stored once; each near copy stored as its original's duplicate.
    let store = feedwatch::store::connect(&db.url, 2).await.unwrap();
    let counts = store.counts().await.unwrap();
    let duplicates = db
        .texts("SELECT url FROM stories WHERE duplicate_of IS NOT NULL")
        .await
        .len();
    let mut ids: HashMap<String, usize> = HashMap::new();
    for r in &received {
        *ids.entry(r.header("webhook-id").to_string()).or_default() += 1;
    }
    let repeated: Vec<&String> = ids
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, _)| id)
        .collect();
    eprintln!(
        "fleet: {} stories stored ({} near copies as duplicates), {} alerts received, {} distinct webhook-ids, {} repeated",
        counts.stories,
        duplicates,
        received.len(),
        ids.len(),
        repeated.len()
    );
    assert_eq!(
        counts.stories as usize,
        farm.links.len(),
        "every story stored once"
    );
    let stored: HashSet<String> = db
        .texts("SELECT url FROM stories")
        .await
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(stored, farm.links);
    assert_eq!(
        duplicates,
        farm.pairs.len(),
        "one copy of each pair is a duplicate"
    );

    // Every alert delivered once, by webhook-id: a repeat only of a delivery the killed
    // daemon had claimed (sent, perhaps, but not recorded before the kill).
    assert!(
        repeated.iter().all(|id| killed_deliveries.contains(id)),
        "alerts sent twice: {repeated:?}"
    );
    assert_eq!(ids.len(), farm.alerts_due, "one alert per story");
    let alerted: HashSet<String> = received
        .iter()
        .map(|r| {
            r.json()["data"]["story"]["url"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    for (original, copy) in &farm.pairs {
        assert!(
            alerted.contains(original) ^ alerted.contains(copy),
            "the pair {original} / {copy} alerted once"
        );
    }
    assert_eq!(counts.deliveries_delivered as usize, farm.alerts_due);
    assert_eq!(counts.deliveries_pending, 0);

    store.close().await;
    db.cleanup().await;
}
