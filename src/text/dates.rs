//! Reading a date string, for feeds and pages alike: the feed parser gives [`read_date`]
//! to feed-rs as its timestamp parser (`parser::Builder::timestamp_parser`), and article
//! extraction reads JSON-LD, `<meta>`, `<time datetime>` and selector dates with
//! [`read_page_date`].
//!
//! Strict RFC 3339 and RFC 2822 are tried first (chrono). Then two hand-written readers:
//! an ISO 8601 / W3C-DTF reader (`2003-12`, `031231`, `2004-07-08 23:56:58 -00:20`,
//! `2004-július-13T9:15-05:00`, …) and a word-by-word reader for the RFC 822 family and
//! its relatives (`Sat, Dec 16 2023 02:02:33 PM`, `mer, 16 nov 2022 00:38:15 +0100`,
//! `Tue, 15 Nov 2022 20:15:04 Z`, `Mon, 26 January 2004 16:31:00 ET`, asctime, `2006/09/15`,
//! `November 3, 2026`, Korean `2004년 05월 28일 01:31:15`, …). Month names are known in
//! English, German, French, Italian, Spanish, Portuguese, Dutch, Hungarian and Greek; day
//! names are skipped.
//!
//! A date without a zone is read in `default_offset` (for feeds, the zone of the channel's
//! own date), else UTC; Korean-styled dates without a zone are read as KST. Anything
//! unreadable is `None`: the caller decides what a missing date means.

use chrono::{
    DateTime, Datelike, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeZone, Utc,
};

/// Longer strings are not dates; refusing them bounds the work per call.
const MAX_DATE_LEN: usize = 128;

/// Reads `text` as a date; a zoneless date is taken to be in `default_offset` (UTC if `None`).
pub(crate) fn read_date(text: &str, default_offset: Option<FixedOffset>) -> Option<DateTime<Utc>> {
    let s = text.trim();
    if s.is_empty() || s.len() > MAX_DATE_LEN {
        return None;
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Some(dt.with_timezone(&Utc));
    }
    if let Ok(dt) = DateTime::parse_from_rfc2822(s) {
        return Some(dt.with_timezone(&Utc));
    }
    let starts_numeric = s.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '+');
    if starts_numeric && let Some(dt) = parse_iso_like(s, default_offset) {
        return Some(dt);
    }
    parse_words(s, default_offset)
}

/// Earliest and latest year a page's publication date may have; anything outside is a
/// placeholder (`0001-01-01`, `1970-01-01`) or a misread number.
const PAGE_YEARS: std::ops::RangeInclusive<i32> = 1990..=2100;

/// Reads a date from page metadata or page text: [`read_date`] with zoneless dates in
/// UTC, and also Unix time stamps (9 to 12 digits in seconds, 13 in milliseconds), which
/// sites put in `<meta>` and JSON-LD. The date must name a day (a year or a month alone,
/// fine in a feed's W3C-DTF, says nothing about a page) and fall within [`PAGE_YEARS`].
pub(crate) fn read_page_date(text: &str) -> Option<DateTime<Utc>> {
    let s = text.trim();
    // Every form that names a day is at least eight characters long (`20261103`,
    // `2026-1-3`); shorter ones are a year, a month or a fragment.
    if s.len() < 8 {
        return None;
    }
    let date = read_date(s, None).or_else(|| read_unix_time(s))?;
    PAGE_YEARS.contains(&date.year()).then_some(date)
}

/// A Unix time stamp: 9 to 12 digits of seconds, or 13 of milliseconds.
fn read_unix_time(s: &str) -> Option<DateTime<Utc>> {
    if !(9..=13).contains(&s.len()) || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: i64 = s.parse().ok()?;
    if s.len() == 13 {
        DateTime::from_timestamp_millis(n)
    } else {
        DateTime::from_timestamp(n, 0)
    }
}

/// The offset a date string states explicitly, if it parses and names one.
pub(crate) fn stated_offset(s: &str) -> Option<FixedOffset> {
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Some(*dt.offset());
    }
    if let Ok(dt) = DateTime::parse_from_rfc2822(s) {
        return Some(*dt.offset());
    }
    let fields = read_words(s)?;
    fields.zone.map(|z| z.offset)
}

