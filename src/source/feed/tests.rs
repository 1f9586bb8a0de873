//! Behaviour of `source::feed`, mostly on the fixtures in `tests/fixtures/feeds/` (written
//! for feedwatch); large inputs are generated here rather than committed.

use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;
use url::Url;

use super::{FeedEntry, FeedError, ParsedFeed, decode_feed_text, parse_feed, prolog, repair};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/feeds");

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{FIXTURES}/{name}");
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {path}: {e}"))
}

fn fetched_at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 5, 15, 12, 0, 0).unwrap()
}

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn url(s: &str) -> Url {
    Url::parse(s).unwrap()
}

fn parse_fixture(name: &str, feed_url: &str) -> ParsedFeed {
    parse_feed(&fixture(name), None, &url(feed_url), fetched_at())
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn parse_error(bytes: &[u8]) -> FeedError {
    match parse_feed(
        bytes,
        None,
        &url("https://x.example.test/feed"),
        fetched_at(),
    ) {
        Ok(feed) => panic!("expected an error, parsed {feed:?}"),
        Err(e) => e,
    }
}

fn titles(feed: &ParsedFeed) -> Vec<&str> {
    feed.entries
        .iter()
        .map(|e| e.title.as_deref().unwrap_or("<none>"))
        .collect()
}

fn link(entry: &FeedEntry) -> Option<&str> {
    entry.link.as_ref().map(Url::as_str)
}

// ---------------------------------------------------------------------------------------
// Formats

#[test]
fn a_wordpress_feed_shaped_like_hkfp_gives_every_item_in_document_order() {
    let feed = parse_fixture("hkfp_wordpress.rss", "https://hongkongfp.com/feed/");
    assert_eq!(feed.title.as_deref(), Some("Hong Kong Free Press HKFP"));
    assert_eq!(
        titles(&feed),
        [
            "Harbour ferry operator trials electric vessels on two outlying island routes",
            "Lawmakers question export licence delays for chip design software",
            "09:15, 14 May 2024",
        ]
    );
    let first = &feed.entries[0];
    assert_eq!(
        first.guid.as_deref(),
        Some("https://hongkongfp.com/?p=401122")
    );
    assert_eq!(
        link(first),
        Some("https://hongkongfp.com/2024/05/14/harbour-ferry-operator-trials-electric-vessels/")
    );
    assert_eq!(first.author.as_deref(), Some("Test Reporter"));
    assert_eq!(first.published, Some(utc("2024-05-14T09:30:00Z")));
    assert!(!first.date_was_missing);
    let content = first.content_html.as_deref().unwrap();
    assert!(content.starts_with("<figure class=\"wp-block-image size-large\">"));
    assert!(
        content.contains("the city&#8217;s harbour"),
        "CDATA is kept verbatim"
    );
    let summary = first.summary_html.as_deref().unwrap();
    assert!(summary.contains("appeared first on <a href=\"https://hongkongfp.com\">"));
}

#[test]
fn an_asia_times_excerpt_keeps_its_wordpress_marker_and_footer_for_the_normaliser() {
    let feed = parse_fixture("asiatimes_wordpress.rss", "https://asiatimes.com/feed/");
    assert_eq!(feed.entries.len(), 2);
    let first = &feed.entries[0];
    let summary = first.summary_html.as_deref().unwrap();
    assert!(
        summary.contains("face the prospect of [&#8230;]</p>"),
        "{summary}"
    );
    assert!(summary.contains(
        "The post <a rel=\"nofollow\" href=\"https://asiatimes.com/2024/05/tariff-threat-pushes-southeast-asian-assemblers-to-rethink-supply-lines/\">\
         Tariff threat pushes Southeast Asian assemblers to rethink supply lines</a> appeared first on \
         <a rel=\"nofollow\" href=\"https://asiatimes.com\">Asia Times</a>."
    ));
    assert_eq!(
        first.guid.as_deref(),
        Some("https://asiatimes.com/?p=812233")
    );
    assert_eq!(first.author.as_deref(), Some("Test Correspondent"));
    assert_eq!(
        link(first),
        Some(
            "https://asiatimes.com/2024/05/tariff-threat-pushes-southeast-asian-assemblers-to-rethink-supply-lines/"
        )
    );
}

#[test]
fn an_atom_feed_resolves_relative_links_and_reads_each_content_type() {
    let feed = parse_fixture("atom_relative.atom", "https://feeds.example.test/atom.xml");
    assert_eq!(feed.title.as_deref(), Some("Harbour & Hills Notes"));
    let [first, second, third] = feed.entries.as_slice() else {
        panic!("three entries expected, got {}", feed.entries.len());
    };

    assert_eq!(
        link(first),
        Some("https://feeds.example.test/2024/05/relative-link")
    );
    assert_eq!(first.guid.as_deref(), Some("tag:feeds.example.test,2024:1"));
    assert_eq!(first.published, Some(utc("2024-05-14T02:00:00Z")));
    assert_eq!(first.author.as_deref(), Some("Entry Author"));
    assert_eq!(
        first.summary_html.as_deref(),
        Some("Plain summary with a &lt;tag&gt; &amp; an ampersand")
    );
    assert_eq!(
        first.content_html.as_deref(),
        Some("<p>Escaped <b>HTML</b> body.</p>")
    );

    assert_eq!(
        link(second),
        Some("https://other.example.test/blog/posts/second")
    );
    assert_eq!(
        second.published,
        Some(utc("2024-05-13T13:30:00Z")),
        "updated stands in"
    );
    assert_eq!(
        second.author.as_deref(),
        Some("Feed Author"),
        "the feed's author"
    );
    assert!(
        second
            .content_html
            .as_deref()
            .unwrap()
            .contains("<p>Inline <em>XHTML</em> body.</p>")
    );

    assert_eq!(
        link(third),
        Some("https://feeds.example.test/2024/05/third")
    );
    assert_eq!(third.content_html, None, "out-of-line content has no body");
    assert!(third.date_was_missing);
}

#[test]
fn an_atom_html_title_becomes_plain_text() {
    let doc = br#"<feed xmlns="http://www.w3.org/2005/Atom"><title>t</title>
        <entry><id>1</id><title type="html">Q&amp;amp;A: &lt;b&gt;tariffs&lt;/b&gt; &amp;#8211; why</title></entry></feed>"#;
    let feed = parse_feed(doc, None, &url("https://x.example.test/"), fetched_at()).unwrap();
    assert_eq!(feed.entries[0].title.as_deref(), Some("Q&A: tariffs – why"));
}

#[test]
fn a_json_feed_resolves_relative_urls_and_escapes_plain_text() {
    let feed = parse_fixture("jsonfeed.json", "https://json.example.test/feed.json");
    assert_eq!(
        feed.title.as_deref(),
        Some("Example JSON Feed for feedwatch")
    );
    let [first, second, third] = feed.entries.as_slice() else {
        panic!("three entries expected");
    };
    assert_eq!(
        link(first),
        Some("https://json.example.test/2024/05/15/first")
    );
    assert_eq!(first.guid.as_deref(), Some("2024-05-15-first"));
    assert_eq!(
        first.summary_html.as_deref(),
        Some("A one-line summary &amp; more")
    );
    assert_eq!(
        first.content_html.as_deref(),
        Some("<p>Export controls on <strong>EDA</strong> software were tightened.</p>")
    );
    assert_eq!(first.published, Some(utc("2024-05-15T01:00:00Z")));
    assert_eq!(first.author.as_deref(), Some("Item Author"));

    assert_eq!(second.title, None);
    assert_eq!(
        second.content_html.as_deref(),
        Some("Plain text body with &lt;angle brackets&gt;.")
    );
    assert_eq!(second.published, Some(utc("2024-05-14T12:00:00Z")));
    assert_eq!(second.author.as_deref(), Some("Feed-level Author"));

    assert_eq!(third.title.as_deref(), Some("No link, no date"));
    assert_eq!(third.link, None);
    assert!(third.date_was_missing);
    assert_eq!(third.published, Some(fetched_at()));
}

#[test]
fn a_json_feed_with_a_bare_version_number_is_still_read() {
    let doc = br#"{"version": "1.1", "title": "t", "items": [{"id": "a", "url": "https://x.example.test/a"}]}"#;
    let feed = parse_feed(doc, None, &url("https://x.example.test/"), fetched_at()).unwrap();
    assert_eq!(feed.entries.len(), 1);
}

#[test]
fn rss_091_with_a_public_doctype_is_fine() {
    let feed = parse_fixture("rss091_doctype.xml", "http://old.example.test/rss.xml");
    assert_eq!(feed.title.as_deref(), Some("Old Style Channel"));
    assert_eq!(
        titles(&feed),
        ["Item one of an old feed", "Item two, relative link"]
    );
    assert_eq!(
        link(&feed.entries[1]),
        Some("http://old.example.test/two.html")
    );
    assert!(
        feed.entries.iter().all(|e| e.guid.is_none()),
        "no made-up ids"
    );
}

#[test]
fn rss_090_is_read_like_rss_1() {
    let feed = parse_fixture("rss090.rdf", "http://rss090.example.test/rss.rdf");
    assert_eq!(feed.title.as_deref(), Some("RSS 0.90 fixture"));
    assert_eq!(titles(&feed), ["First 0.90 item", "Second 0.90 item"]);
}

#[test]
fn rss_1_reads_dc_fields_and_content_encoded() {
    let feed = parse_fixture("rss10_rdf.xml", "https://rdf.example.test/index.rdf");
    let [first, second] = feed.entries.as_slice() else {
        panic!("two entries expected");
    };
    assert_eq!(first.author.as_deref(), Some("RDF Writer"));
    assert_eq!(
        first.content_html.as_deref(),
        Some("<p>Full <i>body</i></p>")
    );
    assert_eq!(first.summary_html.as_deref(), Some("Short description"));
    assert_eq!(first.published, Some(utc("2024-05-15T07:15:00Z")));
    // Zoneless: read in the zone of the channel's own dc:date (+02:00).
    assert_eq!(second.published, Some(utc("2024-05-14T16:00:00Z")));
}

#[test]
fn an_rss_root_without_a_version_is_read_as_rss_2() {
    let feed = parse_fixture(
        "unversioned_rss.xml",
        "https://unversioned.example.test/feed",
    );
    assert_eq!(feed.entries.len(), 1);
    assert_eq!(
        link(&feed.entries[0]),
        Some("https://unversioned.example.test/news/story-1.html"),
        "resolved against xml:base"
    );
    assert_eq!(feed.entries[0].guid.as_deref(), Some("story-1"));
}

#[test]
fn an_rss_root_without_a_channel_is_an_empty_feed() {
    let feed = parse_feed(
        b"<rss></rss>",
        None,
        &url("https://x.example.test/"),
        fetched_at(),
    );
    assert_eq!(
        feed.unwrap(),
        ParsedFeed {
            title: None,
            entries: Vec::new()
        }
    );
}

#[test]
fn comment_links_and_enclosures_are_never_the_entry_link() {
    let doc = br#"<rss version="2.0"><channel><item>
        <comments>https://x.example.test/a#comments</comments>
        <enclosure url="https://x.example.test/a.mp3" type="audio/mpeg" length="1"/>
        </item></channel></rss>"#;
    let feed = parse_feed(doc, None, &url("https://x.example.test/"), fetched_at()).unwrap();
    assert_eq!(feed.entries[0].link, None);
}

#[test]
fn only_http_and_https_links_are_kept() {
    let doc = br#"<rss version="2.0"><channel><item><link>javascript:alert(1)</link></item>
        <item><link>ftp://x.example.test/file</link></item></channel></rss>"#;
    let feed = parse_feed(doc, None, &url("https://x.example.test/"), fetched_at()).unwrap();
    assert!(feed.entries.iter().all(|e| e.link.is_none()));
}

// ---------------------------------------------------------------------------------------
// Charsets

#[test]
fn a_latin1_labelled_feed_is_decoded_once_with_windows_1252_punctuation() {
    let feed = parse_fixture(
        "windows1252_labelled_latin1.xml",
        "https://enc.example.test/feed",
    );
    assert_eq!(feed.title.as_deref(), Some("Café crème – les nouvelles"));
    assert_eq!(
        titles(&feed),
        [
            "Élection à Genève : résultats définitifs",
            "Größere Brücke für München"
        ]
    );
    assert_eq!(
        feed.entries[0].summary_html.as_deref(),
        Some("L’assemblée s’est réunie à huis clos.")
    );
}

#[test]
fn a_gb2312_feed_is_decoded() {
    let feed = parse_fixture("gb2312.xml", "https://enc.example.test/feed");
    assert_eq!(feed.title.as_deref(), Some("中文新闻测试频道"));
    assert_eq!(
        titles(&feed),
        ["关税政策引发出口商担忧", "芯片设计软件出口管制收紧"]
    );
}

#[test]
fn a_big5_feed_is_decoded() {
    let feed = parse_fixture("big5.xml", "https://enc.example.test/feed");
    assert_eq!(feed.title.as_deref(), Some("香港新聞測試頻道"));
    assert_eq!(
        titles(&feed),
        ["立法會討論渡輪電動化", "天文台發出一號戒備信號"]
    );
}

#[test]
fn a_utf16_feed_with_a_bom_is_decoded() {
    let feed = parse_fixture("utf16le_bom.xml", "https://enc.example.test/feed");
    assert_eq!(
        feed.title.as_deref(),
        Some("UTF-16 feed with a BOM – ünïcödé")
    );
    assert_eq!(titles(&feed), ["Ελληνικά και русский в одном заголовке"]);
}

#[test]
fn an_unlabelled_windows_1252_feed_is_detected() {
    let feed = parse_fixture(
        "unlabelled_windows1252.xml",
        "https://presse.example.fr/feed",
    );
    assert_eq!(
        feed.title.as_deref(),
        Some("Revue de presse française sans étiquette")
    );
    assert_eq!(
        titles(&feed),
        [
            "Les élèves préfèrent l’été à l’hiver",
            "Même les cafés ferment plus tôt"
        ]
    );
}

#[test]
fn a_utf8_feed_with_invalid_bytes_is_decoded_lossily() {
    let feed = parse_fixture(
        "utf8_with_invalid_bytes.xml",
        "https://enc.example.test/feed",
    );
    assert_eq!(feed.title.as_deref(), Some("Mostly UTF-8 – naïve"));
    assert_eq!(
        titles(&feed),
        ["Résumé with a stray byte: \u{FFFD}\u{FFFD}"]
    );
}

#[test]
fn decode_feed_text_names_the_encoding_it_used() {
    for (name, expected) in [
        ("windows1252_labelled_latin1.xml", encoding_rs::WINDOWS_1252),
        ("gb2312.xml", encoding_rs::GBK),
        ("big5.xml", encoding_rs::BIG5),
        ("utf16le_bom.xml", encoding_rs::UTF_16LE),
        ("unlabelled_windows1252.xml", encoding_rs::WINDOWS_1252),
        ("utf8_with_invalid_bytes.xml", encoding_rs::UTF_8),
        ("hkfp_wordpress.rss", encoding_rs::UTF_8),
    ] {
        let (_, encoding) = decode_feed_text(&fixture(name), None);
        assert_eq!(encoding, expected, "{name}");
    }
}

#[test]
fn the_http_charset_decides_when_the_document_declares_none() {
    let body = encoding_rs::BIG5
        .encode("<rss version=\"2.0\"><channel><title>香港</title></channel></rss>")
        .0;
    let feed = parse_feed(
        &body,
        Some("application/rss+xml; charset=Big5"),
        &url("https://x.example.test/"),
        fetched_at(),
    )
    .unwrap();
    assert_eq!(feed.title.as_deref(), Some("香港"));
}

// ---------------------------------------------------------------------------------------
// Security

#[test]
fn a_billion_laughs_doctype_is_refused_before_parsing() {
    let e = parse_error(&fixture("billion_laughs.xml"));
    assert!(matches!(e, FeedError::EntityDeclaration));
    assert_eq!(
        e.to_string(),
        "feed declares XML entities in its DOCTYPE (refused)"
    );
}

#[test]
fn an_external_file_entity_is_refused() {
    assert!(matches!(
        parse_error(&fixture("xxe_file.xml")),
        FeedError::EntityDeclaration
    ));
}

#[test]
fn an_external_parameter_entity_is_refused_despite_a_tricky_comment() {
    assert!(matches!(
        parse_error(&fixture("xxe_parameter.xml")),
        FeedError::EntityDeclaration
    ));
}

#[test]
fn an_entity_declaration_in_a_utf16_feed_is_refused_too() {
    let doc = "<!DOCTYPE rss [<!ENTITY x SYSTEM \"file:///etc/passwd\">]><rss version=\"2.0\"/>";
    let mut bytes = vec![0xFE, 0xFF];
    bytes.extend(doc.encode_utf16().flat_map(u16::to_be_bytes));
    assert!(matches!(parse_error(&bytes), FeedError::EntityDeclaration));
}

#[test]
fn an_entity_declared_in_a_late_doctype_is_never_expanded() {
    let doc = b"<rss version=\"2.0\"><!DOCTYPE x [<!ENTITY a \"EXPANDED\">]>\
        <channel><item><title>&a;</title></item></channel></rss>";
    if let Ok(feed) = parse_feed(doc, None, &url("https://x.example.test/"), fetched_at()) {
        assert_eq!(feed.entries[0].title.as_deref(), Some("&a;"));
    }
}

#[test]
fn undeclared_entities_stay_literal_text() {
    let doc = b"<rss version=\"2.0\"><channel><item><title>a&nbsp;b &amp; c</title></item></channel></rss>";
    let feed = parse_feed(doc, None, &url("https://x.example.test/"), fetched_at()).unwrap();
    assert_eq!(feed.entries[0].title.as_deref(), Some("a&nbsp;b & c"));
}

// ---------------------------------------------------------------------------------------
// Robustness

#[test]
fn an_html_page_served_as_a_feed_is_named_as_such() {
    let e = parse_error(&fixture("html_page.html"));
    assert!(matches!(e, FeedError::HtmlPage));
    assert_eq!(e.to_string(), "not a feed: looks like an HTML page");
}

#[test]
fn an_empty_or_blank_body_is_an_empty_body_error() {
    assert!(matches!(parse_error(b""), FeedError::EmptyBody));
    assert!(matches!(
        parse_error(&fixture("empty_body.xml")),
        FeedError::EmptyBody
    ));
    assert!(matches!(
        parse_error(b"\xEF\xBB\xBF \n"),
        FeedError::EmptyBody
    ));
    assert_eq!(FeedError::EmptyBody.to_string(), "empty body");
}

#[test]
fn a_truncated_feed_is_malformed_at_its_last_line() {
    let e = parse_error(&fixture("truncated.xml"));
    let FeedError::MalformedXml { line, message } = &e else {
        panic!("{e}");
    };
    assert_eq!(*line, 12);
    assert!(message.contains("truncated"), "{message}");
    assert!(
        e.to_string().starts_with("malformed XML at line 12: "),
        "{e}"
    );
}

#[test]
fn mismatched_tags_are_malformed_at_their_line() {
    let e = parse_error(&fixture("mismatched_tags.xml"));
    let FeedError::MalformedXml { line, message } = &e else {
        panic!("{e}");
    };
    assert_eq!(*line, 6);
    assert!(message.contains("titel"), "{message}");
}

#[test]
fn blank_lines_before_the_document_still_count_in_the_error_line() {
    let e = parse_error(b"\n\n<rss version=\"2.0\">\n<channel>\n</rss>");
    assert!(matches!(e, FeedError::MalformedXml { line: 5, .. }), "{e}");
}

#[test]
fn bare_ampersands_are_repaired_outside_cdata() {
    let feed = parse_fixture("bare_ampersand.xml", "https://amp.example.test/feed");
    assert_eq!(feed.title.as_deref(), Some("Fish & Chips & more"));
    let item = &feed.entries[0];
    assert_eq!(item.title.as_deref(), Some("Trade & tariffs: a Q&A"));
    assert_eq!(link(item), Some("https://amp.example.test/q?a=1&b=2"));
    assert_eq!(
        item.summary_html.as_deref(),
        Some("<p>R&D stays & CDATA is untouched</p>")
    );
}

#[test]
fn a_json_feed_with_wrong_types_is_an_invalid_json_error() {
    let e = parse_error(&fixture("json_wrong_types.json"));
    assert!(matches!(e, FeedError::InvalidJson(_)));
    assert!(
        e.to_string().starts_with("invalid JSON feed: invalid type"),
        "{e}"
    );
}

#[test]
fn json_that_is_not_a_feed_is_an_invalid_json_error() {
    for doc in [
        &b"[1, 2]"[..],
        b"{\"hello\": 1}",
        b"{\"version\": \"https://jsonfeed.org/version/9\", \"title\": \"t\", \"items\": []}",
        b"{ truncated",
    ] {
        assert!(
            matches!(parse_error(doc), FeedError::InvalidJson(_)),
            "{doc:?}"
        );
    }
}

#[test]
fn a_php_warning_before_the_feed_is_skipped() {
    let doc = b"\nWarning: Undefined variable $x in /var/www/feed.php on line 3\n\
        <?xml version=\"1.0\"?>\n<rss version=\"2.0\"><channel><title>t</titel>\n</channel></rss>";
    let feed = parse_feed(doc, None, &url("https://x.example.test/"), fetched_at());
    // Malformed further on, and reported at the right line of the whole body.
    let Err(FeedError::MalformedXml { line, .. }) = feed else {
        panic!("{feed:?}");
    };
    assert_eq!(line, 4);
    let doc = b"Notice: something\n<rss version=\"2.0\"><channel><title>t</title></channel></rss>";
    let feed = parse_feed(doc, None, &url("https://x.example.test/"), fetched_at()).unwrap();
    assert_eq!(feed.title.as_deref(), Some("t"));
}

#[test]
fn plain_text_is_neither_xml_nor_json() {
    let e = parse_error(b"Service Unavailable");
    assert!(matches!(e, FeedError::NotXmlOrJson));
}

#[test]
fn xml_that_is_not_a_feed_names_its_root() {
    let e = parse_error(b"<note><to>x</to></note>");
    assert_eq!(
        e.to_string(),
        "not a feed: root element <note> is not RSS, RDF or Atom"
    );
}

#[test]
fn inputs_that_crash_feed_rs_are_defused_and_parsed() {
    let feed = parse_fixture("person_panic_trigger.rss", "https://hk.example.test/feed");
    assert_eq!(feed.title.as_deref(), Some("香港新聞測試"));
    assert_eq!(feed.entries.len(), 2);
    let author = feed.entries[0].author.as_deref().unwrap();
    assert!(author.starts_with("王小明"), "{author}");
    assert_eq!(feed.entries[0].published, Some(utc("2024-05-14T01:30:00Z")));
}

#[test]
fn an_author_with_references_around_an_email_is_defused_too() {
    let doc = b"<rss version=\"2.0\"><channel><item><title>t</title>\
        <author>Wang&#65288;wang@hk.example.test&#65289;</author></item></channel></rss>";
    let feed = parse_feed(doc, None, &url("https://x.example.test/"), fetched_at()).unwrap();
    let author = feed.entries[0].author.as_deref().unwrap();
    assert!(author.starts_with("Wang"), "{author}");
}

#[test]
fn a_json_feed_that_crashes_feed_rs_is_defused_and_parsed() {
    let doc = r#"{"version": "https://jsonfeed.org/version/1.1", "title": "t",
        "items": [{"id": "1", "authors": [{"name": "王小明（wang@hk.example.test）"}]}]}"#;
    let feed = parse_feed(
        doc.as_bytes(),
        None,
        &url("https://x.example.test/"),
        fetched_at(),
    )
    .unwrap();
    assert!(
        feed.entries[0]
            .author
            .as_deref()
            .unwrap()
            .starts_with("王小明")
    );
}

