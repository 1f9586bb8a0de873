//! Article pages: full text for excerpt-only feeds, and `kind = "html"`
//! listing sources whose links are followed only on the source's own host
//! (or `allow_hosts`).

use std::time::Duration;

use crate::both_backends;
use crate::support::http::{Receiver, Resource, Site};
use crate::support::*;

const LASER_PAGE: &str = "/2026/11/laser-counter-drone-systems-move-to-the-front/";

fn page(rel: &str) -> Resource {
    Resource::ok(
        "text/html; charset=UTF-8",
        std::fs::read(fixture_path(rel)).unwrap(),
    )
}

async fn an_excerpt_only_feed_is_matched_on_the_full_article_text(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let site = Site::start().await;
    site.put(
        "/feed/",
        Resource::ok(
            "application/rss+xml",
            render_fixture("feeds/excerpt_only.xml", &site.base()),
        ),
    );
    site.put(LASER_PAGE, page("pages/asiatimes_article.html"));
    let receiver = Receiver::start().await;
    let config = TestConfig::write(&format!(
        "{}\n[[sources]]\nname = \"asiatimes\"\nkind = \"feed\"\nurl = \"{}\"\n{TEST_TOPICS}\
         [[webhooks]]\nname = \"w\"\nurl = \"{}\"\nsecret = \"{SECRET}\"\n",
        config_head(&db.url),
        site.url("/feed/"),
        receiver.url()
    ));
    let path = config.path.to_str().unwrap();
    let out = feedwatch(&["once", "--config", path]).await;
    assert!(out.status.success(), "{}", describe(&out));

    // The excerpt mentions neither lasers nor drones; the article does.
    let received = receiver.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(received.len(), 1);
    let body = received[0].json();
    let topic = &body["data"]["topics"][0];
    assert_eq!(topic["name"], "counter-drone-lasers");
    let snippet = topic["snippet"].as_str().unwrap();
    assert!(snippet.contains("«laser"), "{snippet}");
    assert!(
        !snippet.contains("Advertisement") && !snippet.contains("Share on"),
        "{snippet}"
    );
    let story = &body["data"]["story"];
    assert_eq!(
        story["title"], "New air defences move to the front line",
        "the feed's title is kept"
    );
    assert_eq!(site.requests_to(LASER_PAGE).len(), 1);

    // The page is fetched once: the next poll does not fetch it again.
    let out = feedwatch(&["once", "--config", path]).await;
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(site.requests_to(LASER_PAGE).len(), 1);
    assert_eq!(receiver.received().len(), 1);
    db.cleanup().await;
}
both_backends!(an_excerpt_only_feed_is_matched_on_the_full_article_text);

async fn a_listing_page_is_followed_only_to_allowed_hosts(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let site = Site::start().await;
    let other = Site::start().await;
    site.put("/section/", page("pages/asiatimes_listing.html"));
    site.put(LASER_PAGE, page("pages/asiatimes_article.html"));
    other.put("/2026/11/elsewhere/", page("pages/opengraph_only.html"));
    site.put(
        "/links/",
        Resource::ok(
            "text/html",
            format!(
                "<html><body><h2 class=\"entry-title\"><a href=\"{}\">Elsewhere</a></h2></body></html>",
                other.url("/2026/11/elsewhere/")
            ),
        ),
    );
    let receiver = Receiver::start().await;
    let write = |name: &str, allow: &str| {
        TestConfig::write(&format!(
            "{}\n[[sources]]\nname = \"section\"\nkind = \"html\"\nurl = \"{}\"\nlinks = \"h2.entry-title a\"\n\
             [[sources]]\nname = \"{name}\"\nkind = \"html\"\nurl = \"{}\"\nlinks = \"h2.entry-title a\"\n{allow}\n\
             {TEST_TOPICS}[[webhooks]]\nname = \"w\"\nurl = \"{}\"\n\
             # the fixture article is dated 2026-11-04\nmax_age = \"36500d\"\n",
            config_head(&db.url),
            site.url("/section/"),
            site.url("/links/"),
            receiver.url()
        ))
    };
    let config = write("links", "");
    let out = feedwatch(&["once", "--config", config.path.to_str().unwrap()]).await;
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        other.requests().is_empty(),
        "another port is another host: not followed"
    );
    assert!(
        site.requests()
            .iter()
            .all(|r| !r.path.contains("sponsored")),
        "nothing outside the listing's host"
    );
    assert_eq!(
        site.requests_to(LASER_PAGE).len(),
        1,
        "the article on the same host is fetched"
    );
    let received = receiver.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(
        received[0].json()["data"]["topics"][0]["name"],
        "counter-drone-lasers"
    );
    assert_eq!(
        received[0].json()["data"]["story"]["title"],
        "Laser counter-drone systems move to the front",
        "the page's own title, without the site suffix"
    );

    // A new source (no validators from the first run) that allows the other host.
    let allowed = write(
        "links-allowed",
        &format!("allow_hosts = [\"{}\"]", other.addr),
    );
    let out = feedwatch(&["once", "--config", allowed.path.to_str().unwrap()]).await;
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        other.requests_to("/2026/11/elsewhere/").len(),
        1,
        "allow_hosts opens the door"
    );
    let store = feedwatch::store::connect(&db.url, 2).await.unwrap();
    let stories = store.counts().await.unwrap().stories;
    assert!(stories >= 2, "both pages stored, got {stories}");
    store.close().await;
    db.cleanup().await;
}
both_backends!(a_listing_page_is_followed_only_to_allowed_hosts);