// ---------------------------------------------------------------------------------------
// ISO 8601 / W3C-DTF

fn parse_iso_like(s: &str, default_offset: Option<FixedOffset>) -> Option<DateTime<Utc>> {
    // Split date and time at the first 'T' or space that follows the date part.
    let (date_part, rest) = match s.find(['T', 't', ' ']) {
        Some(i) => (&s[..i], Some(s[i + 1..].trim_start())),
        None => (s, None),
    };
    let date = parse_iso_date(date_part)?;
    let (time, zone) = match rest {
        None => (NaiveTime::MIN, None),
        Some(r) => parse_iso_time_and_zone(r)?,
    };
    let offset = zone.or(default_offset).unwrap_or(utc_offset());
    to_utc(NaiveDateTime::new(date, time), offset)
}

fn parse_iso_date(d: &str) -> Option<NaiveDate> {
    // Every form below is ASCII; checking first keeps the byte slicing on char boundaries.
    if !d.is_ascii() {
        return parse_iso_date_with_month_name(d);
    }
    if let Some(compact) = d.strip_prefix('-') {
        // "-YYMM" or "-YY-MM": a two-digit year and a month.
        let (yy, mm) = match compact.split_once('-') {
            Some((yy, mm)) => (yy, mm),
            None if compact.len() == 4 => compact.split_at(2),
            None => return None,
        };
        if yy.len() != 2 || mm.len() != 2 {
            return None;
        }
        return ymd(two_digit_year(digits(yy)?), digits(mm)?, 1);
    }
    let parts: Vec<&str> = d.split('-').collect();
    match parts.as_slice() {
        [only] => match only.len() {
            4 => ymd(digits(only)? as i32, 1, 1),
            6 => ymd(
                two_digit_year(digits(&only[..2])?),
                digits(&only[2..4])?,
                digits(&only[4..])?,
            ),
            8 => ymd(
                digits(&only[..4])? as i32,
                digits(&only[4..6])?,
                digits(&only[6..])?,
            ),
            _ => None,
        },
        [y, m] => {
            let year = year_field(y)?;
            if m.len() == 3 && m.bytes().all(|b| b.is_ascii_digit()) {
                // "YYYY-DDD": an ordinal day.
                NaiveDate::from_yo_opt(year, digits(m)?)
            } else {
                ymd(year, month_field(m)?, 1)
            }
        }
        [y, m, day] => {
            let year = year_field(y)?;
            if day.is_empty() || day.len() > 2 {
                return None;
            }
            ymd(year, month_field(m)?, digits(day)?)
        }
        _ => None,
    }
}

/// "2004-július-13": an ISO date whose month is a (non-ASCII) name.
fn parse_iso_date_with_month_name(d: &str) -> Option<NaiveDate> {
    let parts: Vec<&str> = d.split('-').collect();
    let [y, m, day] = parts.as_slice() else {
        return None;
    };
    if day.is_empty() || day.len() > 2 {
        return None;
    }
    ymd(
        year_field(y)?,
        month_from_name(&m.to_lowercase())?,
        digits(day)?,
    )
}

/// A year field of an ISO date: four digits, or two (then 19xx/20xx).
fn year_field(y: &str) -> Option<i32> {
    match y.len() {
        4 => Some(digits(y)? as i32),
        2 => Some(two_digit_year(digits(y)?)),
        _ => None,
    }
}

/// A month field of an ISO date: one to three digits (`012` is seen), or a month name.
fn month_field(m: &str) -> Option<u32> {
    if m.bytes().all(|b| b.is_ascii_digit()) {
        if m.is_empty() || m.len() > 3 {
            return None;
        }
        return digits(m);
    }
    month_from_name(&m.to_lowercase())
}