#[test]
fn control_characters_are_dropped_and_c1_ones_read_as_windows_1252() {
    let doc = b"<rss version=\"2.0\"><channel><item><title>ab\x08cd don&#146;t</title></item></channel></rss>";
    let feed = parse_feed(doc, None, &url("https://x.example.test/"), fetched_at()).unwrap();
    assert_eq!(feed.entries[0].title.as_deref(), Some("abcd don’t"));
}

#[test]
fn items_without_link_title_or_date_are_kept() {
    let feed = parse_fixture("dates_and_gaps.rss", "https://dates.example.test/feed");
    assert_eq!(feed.entries.len(), 10);
    let bare = &feed.entries[8];
    assert_eq!(bare.title, None);
    assert_eq!(bare.link, None);
    assert!(bare.date_was_missing);
    assert!(
        bare.summary_html
            .as_deref()
            .unwrap()
            .starts_with("An item with neither")
    );
}

#[test]
fn a_five_megabyte_item_body_is_kept_whole() {
    let body = "<p>".to_owned() + &"word ".repeat(1_048_576) + "</p>";
    let doc = format!(
        "<rss version=\"2.0\" xmlns:content=\"http://purl.org/rss/1.0/modules/content/\"><channel>\
         <item><title>big</title><content:encoded><![CDATA[{body}]]></content:encoded></item>\
         <item><title>after</title></item></channel></rss>"
    );
    let feed = parse_feed(
        doc.as_bytes(),
        None,
        &url("https://x.example.test/"),
        fetched_at(),
    )
    .unwrap();
    assert_eq!(titles(&feed), ["big", "after"]);
    assert_eq!(
        feed.entries[0].content_html.as_deref().map(str::len),
        Some(body.len())
    );
}

