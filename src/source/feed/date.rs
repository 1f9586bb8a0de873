//! The default zone for a feed's dates, given to the date reader
//! ([`crate::text::dates::read_date`]) that [`super::parse_feed`] hands to feed-rs: feeds
//! write every date in one zone, so a date written without one is read in the zone of the
//! channel's own date.

use chrono::FixedOffset;

use crate::text::dates::stated_offset;

/// The zone offset of the first channel-level date (`<pubDate>`, `<lastBuildDate>`,
/// `<dc:date>`, `<updated>`, `<published>`) that appears before the first item or entry,
/// when that date states one. Feeds write every date in one zone, so this is the best guess
/// for item dates written without a zone.
pub(crate) fn channel_offset(feed_text: &str) -> Option<FixedOffset> {
    // Only the channel head is looked at: up to the first item, at most 64 KiB.
    let mut head_end = feed_text.len().min(64 * 1024);
    while !feed_text.is_char_boundary(head_end) {
        head_end -= 1;
    }
    let head = &feed_text[..head_end];
    let head = match ["<item", "<entry", "\"items\""]
        .iter()
        .filter_map(|m| head.find(m))
        .min()
    {
        Some(i) => &head[..i],
        None => head,
    };
    for tag in [
        "lastBuildDate",
        "pubDate",
        "dc:date",
        "updated",
        "published",
    ] {
        let open = format!("<{tag}>");
        let Some(start) = head.find(&open) else {
            continue;
        };
        let rest = &head[start + open.len()..];
        let Some(end) = rest.find('<') else {
            continue;
        };
        if let Some(offset) = stated_offset(rest[..end].trim()) {
            return Some(offset);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_channel_offset_before_the_first_item() {
        let feed = "<rss><channel><pubDate>Sun, 17 Dec 2023 00:58:40 -0500</pubDate><item>\
                    <pubDate>Sat, 16 Dec 2023 14:00:00 +0900</pubDate></item></channel></rss>";
        assert_eq!(channel_offset(feed), FixedOffset::west_opt(5 * 3600));
        assert_eq!(
            channel_offset("<rss><channel><item/></channel></rss>"),
            None
        );
    }

    proptest::proptest! {
        #[test]
        fn any_string_is_scanned_without_panicking(s in "\\PC{0,40}") {
            let _ = channel_offset(&s);
        }
    }
}