fn parse_iso_time_and_zone(r: &str) -> Option<(NaiveTime, Option<FixedOffset>)> {
    // The time is digits, ':' and a fraction; what follows is the zone.
    let end = r
        .find(|c: char| !(c.is_ascii_digit() || c == ':' || c == '.' || c == ','))
        .unwrap_or(r.len());
    let time = parse_clock(&r[..end])?;
    let zone_text = r[end..].trim();
    if zone_text.is_empty() {
        return Some((time, None));
    }
    let zone = zone_from_token(&zone_text.to_lowercase())?;
    Some((time, Some(zone.offset)))
}

// ---------------------------------------------------------------------------------------
// RFC 822 family, read word by word

#[derive(Default)]
struct Fields {
    year: Option<i32>,
    month: Option<u32>,
    day: Option<u32>,
    time: Option<NaiveTime>,
    /// `Some(true)` for PM, `Some(false)` for AM.
    pm: Option<bool>,
    zone: Option<Zone>,
    korean: bool,
}

#[derive(Clone, Copy)]
struct Zone {
    offset: FixedOffset,
}

fn parse_words(s: &str, default_offset: Option<FixedOffset>) -> Option<DateTime<Utc>> {
    let f = read_words(s)?;
    let date = ymd(f.year?, f.month?, f.day?)?;
    let mut time = f.time.unwrap_or(NaiveTime::MIN);
    if let Some(pm) = f.pm {
        time = apply_meridiem(time, pm)?;
    }
    let offset = match f.zone {
        Some(z) => z.offset,
        None if f.korean => FixedOffset::east_opt(9 * 3600)?,
        None => default_offset.unwrap_or(utc_offset()),
    };
    to_utc(NaiveDateTime::new(date, time), offset)
}

fn read_words(s: &str) -> Option<Fields> {
    let lowered = s.to_lowercase().replace(',', " ");
    let tokens: Vec<&str> = lowered.split_whitespace().collect();
    let mut f = Fields::default();

    // A leading word followed by a comma in the original is a day name, whatever its language.
    let mut skip_first = false;
    if let Some(first_word) = s.split_whitespace().next()
        && let Some(word) = first_word.split(',').next()
        && s.trim_start()[word.len()..].trim_start().starts_with(',')
        && word.chars().all(char::is_alphabetic)
    {
        skip_first = true;
    }

    // Month candidates: a day name such as Italian "mar" (martedì) is also a month prefix;
    // when two words could be the month, the one that is a known day name loses.
    let month_words: Vec<usize> = tokens
        .iter()
        .enumerate()
        .filter(|(i, t)| {
            !(skip_first && *i == 0) && month_from_name(t.trim_end_matches('.')).is_some()
        })
        .map(|(i, _)| i)
        .collect();
    let month_index = if month_words.len() > 1 {
        month_words
            .iter()
            .copied()
            .find(|i| !is_day_name(tokens[*i].trim_end_matches('.')))
    } else {
        month_words.first().copied()
    };

    for (i, raw) in tokens.iter().enumerate() {
        if skip_first && i == 0 {
            continue;
        }
        let token = raw.trim_end_matches('.');
        if token.is_empty() {
            continue;
        }
        if Some(i) == month_index {
            f.month = month_from_name(token);
            continue;
        }
        if !read_token(token, &mut f) {
            return None;
        }
    }
    Some(f)
}