#[test]
fn deeply_nested_html_in_content_encoded_is_just_a_string() {
    let depth = 100_000;
    let html = "<div>".repeat(depth) + "deep" + &"</div>".repeat(depth);
    let doc = format!(
        "<rss version=\"2.0\" xmlns:content=\"http://purl.org/rss/1.0/modules/content/\"><channel>\
         <item><title>escaped</title><content:encoded>{}</content:encoded></item>\
         <item><title>cdata</title><content:encoded><![CDATA[{html}]]></content:encoded></item>\
         </channel></rss>",
        html.replace('<', "&lt;").replace('>', "&gt;")
    );
    let feed = parse_feed(
        doc.as_bytes(),
        None,
        &url("https://x.example.test/"),
        fetched_at(),
    )
    .unwrap();
    assert_eq!(feed.entries[0].content_html.as_deref(), Some(html.as_str()));
    assert_eq!(feed.entries[1].content_html.as_deref(), Some(html.as_str()));
}

fn nested_elements(depth: usize) -> String {
    format!(
        "<rss version=\"2.0\"><channel><item><title>t</title><description>{}x{}</description></item></channel></rss>",
        "<b>".repeat(depth),
        "</b>".repeat(depth)
    )
}

#[test]
fn deeply_nested_xml_elements_do_not_overflow_the_stack() {
    let doc = nested_elements(50_000);
    let feed = parse_feed(
        doc.as_bytes(),
        None,
        &url("https://x.example.test/"),
        fetched_at(),
    )
    .unwrap();
    assert_eq!(titles(&feed), ["t"]);
}

