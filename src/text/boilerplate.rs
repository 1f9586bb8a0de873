//! The wrapping that feed generators (WordPress, Yoast SEO) put around an excerpt: the
//! marker where the text was cut (`[…]`) and the `The post … appeared first on …` footer.
//! Read in three places: the feed poller asks for the article page when a summary has
//! an excerpt marker, the normaliser strips both from story text, and the dedup stage
//! strips them again from what it hashes (its input may come from elsewhere).

use std::borrow::Cow;

/// The marks of a cut excerpt, as feed HTML writes them and as rendered text shows them.
pub(crate) const EXCERPT_MARKERS: &[&str] = &["[…]", "[...]", "[&#8230;]", "[&hellip;]"];

/// The words that join the two halves of the Yoast footer.
const FOOTER_MARKER: &str = " appeared first on ";

/// The words that start the Yoast footer.
const FOOTER_START: &str = "The post ";

/// Whether `text` (HTML or plain) holds an excerpt marker.
pub(crate) fn has_excerpt_marker(text: &str) -> bool {
    EXCERPT_MARKERS.iter().any(|marker| text.contains(marker))
}

/// `text` without its excerpt markers; a space stands in for one that sat between two
/// words, so that they stay apart. Borrowed when there is no marker.
pub(crate) fn remove_excerpt_markers(text: &str) -> Cow<'_, str> {
    if !has_excerpt_marker(text) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some((at, len)) = EXCERPT_MARKERS
        .iter()
        .filter_map(|marker| rest.find(marker).map(|at| (at, marker.len())))
        .min()
    {
        out.push_str(&rest[..at]);
        rest = &rest[at + len..];
        let between_words = out.chars().next_back().is_some_and(|c| !c.is_whitespace())
            && rest.chars().next().is_some_and(|c| !c.is_whitespace());
        if between_words {
            out.push(' ');
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// `text` without the Yoast SEO feed footer `The post <title> appeared first on <site>.`
/// and everything after it, also when the footer is run together with the excerpt.
pub(crate) fn strip_yoast_footer(text: &str) -> &str {
    let Some(marker) = text.rfind(FOOTER_MARKER) else {
        return text;
    };
    let head = &text[..marker];
    let starts: Vec<usize> = head.match_indices(FOOTER_START).map(|(i, _)| i).collect();
    // The footer starts the text or follows the end of the excerpt (`[…]`, a full stop,
    // …); an earlier "The post" mid-sentence, or one inside the title, is not its start.
    let at_boundary = |&&i: &&usize| {
        head[..i]
            .trim_end()
            .chars()
            .next_back()
            .is_none_or(|c| matches!(c, ']' | '.' | '…' | '!' | '?' | '"' | '”' | '»'))
    };
    match starts.iter().find(at_boundary).or(starts.last()) {
        Some(&start) => &text[..start],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_marker_is_found_and_removed() {
        for marker in EXCERPT_MARKERS {
            let text = format!("The fleet sails {marker}");
            assert!(has_excerpt_marker(&text), "{marker}");
            assert_eq!(remove_excerpt_markers(&text), "The fleet sails ");
        }
        assert!(!has_excerpt_marker("A complete item [see map]."));
        assert!(matches!(remove_excerpt_markers("x"), Cow::Borrowed("x")));
    }

    #[test]
    fn a_marker_between_two_words_leaves_a_space() {
        for (text, without) in [
            ("sails[…]at dawn", "sails at dawn"),
            ("sails […] at", "sails  at"),
            ("[...]sails[…]", "sails"),
        ] {
            assert_eq!(remove_excerpt_markers(text), without, "{text}");
        }
    }

    #[test]
    fn a_footer_run_into_the_excerpt_is_cut_at_its_start() {
        assert_eq!(
            strip_yoast_footer(
                "Ports boom. Of […]The post Ports boom appeared first on Asia Times."
            ),
            "Ports boom. Of […]"
        );
    }

    #[test]
    fn a_footer_title_starting_with_the_post_is_cut_whole() {
        assert_eq!(
            strip_yoast_footer("Reopened. The post The post office reopens appeared first on X."),
            "Reopened. "
        );
    }

    #[test]
    fn the_post_mid_sentence_is_not_the_footer() {
        assert_eq!(
            strip_yoast_footer(
                "Staff said The post office shut. The post Shut appeared first on X."
            ),
            "Staff said The post office shut. "
        );
        let plain = "She left the post after two years.";
        assert_eq!(strip_yoast_footer(plain), plain);
    }
}