/// Reads one word into `f`; false when the word cannot belong to a date.
fn read_token(token: &str, f: &mut Fields) -> bool {
    let first = token.chars().next().unwrap_or(' ');

    // Korean suffixed numbers: 2004년 05월 28일; 오전/오후 = AM/PM.
    for (suffix, slot) in [("년", 0), ("월", 1), ("일", 2)] {
        if let Some(n) = token.strip_suffix(suffix) {
            f.korean = true;
            let Some(v) = digits(n) else { return false };
            match slot {
                0 => {
                    f.year = Some(if n.len() == 2 {
                        two_digit_year(v)
                    } else {
                        v as i32
                    })
                }
                1 => f.month = Some(v),
                _ => f.day = Some(v),
            }
            return true;
        }
    }
    match token {
        "오전" => {
            f.korean = true;
            f.pm = Some(false);
            return true;
        }
        "오후" => {
            f.korean = true;
            f.pm = Some(true);
            return true;
        }
        "am" | "a.m" => {
            f.pm = Some(false);
            return true;
        }
        "pm" | "p.m" => {
            f.pm = Some(true);
            return true;
        }
        _ => {}
    }

    if first.is_ascii_digit() {
        if token.contains(':') {
            return read_clock_token(token, f);
        }
        if token.bytes().all(|b| b.is_ascii_digit()) {
            return read_number(token, f);
        }
        for sep in ['/', '-', '.'] {
            if token.contains(sep) {
                return read_numeric_date(token, sep, f);
            }
        }
        return false;
    }
    if first == '+' || first == '-' || first.is_alphabetic() || first == '(' {
        let bare = token.trim_start_matches('(').trim_end_matches(')');
        if let Some(zone) = zone_from_token(bare) {
            // A second zone (e.g. "-0800 (PST)") is redundant; the first one wins.
            if f.zone.is_none() {
                f.zone = Some(zone);
            }
            return true;
        }
        if first == '(' {
            return true; // an RFC 822 comment
        }
        return is_day_name(token) || is_filler(token);
    }
    false
}

fn read_clock_token(token: &str, f: &mut Fields) -> bool {
    if f.time.is_some() {
        return false;
    }
    // "02:02:33pm", "10:00:00z", "10:00:00+0200": split off what follows the clock.
    let end = token
        .find(|c: char| !(c.is_ascii_digit() || c == ':' || c == '.'))
        .unwrap_or(token.len());
    let Some(time) = parse_clock(&token[..end]) else {
        return false;
    };
    f.time = Some(time);
    let tail = &token[end..];
    if tail.is_empty() {
        return true;
    }
    read_token(tail, f)
}

fn read_number(token: &str, f: &mut Fields) -> bool {
    let Some(v) = digits(token) else { return false };
    match token.len() {
        1 | 2 if f.day.is_none() => f.day = Some(v),
        2 if f.year.is_none() => f.year = Some(two_digit_year(v)),
        4 if f.year.is_none() => f.year = Some(v as i32),
        _ => return false,
    }
    true
}

/// "2006/09/15", "16.11.2022", "2023-12-16", "12/16/2023".
fn read_numeric_date(token: &str, sep: char, f: &mut Fields) -> bool {
    let parts: Vec<&str> = token.split(sep).collect();
    let [a, b, c] = parts.as_slice() else {
        return false;
    };
    let (Some(av), Some(bv), Some(cv)) = (digits(a), digits(b), digits(c)) else {
        return false;
    };
    let (y, m, d) = if a.len() == 4 {
        (av as i32, bv, cv)
    } else if c.len() == 4 || c.len() == 2 {
        let year = if c.len() == 4 {
            cv as i32
        } else {
            two_digit_year(cv)
        };
        if sep == '/' && av <= 12 {
            // Slashes: US month/day/year, also when ambiguous (12/05/2024).
            (year, av, bv)
        } else {
            (year, bv, av)
        }
    } else {
        return false;
    };
    if f.year.is_some() || f.month.is_some() || f.day.is_some() {
        return false;
    }
    f.year = Some(y);
    f.month = Some(m);
    f.day = Some(d);
    true
}

// ---------------------------------------------------------------------------------------
// Shared pieces