#[test]
fn nesting_beyond_the_xml_readers_limit_is_a_clear_error() {
    // quick-xml refuses more than 65,535 levels.
    let doc = nested_elements(100_000);
    let e = parse_error(doc.as_bytes());
    assert!(matches!(e, FeedError::MalformedXml { .. }), "{e}");
    assert!(
        e.to_string().contains("deeper than the supported limit"),
        "{e}"
    );
}

#[test]
fn a_feed_of_many_items_keeps_every_item_in_order() {
    // 10,000 here to keep debug-build tests quick; 100,000 items, with time and peak
    // memory, are measured by examples/feed_large.rs.
    let n = 10_000;
    let mut doc = String::from("<rss version=\"2.0\"><channel><title>many</title>");
    for i in 0..n {
        doc.push_str(&format!(
            "<item><title>item {i}</title><link>https://x.example.test/{i}</link>\
             <pubDate>Tue, 14 May 2024 09:30:00 +0000</pubDate></item>"
        ));
    }
    doc.push_str("</channel></rss>");
    let feed = parse_feed(
        doc.as_bytes(),
        None,
        &url("https://x.example.test/"),
        fetched_at(),
    )
    .unwrap();
    assert_eq!(feed.entries.len(), n);
    assert_eq!(feed.entries[n - 1].title.as_deref(), Some("item 9999"));
    assert!(feed.entries.windows(2).all(|w| link(&w[0]) != link(&w[1])));
}