/// "HH", "HH:MM", "HH:MM:SS", with an optional fraction of a second.
fn parse_clock(t: &str) -> Option<NaiveTime> {
    let parts: Vec<&str> = t.split(':').collect();
    if parts.is_empty() || parts.len() > 3 {
        return None;
    }
    let (sec_part, frac) = match parts.get(2) {
        Some(s) => match s.split_once(['.', ',']) {
            Some((whole, frac)) => (Some(whole), Some(frac)),
            None => (Some(*s), None),
        },
        None => (None, None),
    };
    let h_text = parts[0];
    if h_text.is_empty() || h_text.len() > 2 {
        return None;
    }
    let h = digits(h_text)?;
    let m = match parts.get(1) {
        Some(m) if m.len() == 2 || m.len() == 1 => digits(m)?,
        Some(_) => return None,
        None => 0,
    };
    let s = match sec_part {
        Some(s) if s.len() == 2 || s.len() == 1 => digits(s)?,
        Some(_) => return None,
        None => 0,
    };
    let nanos = match frac {
        Some(fr) if !fr.is_empty() && fr.bytes().all(|b| b.is_ascii_digit()) => {
            let kept = &fr[..fr.len().min(9)];
            digits(kept)? * 10u32.pow(9 - kept.len() as u32)
        }
        Some(_) => return None,
        None => 0,
    };
    // 24:00:00 is midnight at the end of the day; it is read as 00:00 of that day.
    let h = if h == 24 && m == 0 && s == 0 { 0 } else { h };
    NaiveTime::from_hms_nano_opt(h, m, s, nanos)
}

fn apply_meridiem(time: NaiveTime, pm: bool) -> Option<NaiveTime> {
    use chrono::Timelike;
    let h = time.hour();
    let h = match (pm, h) {
        (_, 13..) => h, // already 24-hour
        (true, 12) => 12,
        (true, _) => h + 12,
        (false, 12) => 0,
        (false, _) => h,
    };
    time.with_hour(h)
}

/// A zone word or offset: "z", "gmt", "utc", "ut", "etc/gmt", "est", "+0100", "-01:01",
/// "+05", "gmt-01:01", "utc+8".
fn zone_from_token(t: &str) -> Option<Zone> {
    let t = t.trim();
    if let Some(rest) = t.strip_prefix("etc/") {
        return zone_from_token(rest);
    }
    for prefix in ["gmt", "utc", "ut"] {
        if let Some(rest) = t.strip_prefix(prefix)
            && (rest.starts_with('+') || rest.starts_with('-'))
        {
            return numeric_offset(rest).map(|offset| Zone { offset });
        }
    }
    if t.starts_with('+') || t.starts_with('-') {
        return numeric_offset(t).map(|offset| Zone { offset });
    }
    let minutes = named_zone_minutes(t)?;
    Some(Zone {
        offset: FixedOffset::east_opt(minutes * 60)?,
    })
}

/// "+HHMM", "+HH:MM", "+HH", "+H".
fn numeric_offset(t: &str) -> Option<FixedOffset> {
    let sign = match t.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let body = &t[1..];
    if !body.is_ascii() {
        return None;
    }
    let (h, m) = match body.split_once(':') {
        Some((h, m)) => (h, m),
        None if body.len() == 4 => body.split_at(2),
        None if body.len() <= 2 => (body, "00"),
        None => return None,
    };
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return None;
    }
    let (h, m) = (digits(h)? as i32, digits(m)? as i32);
    if h > 14 || m > 59 {
        return None;
    }
    FixedOffset::east_opt(sign * (h * 3600 + m * 60))
}

/// Zone abbreviations seen in feeds, in minutes east of UTC. Ambiguous ones take the
/// reading most common in news feeds ("IST" is India, "AT"/"ET"/… are North American).
fn named_zone_minutes(t: &str) -> Option<i32> {
    let h = |hours: i32| Some(hours * 60);
    match t {
        "z" | "gmt" | "ut" | "utc" | "wet" | "uct" => h(0),
        "bst" | "cet" | "met" | "west" | "wat" | "mez" => h(1),
        "cest" | "mest" | "eet" | "sast" | "cat" | "mesz" => h(2),
        "eest" | "msk" | "eat" | "ast3" => h(3),
        "gst" => h(4),
        "pkt" => h(5),
        "ist" => Some(5 * 60 + 30),
        "ict" | "wib" => h(7),
        "hkt" | "sgt" | "awst" | "pht" | "myt" | "wita" => h(8),
        "jst" | "kst" | "wit" => h(9),
        "acst" => Some(9 * 60 + 30),
        "aest" | "chst" => h(10),
        "acdt" => Some(10 * 60 + 30),
        "aedt" => h(11),
        "nzst" => h(12),
        "nzdt" => h(13),
        "nst" => Some(-(3 * 60 + 30)),
        "ndt" => Some(-(2 * 60 + 30)),
        "adt" => h(-3),
        "at" | "ast" | "edt" => h(-4),
        "et" | "est" | "cdt" => h(-5),
        "ct" | "cst" | "mdt" => h(-6),
        "mt" | "mst" | "pdt" => h(-7),
        "pt" | "pst" | "akdt" => h(-8),
        "akst" | "hdt" => h(-9),
        "hst" => h(-10),
        _ => None,
    }
}