// ---------------------------------------------------------------------------------------
// Dates

#[test]
fn dates_in_the_shapes_feeds_use_are_read() {
    let feed = parse_fixture("dates_and_gaps.rss", "https://dates.example.test/feed");
    let dates: Vec<(Option<DateTime<Utc>>, bool)> = feed
        .entries
        .iter()
        .map(|e| (e.published, e.date_was_missing))
        .collect();
    let read = |s: &str| (Some(utc(s)), false);
    let missing = (Some(fetched_at()), true);
    assert_eq!(
        dates,
        [
            read("2023-12-16T19:02:33Z"), // "Sat, Dec 16 2023 02:02:33 PM" in the channel's -05:00
            read("2022-11-15T23:38:15Z"), // "mer, 16 nov 2022 00:38:15 +0100"
            read("2022-11-15T20:15:04Z"), // "… 20:15:04 Z"
            read("2020-02-06T08:00:00Z"), // "… PST"
            read("2023-12-31T10:14:55Z"), // dc:date
            missing,                      // "sometime last week"
            missing,                      // no date
            (Some(fetched_at()), false),  // 2100: clamped to the fetch time
            missing,                      // the bare item
            read("2023-12-13T07:15:00Z"), // "Mi, 13 Dez 2023 08:15 +0100"
        ]
    );
}