fn is_day_name(t: &str) -> bool {
    const DAYS: &[&str] = &[
        // English
        "mon",
        "tue",
        "tues",
        "wed",
        "thu",
        "thur",
        "thurs",
        "fri",
        "sat",
        "sun",
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday", // German
        "mo",
        "di",
        "mi",
        "do",
        "fr",
        "sa",
        "so",
        "montag",
        "dienstag",
        "mittwoch",
        "donnerstag",
        "freitag",
        "samstag",
        "sonntag", // French
        "lun",
        "mar",
        "mer",
        "jeu",
        "ven",
        "sam",
        "dim",
        "lundi",
        "mardi",
        "mercredi",
        "jeudi",
        "vendredi",
        "samedi",
        "dimanche", // Italian
        "gio",
        "sab",
        "dom",
        "lunedì",
        "martedì",
        "mercoledì",
        "giovedì",
        "venerdì",
        "sabato",
        "domenica", // Spanish / Portuguese
        "mié",
        "jue",
        "vie",
        "lunes",
        "martes",
        "miércoles",
        "jueves",
        "viernes",
        "sábado",
        "domingo",
        "seg",
        "ter",
        "qua",
        "qui",
        "sex", // Dutch
        "ma",
        "wo",
        "za",
        "zo",
        "maandag",
        "dinsdag",
        "woensdag",
        "donderdag",
        "vrijdag",
        "zaterdag",
        "zondag", // Greek
        "κυρ",
        "δευ",
        "τρι",
        "τετ",
        "πεμ",
        "παρ",
        "σαβ",
    ];
    DAYS.contains(&t)
}

/// Words that sit between the parts of a date ("15 de noviembre de 2022", "um 10:00 Uhr").
fn is_filler(t: &str) -> bool {
    matches!(
        t,
        "de" | "del" | "at" | "um" | "uhr" | "h" | "à" | "le" | "the" | "on"
    )
}

fn month_from_name(t: &str) -> Option<u32> {
    const MONTHS: [&[&str]; 12] = [
        &[
            "january", "januar", "janvier", "gennaio", "enero", "janeiro", "januari", "január",
            "ιαν",
        ],
        &[
            "february",
            "februar",
            "février",
            "febbraio",
            "febrero",
            "fevereiro",
            "februari",
            "február",
            "φεβ",
        ],
        &[
            "march", "märz", "maerz", "mars", "marzo", "março", "maart", "mrt", "március", "μάρ",
            "μαρ",
        ],
        &["april", "avril", "aprile", "abril", "április", "απρ"],
        &[
            "may", "mai", "maggio", "mayo", "maio", "mei", "május", "μάι", "μαΐ", "μαι", "μάϊ",
        ],
        &[
            "june", "juni", "juin", "giugno", "junio", "junho", "június", "ιούν", "ιουν",
        ],
        &[
            "july", "juli", "juillet", "luglio", "julio", "julho", "július", "ιούλ", "ιουλ",
        ],
        &[
            "august",
            "août",
            "aout",
            "agosto",
            "augustus",
            "augusztus",
            "αύγ",
            "αυγ",
        ],
        &[
            "september",
            "septembre",
            "settembre",
            "septiembre",
            "setembro",
            "szeptember",
            "σεπ",
        ],
        &[
            "october", "oktober", "octobre", "ottobre", "octubre", "outubro", "október", "οκτ",
        ],
        &[
            "november",
            "novembre",
            "noviembre",
            "novembro",
            "νοέ",
            "νοε",
        ],
        &[
            "december",
            "dezember",
            "décembre",
            "dicembre",
            "diciembre",
            "dezembro",
            "δεκ",
        ],
    ];
    if t.chars().count() < 3 || !t.chars().all(char::is_alphabetic) {
        return None;
    }
    for (i, names) in MONTHS.iter().enumerate() {
        for name in names.iter() {
            // Exact name, or an abbreviation of at least three letters ("sept", "dic", "févr").
            if *name == t || (name.starts_with(t) && !is_day_name(t)) {
                return Some(i as u32 + 1);
            }
        }
    }
    // A day name that is also a month abbreviation ("mar") is still a month when alone.
    for (i, names) in MONTHS.iter().enumerate() {
        if names.iter().any(|name| name.starts_with(t)) {
            return Some(i as u32 + 1);
        }
    }
    None
}

fn digits(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 9 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn two_digit_year(v: u32) -> i32 {
    if v < 70 {
        2000 + v as i32
    } else {
        1900 + v as i32
    }
}

fn ymd(y: i32, m: u32, d: u32) -> Option<NaiveDate> {
    NaiveDate::from_ymd_opt(y, m, d)
}

fn utc_offset() -> FixedOffset {
    Utc.fix()
}

fn to_utc(local: NaiveDateTime, offset: FixedOffset) -> Option<DateTime<Utc>> {
    offset
        .from_local_datetime(&local)
        .single()
        .map(|dt| dt.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> Option<DateTime<Utc>> {
        Some(
            DateTime::parse_from_rfc3339(s)
                .expect("test literal")
                .with_timezone(&Utc),
        )
    }

    #[test]
    fn reads_rfc3339_and_rfc2822() {
        assert_eq!(
            read_date("2003-12-31T10:14:55-08:00", None),
            utc("2003-12-31T18:14:55Z")
        );
        assert_eq!(
            read_date("Thu, 01 Jan 2004 19:48:21 GMT", None),
            utc("2004-01-01T19:48:21Z")
        );
    }

    #[test]
    fn reads_a_z_zone_after_an_rfc822_date() {
        assert_eq!(
            read_date("Tue, 15 Nov 2022 20:15:04 Z", None),
            utc("2022-11-15T20:15:04Z")
        );
    }

    #[test]
    fn reads_italian_day_and_month_names() {
        assert_eq!(
            read_date("mer, 16 nov 2022 00:38:15 +0100", None),
            utc("2022-11-15T23:38:15Z")
        );
        assert_eq!(
            read_date("mar, 15 mar 2022 10:00:00 +0100", None),
            utc("2022-03-15T09:00:00Z")
        );
    }

    #[test]
    fn reads_german_dates() {
        assert_eq!(
            read_date("Mi, 16 Dez 2020 08:00:00 +0100", None),
            utc("2020-12-16T07:00:00Z")
        );
        assert_eq!(
            read_date("Mittwoch, 16. März 2022 10:00 Uhr", None),
            utc("2022-03-16T10:00:00Z")
        );
    }

    #[test]
    fn reads_month_first_dates_with_am_pm_in_the_default_offset() {
        let eastern = FixedOffset::west_opt(5 * 3600);
        assert_eq!(
            read_date("Sat, Dec 16 2023 02:02:33 PM", eastern),
            utc("2023-12-16T19:02:33Z")
        );
        assert_eq!(
            read_date("Sat, Dec 16 2023 02:02:33 PM", None),
            utc("2023-12-16T14:02:33Z")
        );
    }

    #[test]
    fn reads_north_american_zone_names() {
        assert_eq!(
            read_date("Thu, 06 Feb 2020 00:00:00 PST", None),
            utc("2020-02-06T08:00:00Z")
        );
        assert_eq!(
            read_date("Mon, 26 January 2004 16:31:00 ET", None),
            utc("2004-01-26T21:31:00Z")
        );
    }

    #[test]
    fn reads_dates_without_seconds_or_without_time() {
        assert_eq!(
            read_date("Thu, 01 Jan 2004 00:00 GMT", None),
            utc("2004-01-01T00:00:00Z")
        );
        assert_eq!(
            read_date("Thu, 01 Jan 2004", None),
            utc("2004-01-01T00:00:00Z")
        );
    }

    #[test]
    fn reads_iso_variants() {
        assert_eq!(read_date("2003-12", None), utc("2003-12-01T00:00:00Z"));
        assert_eq!(
            read_date("2004-07-08 23:56:58 -00:20", None),
            utc("2004-07-09T00:16:58Z")
        );
        assert_eq!(
            read_date("2003-12-31T10:14:55.1234Z", None),
            utc("2003-12-31T10:14:55.1234Z")
        );
        assert_eq!(
            read_date("2022-11-16T10:00:00+0100", None),
            utc("2022-11-16T09:00:00Z")
        );
    }

    #[test]
    fn rejects_impossible_dates() {
        for bad in [
            "",
            "   ",
            "2003-12-31T25:14:55Z",
            "Sun, 99 Jun 2009 12:00:00 GMT",
            "Sun, 16 zzz 2012 11:47:32 GMT",
            "2013-01-28T11:30:00-06:00Textra",
            "Sun, 31 Dec 9999 23:59:59 -9999",
            "yesterday",
            "12345678901234567890",
        ] {
            assert_eq!(read_date(bad, None), None, "{bad:?}");
        }
    }

    #[test]
    fn never_panics_on_odd_input() {
        for odd in [
            "\u{0}",
            "-",
            "+",
            "::",
            "1:2:3:4",
            "년",
            "오후",
            "(",
            "ǅ, 1",
            "99999-1-1",
        ] {
            let _ = read_date(odd, None);
        }
    }

    #[test]
    fn page_dates_in_common_metadata_formats_are_read_as_utc() {
        let cases = [
            ("2015-07-24T05:36:09+01:00", "2015-07-24T04:36:09Z"),
            ("2024-04-20T04:20:00.000Z", "2024-04-20T04:20:00Z"),
            ("2019-04-28 06:01:07", "2019-04-28T06:01:07Z"),
            ("2020-02-19T10:00:00-0500", "2020-02-19T15:00:00Z"),
            ("2020-02-19T10:00Z", "2020-02-19T10:00:00Z"),
            ("Tue, 03 Nov 2026 08:15:00 +0800", "2026-11-03T00:15:00Z"),
            ("2026-11-03", "2026-11-03T00:00:00Z"),
            ("November 3, 2026", "2026-11-03T00:00:00Z"),
            ("1762156800", "2025-11-03T08:00:00Z"),
            ("1762156800000", "2025-11-03T08:00:00Z"),
        ];
        for (raw, expected) in cases {
            assert_eq!(read_page_date(raw), utc(expected), "{raw}");
        }
    }

    #[test]
    fn page_dates_read_the_feed_forms_too() {
        assert_eq!(
            read_page_date("3 Nov 2026 14:05 HKT"),
            utc("2026-11-03T06:05:00Z")
        );
        assert_eq!(
            read_page_date("Thu Aug 30 2012 17:26:16 +0200"),
            utc("2012-08-30T15:26:16Z")
        );
    }

    #[test]
    fn unreadable_absurd_or_dayless_page_dates_are_none() {
        for raw in [
            "",
            "yesterday",
            "0000-00-00",
            "1970-01-01T00:00:00Z",
            "12",
            "2026",
            "2026-11",
            "2101-01-01",
            "12345678901234",
        ] {
            assert_eq!(read_page_date(raw), None, "{raw}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_string_is_read_without_panicking(s in "\\PC{0,40}") {
            let _ = read_date(&s, None);
            let _ = read_page_date(&s);
        }

        #[test]
        fn date_like_strings_are_read_without_panicking(
            s in "[0-9０-９٠-٩:+\\-TZ ./,年월일오후a-zé]{0,30}"
        ) {
            let _ = read_date(&s, FixedOffset::east_opt(3600));
        }
    }
}