#[test]
fn a_date_within_a_day_ahead_is_not_clamped() {
    let doc = b"<rss version=\"2.0\"><channel><item><pubDate>Wed, 15 May 2024 20:00:00 GMT</pubDate></item></channel></rss>";
    let feed = parse_feed(doc, None, &url("https://x.example.test/"), fetched_at()).unwrap();
    assert_eq!(feed.entries[0].published, Some(utc("2024-05-15T20:00:00Z")));
}

#[test]
fn a_fetch_time_at_the_end_of_time_does_not_overflow_the_clamp() {
    let doc = b"<rss version=\"2.0\"><channel><item><pubDate>Wed, 15 May 2024 20:00:00 GMT</pubDate></item></channel></rss>";
    let end = DateTime::<Utc>::MAX_UTC;
    let feed = parse_feed(doc, None, &url("https://x.example.test/"), end).unwrap();
    assert_eq!(feed.entries[0].published, Some(utc("2024-05-15T20:00:00Z")));
}

// ---------------------------------------------------------------------------------------
// Never a panic

const FUZZ_FIXTURES: &[&str] = &[
    "hkfp_wordpress.rss",
    "asiatimes_wordpress.rss",
    "atom_relative.atom",
    "jsonfeed.json",
    "rss091_doctype.xml",
    "rss090.rdf",
    "rss10_rdf.xml",
    "dates_and_gaps.rss",
    "gb2312.xml",
    "big5.xml",
    "utf16le_bom.xml",
    "windows1252_labelled_latin1.xml",
    "person_panic_trigger.rss",
    "bare_ampersand.xml",
    "xxe_parameter.xml",
];

/// Fragments that steer mutations towards the parser's corners.
const SNIPPETS: &[&str] = &[
    "<",
    ">",
    "&",
    ";",
    "\"",
    "'",
    "]]>",
    "<![CDATA[",
    "<!--",
    "-->",
    "<?xml version='1.0' encoding='utf-16'?>",
    "<?xml encoding='latin1'?>",
    "<!DOCTYPE rss>",
    "<!ENTITY x 'y'>",
    "<item>",
    "</item>",
    "</channel>",
    "<entry>",
    "<link>",
    "</link>",
    "<pubDate>",
    "</pubDate>",
    "xml:base=\"::\"",
    "&#0;",
    "&#x110000;",
    "&#9999999999;",
    "\u{0}",
    "\u{feff}",
    "王",
    "（",
    "@",
    "<dc:creator>a（b@c.de）</dc:creator>",
    "<itunes:duration>99999999999999999999999</itunes:duration>",
    "{",
    "}",
    "[",
    "\"version\":",
    "<media:content url=\"x\" duration=\"١٢\"/>",
    "<content type=\"image/png\">",
    "<title type=\"bogus\">",
];

#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, bit: u8 },
    Truncate { at: usize },
    InsertBytes { at: usize, bytes: Vec<u8> },
    InsertSnippet { at: usize, snippet: usize },
    Delete { at: usize, len: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(at, bytes)| Mutation::InsertBytes { at, bytes }),
        (any::<usize>(), 0..SNIPPETS.len())
            .prop_map(|(at, snippet)| Mutation::InsertSnippet { at, snippet }),
        (any::<usize>(), 1usize..64).prop_map(|(at, len)| Mutation::Delete { at, len }),
    ]
}

fn apply(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let n = bytes.len().max(1);
        match m {
            Mutation::Flip { at, bit } => {
                if !bytes.is_empty() {
                    let i = at % bytes.len();
                    bytes[i] ^= 1 << bit;
                }
            }
            Mutation::Truncate { at } => bytes.truncate(at % n),
            Mutation::InsertBytes { at, bytes: b } => {
                let i = at % n;
                let i = i.min(bytes.len());
                bytes.splice(i..i, b.iter().copied());
            }
            Mutation::InsertSnippet { at, snippet } => {
                let i = (at % n).min(bytes.len());
                bytes.splice(i..i, SNIPPETS[*snippet].bytes());
            }
            Mutation::Delete { at, len } => {
                let i = (at % n).min(bytes.len());
                let j = (i + len).min(bytes.len());
                bytes.drain(i..j);
            }
        }
    }
    bytes
}

proptest! {
    // Kept small so `cargo test` stays fast; PROPTEST_CASES=200000 for a long run.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn parse_feed_never_panics_on_mutated_fixtures(
        which in 0..FUZZ_FIXTURES.len(),
        mutations in proptest::collection::vec(mutation(), 1..6),
    ) {
        let bytes = apply(fixture(FUZZ_FIXTURES[which]), &mutations);
        let result = parse_feed(&bytes, None, &url("https://fuzz.example.test/feed"), fetched_at());
        // A contained feed-rs panic is not a test failure, but the long run reports it:
        // FEED_FUZZ_STRICT=1 makes it one, FEED_FUZZ_LOG=<file> collects the inputs.
        if let (Err(FeedError::ParserPanicked), Some(log)) = (&result, std::env::var_os("FEED_FUZZ_LOG")) {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
            writeln!(f, "{:?}", String::from_utf8_lossy(&bytes)).unwrap();
        }
        if std::env::var_os("FEED_FUZZ_STRICT").is_some() {
            prop_assert!(!matches!(result, Err(FeedError::ParserPanicked)), "feed-rs panicked on {:?}", String::from_utf8_lossy(&bytes));
        }
        if let Ok(feed) = result {
            for e in &feed.entries {
                prop_assert!(e.published.is_some());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Real-world corpus (../shared/data), read in place, never copied

const CORPUS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/data/realworld/feeds"
);

fn corpus(path: &str) -> ParsedFeed {
    let bytes = std::fs::read(format!("{CORPUS}/{path}")).unwrap_or_else(|e| panic!("{path}: {e}"));
    parse_feed(
        &bytes,
        None,
        &url("https://corpus.example.test/feed"),
        fetched_at(),
    )
    .unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
#[ignore = "needs ../shared/data"]
fn every_corpus_feed_parses_or_fails_as_its_source_project_expects() {
    const MUST_FAIL: &[&str] = &[
        "feed-rs__rss_2.0_invalid_1.xml",
        "gofeed__universal_empty_feed.xml",
        "gofeed__universal_unknown_feed.xml",
        "gofeed__universal_invalid.json",
        "feedparser__illformed_rss_empty_document.xml",
    ];
    // feedparser marks these ill-formed ("bozo"): either outcome is acceptable.
    const EITHER: &[&str] = &[
        "feedparser__illformed_aaa_illformed.xml",
        "feedparser__illformed_rss_incomplete_cdata.xml",
        "feedparser__illformed_undeclared_namespace.xml",
        "feedparser__encoding_bozo_bogus_encoding.xml",
        "feedparser__encoding_bozo_double-encoded-html.xml",
        "feedparser__encoding_bozo_invalid-bytes-with-bom.xml",
        "feedparser__illformed_chardet_big5.xml",
        "feedparser__illformed_chardet_gb2312.xml",
        "feedparser__illformed_chardet_shiftjis.xml",
    ];
    let mut checked = 0;
    for dir in ["feed-rs", "gofeed", "feedparser", "RSParser", "trafilatura"] {
        for entry in std::fs::read_dir(format!("{CORPUS}/{dir}"))
            .unwrap()
            .flatten()
        {
            let path = entry.path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let is_json_input = name.ends_with(".json")
                && !name.ends_with(".serde.json")
                && !name.ends_with("_expected.json")
                && !name.contains("date_parser_vectors")
                && !path.with_extension("xml").exists();
            if !(is_json_input || [".xml", ".rss", ".atom"].iter().any(|x| name.ends_with(x))) {
                continue;
            }
            checked += 1;
            let bytes = std::fs::read(&path).unwrap();
            let result = parse_feed(
                &bytes,
                None,
                &url("https://corpus.example.test/feed"),
                fetched_at(),
            );
            assert!(
                !matches!(result, Err(FeedError::ParserPanicked)),
                "{name}: feed-rs panicked"
            );
            if MUST_FAIL.contains(&name.as_str()) {
                assert!(result.is_err(), "{name} must fail");
            } else if !EITHER.contains(&name.as_str()) {
                assert!(result.is_ok(), "{name}: {}", result.unwrap_err());
            }
        }
    }
    assert_eq!(checked, 99);
}

#[test]
#[ignore = "needs ../shared/data"]
fn corpus_feeds_give_the_values_their_source_projects_check() {
    let f = corpus("feed-rs/feed-rs__rss_2.0_encoding_1.xml");
    assert_eq!(
        f.title.as_deref(),
        Some("RSS Feed do Site Inovação Tecnológica")
    );

    let f = corpus("feed-rs/feed-rs__rss_2.0_nbcny.xml");
    assert_eq!(f.entries[0].published, Some(utc("2023-12-16T19:02:33Z")));
    let f = corpus("feed-rs/feed-rs__rss_2.0_ilgiornale.xml");
    assert_eq!(f.entries[0].published, Some(utc("2022-11-15T20:15:04Z")));
    let f = corpus("feed-rs/feed-rs__rss_2.0_ilmessaggero.xml");
    assert_eq!(f.entries[0].published, Some(utc("2022-11-15T23:38:15Z")));
    let f = corpus("feed-rs/feed-rs__rss_2.0_dbengines.xml");
    assert!(
        !f.entries[0].date_was_missing,
        "dc:date is the published date"
    );
    let f = corpus("feed-rs/feed-rs__rss_1.0_debian.xml");
    assert!(!f.entries[0].date_was_missing);

    let f = corpus("feed-rs/feed-rs__rss_2.0_heated.xml");
    let content = f.entries[0].content_html.as_deref().unwrap();
    assert!(content.contains("I have some good news and some bad news"));

    let f = corpus("RSParser/RSParser__natasha.xml");
    assert_eq!(f.entries.len(), 10);
    let f = corpus("RSParser/RSParser__kc0011.rss");
    assert!(
        f.title.as_deref().unwrap().starts_with("投资资讯网"),
        "{:?}",
        f.title
    );

    let f = corpus("feedparser/feedparser__encoding_euc-kr.xml");
    assert_eq!(f.title.as_deref(), Some("\u{b144}"));
    let f = corpus("feedparser/feedparser__encoding_demoronize-1.xml");
    assert_eq!(f.entries[0].summary_html.as_deref(), Some("don\u{2019}t"));
    let f = corpus("feedparser/feedparser__wellformed_rss_item_content_encoded.xml");
    assert_eq!(
        f.entries[0].content_html.as_deref(),
        Some("<p>Example content</p>")
    );
    let f = corpus("feedparser/feedparser__illformed_rss_item_link_corrupted_ampersands.xml");
    assert_eq!(link(&f.entries[0]), Some("http://link/get?a=1&b=2"));
    let f = corpus("feedparser/feedparser__wellformed_rss_item_guid_not_permalink.xml");
    assert_eq!(
        f.entries[0].link, None,
        "a non-permalink guid is not a link"
    );
    let f = corpus("feedparser/feedparser__illformed_always_strip_doctype.xml");
    assert_eq!(f.title.as_deref(), Some("found"));

    let f = corpus("gofeed/gofeed__rss_rss_channel_item_xml_base.xml");
    assert_eq!(link(&f.entries[0]), Some("http://example.org/feeds/post/1"));
    let f = corpus("gofeed/gofeed__rss_issue_305_bare_ampersand.xml");
    assert_eq!(f.title.as_deref(), Some("Fish & Chips & more <3"));
    let f = corpus("gofeed/gofeed__rss_rss_channel_item_illegal_char.xml");
    assert_eq!(f.entries[0].title.as_deref(), Some("abcd"));
}

proptest! {
    #[test]
    fn the_text_helpers_never_panic_on_markup_like_text(
        s in "[<>!?\\[\\]a-zA-Z:=\"' &;#/王（）@\\-]{0,200}"
    ) {
        let p = prolog::scan_prolog(&s);
        let _ = p.is_html();
        let _ = prolog::rewrite_for_feed_rs(&s, &p);
        let _ = repair::escape_bare_ampersands(&s);
        let _ = repair::neutralise_stray_declarations(&s);
        let _ = repair::defuse_feed_rs_panics(&s);
        let _ = repair::replace_text_construct_type(&s, "text/plain");
        let _ = repair::locate_xml_error(&s);
    }

    #[test]
    fn decoding_never_panics_on_arbitrary_bytes(
        bytes in proptest::collection::vec(any::<u8>(), 0..300),
        content_type in proptest::option::of("[a-zA-Z0-9/;= \"-]{0,40}"),
    ) {
        let (text, _) = decode_feed_text(&bytes, content_type.as_deref());
        prop_assert!(bytes.is_empty() || !text.is_empty() || bytes.len() < 4);
    }
}
