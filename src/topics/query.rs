//! Topic query language: lexer and recursive-descent parser from a query string to a [`Query`]
//! tree (DESIGN §4).
//!
//! Place in the pipeline: config validation calls [`crate::topics::check_query`] on every
//! `[[topics]]` entry at start-up; [`crate::topics::TopicSet::compile`] parses each query once
//! and compiles the trees into the matcher. Nothing here runs per story.
//!
//! ```text
//! query   := or
//! or      := and ("OR" and)*
//! and     := unary (["AND"] unary)*
//! unary   := ("NOT" | "-") unary | near
//! near    := primary ("NEAR/" N primary)*
//! primary := "(" query ")" | field ":" primary | phrase | term
//! ```
//!
//! Keywords are case-insensitive. `-` negates only at the start of an operand; inside a word
//! (`counter-drone`) it is part of the word. Every word and phrase is folded by the same
//! tokeniser as story text, so a word that folds into several words (`counter-drone`,
//! `U.S.`) becomes a phrase. Columns in errors count characters from 1.

use std::fmt;

use crate::topics::tokenize::fold_words;

/// Deepest nesting of parentheses, NOTs and field scopes a query may have.
const MAX_DEPTH: usize = 64;

/// Largest `N` accepted in `NEAR/N`.
pub(crate) const MAX_NEAR: u32 = 1000;

/// Why a query was rejected, and where. Displays as
/// `topic "tariffs": unexpected ')' at column 17`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("topic \"{topic}\": {message} at column {column}")]
pub struct QueryError {
    /// Name of the topic whose query failed.
    pub topic: String,
    /// 1-based character column of the offending spot in the query.
    pub column: usize,
    /// What is wrong, e.g. `unexpected ')'`.
    pub message: String,
}

/// The part of a story a term is restricted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field {
    /// Only the story's title.
    Title,
    /// Only the story's body.
    Body,
}

/// One searchable unit: a word, a prefix, or a phrase of folded words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Term {
    /// Folded words; more than one makes a phrase.
    pub(crate) words: Vec<String>,
    /// The last word is a prefix (`tariff*`, `"feed in tariff*"`).
    pub(crate) prefix: bool,
    /// Field scope, if any.
    pub(crate) field: Option<Field>,
}

/// A parsed query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Query {
    /// A word, prefix or phrase.
    Term(Term),
    /// Every child holds.
    And(Vec<Query>),
    /// At least one child holds.
    Or(Vec<Query>),
    /// The child does not hold; `column` is where the `NOT` or `-` stands.
    Not { inner: Box<Query>, column: usize },
    /// Both operands hold with hits at most `distance` words apart.
    Near {
        left: Box<Query>,
        right: Box<Query>,
        distance: u32,
    },
}

/// Parses `query` (for topic `topic`, used in error messages) and checks that it cannot
/// match a story without any of its terms.
pub(crate) fn parse(topic: &str, query: &str) -> Result<Query, QueryError> {
    let fail = |column: usize, message: String| QueryError {
        topic: topic.to_owned(),
        column,
        message,
    };
    let tokens = lex(query).map_err(|(c, m)| fail(c, m))?;
    let mut parser = Parser {
        tokens,
        pos: 0,
        depth: 0,
        field: None,
    };
    if parser.peek().kind == Kind::End {
        return Err(fail(1, "empty query".to_owned()));
    }
    let tree = parser.parse_or().map_err(|(c, m)| fail(c, m))?;
    let next = parser.peek();
    if next.kind != Kind::End {
        return Err(fail(next.column, format!("unexpected {}", next.kind)));
    }
    if let Some(column) = holds_without_terms(&tree) {
        return Err(fail(
            column,
            "query can match a story that contains none of its terms (a NOT needs a positive term beside it)"
                .to_owned(),
        ));
    }
    check_near_operands(&tree).map_err(|(c, m)| fail(c, m))?;
    Ok(tree)
}

/// If `q` holds on a story where no term occurs, the column of the NOT that makes it so.
fn holds_without_terms(q: &Query) -> Option<usize> {
    match q {
        Query::Term(_) | Query::Near { .. } => None,
        Query::Not { inner, column } => match holds_without_terms(inner) {
            Some(_) => None,
            None => Some(*column),
        },
        Query::And(children) => {
            let mut first = None;
            for child in children {
                let column = holds_without_terms(child)?;
                first.get_or_insert(column);
            }
            first
        }
        Query::Or(children) => children.iter().find_map(holds_without_terms),
    }
}

/// An operand of NEAR must need a term to hold, or NEAR could never find its position.
fn check_near_operands(q: &Query) -> Result<(), (usize, String)> {
    match q {
        Query::Term(_) => Ok(()),
        Query::Not { inner, .. } => check_near_operands(inner),
        Query::And(children) | Query::Or(children) => {
            children.iter().try_for_each(check_near_operands)
        }
        Query::Near { left, right, .. } => {
            for operand in [left, right] {
                if let Some(column) = holds_without_terms(operand) {
                    return Err((
                        column,
                        "a NEAR operand needs a term that must be present".to_owned(),
                    ));
                }
                check_near_operands(operand)?;
            }
            Ok(())
        }
    }
}

impl fmt::Display for Query {
    /// An s-expression, used by tests and debugging: `(AND (OR a b*) (NOT "c d"))`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Query::Term(t) => {
                match t.field {
                    Some(Field::Title) => f.write_str("title:")?,
                    Some(Field::Body) => f.write_str("body:")?,
                    None => {}
                }
                let star = if t.prefix { "*" } else { "" };
                if t.words.len() == 1 {
                    write!(f, "{}{star}", t.words[0])
                } else {
                    write!(f, "\"{}{star}\"", t.words.join(" "))
                }
            }
            Query::And(children) | Query::Or(children) => {
                f.write_str(if matches!(self, Query::And(_)) {
                    "(AND"
                } else {
                    "(OR"
                })?;
                for child in children {
                    write!(f, " {child}")?;
                }
                f.write_str(")")
            }
            Query::Not { inner, .. } => write!(f, "(NOT {inner})"),
            Query::Near {
                left,
                right,
                distance,
            } => write!(f, "(NEAR/{distance} {left} {right})"),
        }
    }
}

// ---------------------------------------------------------------- lexer

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    LParen,
    RParen,
    And,
    Or,
    Not,
    /// `-` at the start of an operand.
    Minus,
    Near(u32),
    Field(Field),
    /// A bare word, possibly with `-` or a trailing `*` inside.
    Word(String),
    /// The text between double quotes.
    Phrase(String),
    End,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kind::LParen => f.write_str("'('"),
            Kind::RParen => f.write_str("')'"),
            Kind::And => f.write_str("AND"),
            Kind::Or => f.write_str("OR"),
            Kind::Not => f.write_str("NOT"),
            Kind::Minus => f.write_str("'-'"),
            Kind::Near(n) => write!(f, "NEAR/{n}"),
            Kind::Field(Field::Title) => f.write_str("'title:'"),
            Kind::Field(Field::Body) => f.write_str("'body:'"),
            Kind::Word(w) => write!(f, "'{w}'"),
            Kind::Phrase(p) => write!(f, "\"{p}\""),
            Kind::End => f.write_str("end of query"),
        }
    }
}

#[derive(Debug, Clone)]
struct Token {
    kind: Kind,
    column: usize,
}

type LexResult<T> = Result<T, (usize, String)>;

fn is_open_quote(c: char) -> bool {
    matches!(c, '"' | '“' | '„')
}

fn is_close_quote(c: char) -> bool {
    matches!(c, '"' | '”' | '“')
}

fn ends_word(c: char) -> bool {
    c.is_whitespace() || matches!(c, '(' | ')' | ':') || is_open_quote(c) || is_close_quote(c)
}

fn lex(query: &str) -> LexResult<Vec<Token>> {
    let chars: Vec<char> = query.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let column = i + 1;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let kind = match c {
            '(' => {
                i += 1;
                Kind::LParen
            }
            ')' => {
                i += 1;
                Kind::RParen
            }
            ':' => return Err((column, "unexpected ':'".to_owned())),
            c if is_close_quote(c) && !is_open_quote(c) => {
                return Err((column, format!("unexpected '{c}' (no phrase is open)")));
            }
            '-' => {
                if chars
                    .get(i + 1)
                    .is_none_or(|&n| n.is_whitespace() || n == ')')
                {
                    return Err((
                        column,
                        "'-' must be followed directly by the operand it negates".to_owned(),
                    ));
                }
                i += 1;
                Kind::Minus
            }
            c if is_open_quote(c) => {
                let start = i + 1;
                let mut end = start;
                while end < chars.len() && !is_close_quote(chars[end]) {
                    end += 1;
                }
                if end == chars.len() {
                    return Err((column, "unterminated phrase".to_owned()));
                }
                i = end + 1;
                Kind::Phrase(chars[start..end].iter().collect())
            }
            _ => {
                let start = i;
                while i < chars.len() && !ends_word(chars[i]) {
                    i += 1;
                }
                if i == start {
                    // Unreachable with the arms above, but never loop without consuming.
                    return Err((column, format!("unexpected '{c}'")));
                }
                let word: String = chars[start..i].iter().collect();
                if chars.get(i) == Some(&':') {
                    i += 1;
                    if word.eq_ignore_ascii_case("title") {
                        Kind::Field(Field::Title)
                    } else if word.eq_ignore_ascii_case("body") {
                        Kind::Field(Field::Body)
                    } else {
                        return Err((
                            column,
                            format!("unknown field '{word}' (fields are title: and body:)"),
                        ));
                    }
                } else {
                    keyword(&word, column)?.unwrap_or(Kind::Word(word))
                }
            }
        };
        tokens.push(Token { kind, column });
    }
    tokens.push(Token {
        kind: Kind::End,
        column: chars.len() + 1,
    });
    Ok(tokens)
}

fn keyword(word: &str, column: usize) -> LexResult<Option<Kind>> {
    if word.eq_ignore_ascii_case("and") {
        return Ok(Some(Kind::And));
    }
    if word.eq_ignore_ascii_case("or") {
        return Ok(Some(Kind::Or));
    }
    if word.eq_ignore_ascii_case("not") {
        return Ok(Some(Kind::Not));
    }
    let Some(head) = word.get(..5) else {
        return Ok(None);
    };
    if !head.eq_ignore_ascii_case("near/") {
        return Ok(None);
    }
    let digits = &word[5..];
    let bad = || {
        (
            column + 5,
            format!("NEAR/ needs a distance from 1 to {MAX_NEAR}, as in NEAR/5"),
        )
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    match digits.parse::<u32>() {
        Ok(n) if (1..=MAX_NEAR).contains(&n) => Ok(Some(Kind::Near(n))),
        _ => Err(bad()),
    }
}

// ---------------------------------------------------------------- parser

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    depth: usize,
    field: Option<Field>,
}

impl Parser {
    fn peek(&self) -> &Token {
        // The lexer always ends the list with `End`, and `bump` never moves past it.
        &self.tokens[self.pos.min(self.tokens.len() - 1)]
    }

    fn bump(&mut self) -> Token {
        let token = self.peek().clone();
        if token.kind != Kind::End {
            self.pos += 1;
        }
        token
    }

    fn descend(&mut self, column: usize) -> LexResult<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err((
                column,
                format!("query is nested more than {MAX_DEPTH} levels deep"),
            ));
        }
        Ok(())
    }

    fn parse_or(&mut self) -> LexResult<Query> {
        let mut children = vec![self.parse_and()?];
        while self.peek().kind == Kind::Or {
            self.bump();
            children.push(self.parse_and()?);
        }
        Ok(if children.len() == 1 {
            children.swap_remove(0)
        } else {
            Query::Or(children)
        })
    }

    fn parse_and(&mut self) -> LexResult<Query> {
        let mut children = vec![self.parse_unary()?];
        loop {
            match self.peek().kind {
                Kind::And => {
                    self.bump();
                    children.push(self.parse_unary()?);
                }
                Kind::LParen
                | Kind::Not
                | Kind::Minus
                | Kind::Field(_)
                | Kind::Word(_)
                | Kind::Phrase(_) => {
                    children.push(self.parse_unary()?);
                }
                _ => break,
            }
        }
        Ok(if children.len() == 1 {
            children.swap_remove(0)
        } else {
            Query::And(children)
        })
    }

    fn parse_unary(&mut self) -> LexResult<Query> {
        let token = self.peek().clone();
        if matches!(token.kind, Kind::Not | Kind::Minus) {
            self.bump();
            self.descend(token.column)?;
            let inner = self.parse_unary()?;
            self.depth -= 1;
            return Ok(Query::Not {
                inner: Box::new(inner),
                column: token.column,
            });
        }
        let mut left = self.parse_primary()?;
        while let Kind::Near(distance) = self.peek().kind {
            self.bump();
            let right = self.parse_primary()?;
            left = Query::Near {
                left: Box::new(left),
                right: Box::new(right),
                distance,
            };
        }
        Ok(left)
    }

    fn parse_primary(&mut self) -> LexResult<Query> {
        let token = self.bump();
        match token.kind {
            Kind::LParen => {
                self.descend(token.column)?;
                let inner = self.parse_or()?;
                self.depth -= 1;
                let close = self.bump();
                if close.kind != Kind::RParen {
                    return Err((
                        close.column,
                        format!(
                            "expected ')' to close the '(' at column {}, found {}",
                            token.column, close.kind
                        ),
                    ));
                }
                Ok(inner)
            }
            Kind::Field(field) => {
                if self.field.is_some() {
                    return Err((
                        token.column,
                        "a field scope cannot contain another field scope".to_owned(),
                    ));
                }
                self.descend(token.column)?;
                self.field = Some(field);
                let inner = self.parse_primary();
                self.field = None;
                self.depth -= 1;
                inner
            }
            Kind::Word(word) => self.term(&word, token.column, false),
            Kind::Phrase(text) => self.term(&text, token.column, true),
            Kind::Not | Kind::Minus => Err((
                token.column,
                format!(
                    "{} is not allowed here; put the negation in front of the whole operand",
                    token.kind
                ),
            )),
            other => Err((token.column, format!("unexpected {other}"))),
        }
    }

    /// A bare word or the inside of a phrase, folded into words; a trailing `*` makes the
    /// last word a prefix.
    fn term(&self, raw: &str, column: usize, phrase: bool) -> LexResult<Query> {
        let body_column = if phrase { column + 1 } else { column };
        let trimmed = raw.trim_end();
        let (text, prefix) = match trimmed.strip_suffix('*') {
            Some(rest) => (rest, true),
            None => (trimmed, false),
        };
        if let Some(at) = text.chars().position(|c| c == '*') {
            return Err((
                body_column + at,
                "'*' is only allowed at the end of a word".to_owned(),
            ));
        }
        if prefix
            && text
                .chars()
                .last()
                .is_none_or(|c| c.is_whitespace() || !c.is_alphanumeric())
        {
            let at = body_column + text.chars().count();
            return Err((at, "'*' must follow a letter or digit".to_owned()));
        }
        let words = fold_words(text);
        if words.is_empty() {
            let what = if phrase { "phrase" } else { "word" };
            return Err((
                column,
                format!("{what} {} contains nothing searchable", quoted(raw, phrase)),
            ));
        }
        Ok(Query::Term(Term {
            words,
            prefix,
            field: self.field,
        }))
    }
}

fn quoted(raw: &str, phrase: bool) -> String {
    if phrase {
        format!("\"{raw}\"")
    } else {
        format!("'{raw}'")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(q: &str) -> String {
        match parse("t", q) {
            Ok(tree) => tree.to_string(),
            Err(e) => panic!("{q:?} failed: {e}"),
        }
    }

    fn error(q: &str) -> QueryError {
        match parse("tariffs", q) {
            Ok(tree) => panic!("{q:?} parsed as {tree}"),
            Err(e) => e,
        }
    }

    #[test]
    fn a_single_word_is_a_term() {
        assert_eq!(tree("Tariff"), "tariff");
    }

    #[test]
    fn and_or_not_and_minus_are_operators() {
        assert_eq!(tree("a AND b"), "(AND a b)");
        assert_eq!(tree("a OR b"), "(OR a b)");
        assert_eq!(tree("a AND NOT b"), "(AND a (NOT b))");
        assert_eq!(tree("a -b"), "(AND a (NOT b))");
        assert_eq!(tree("a (-b)"), "(AND a (NOT b))");
    }

    #[test]
    fn keywords_are_case_insensitive() {
        assert_eq!(tree("a and b or c Not d"), "(OR (AND a b) (AND c (NOT d)))");
        assert_eq!(tree("a near/3 b"), "(NEAR/3 a b)");
    }

    #[test]
    fn adjacent_operands_are_joined_by_an_implicit_and() {
        assert_eq!(tree("a b \"c d\" (e OR f)"), "(AND a b \"c d\" (OR e f))");
    }

    #[test]
    fn and_binds_tighter_than_or() {
        assert_eq!(tree("a b OR c AND d"), "(OR (AND a b) (AND c d))");
        assert_eq!(tree("a OR b c"), "(OR a (AND b c))");
    }

    #[test]
    fn parentheses_override_precedence() {
        assert_eq!(tree("(a OR b) c"), "(AND (OR a b) c)");
        assert_eq!(tree("((a))"), "a");
    }

    #[test]
    fn not_applies_to_the_next_operand_only() {
        assert_eq!(tree("NOT a b OR c"), "(OR (AND (NOT a) b) c)");
        assert_eq!(tree("-(a OR b) c"), "(AND (NOT (OR a b)) c)");
        assert_eq!(tree("NOT NOT a"), "(NOT (NOT a))");
    }

    #[test]
    fn near_binds_tighter_than_and_and_takes_primaries() {
        assert_eq!(tree("a b NEAR/5 c"), "(AND a (NEAR/5 b c))");
        assert_eq!(
            tree("(a OR b) NEAR/2 \"c d\" e"),
            "(AND (NEAR/2 (OR a b) \"c d\") e)"
        );
        assert_eq!(tree("a NEAR/1 b NEAR/2 c"), "(NEAR/2 (NEAR/1 a b) c)");
        assert_eq!(tree("x NOT a NEAR/3 b"), "(AND x (NOT (NEAR/3 a b)))");
    }

    #[test]
    fn phrases_fold_their_words_and_may_end_in_a_prefix() {
        assert_eq!(tree("\"Feed-in Tariff*\""), "\"feed in tariff*\"");
        assert_eq!(tree("“import duties”"), "\"import duties\"");
    }

    #[test]
    fn a_trailing_star_makes_a_prefix() {
        assert_eq!(tree("tariff*"), "tariff*");
    }

    #[test]
    fn a_hyphen_inside_a_word_makes_a_phrase_not_a_negation() {
        assert_eq!(tree("counter-drone"), "\"counter drone\"");
        assert_eq!(tree("anti-drone*"), "\"anti drone*\"");
        assert_eq!(tree("laser -pointer"), "(AND laser (NOT pointer))");
        assert_eq!(tree("U.S. tariffs"), "(AND \"u s\" tariffs)");
    }

    #[test]
    fn field_scopes_apply_to_the_next_primary() {
        assert_eq!(
            tree("title:tariff body:levy*"),
            "(AND title:tariff body:levy*)"
        );
        assert_eq!(tree("TITLE:(a OR \"b c\")"), "(OR title:a title:\"b c\")");
        assert_eq!(tree("title: a b"), "(AND title:a b)");
        assert_eq!(tree("title:a NEAR/3 b"), "(NEAR/3 title:a b)");
    }

    #[test]
    fn words_with_diacritics_are_folded_like_text() {
        assert_eq!(tree("Gökberk"), "gokberk");
    }

    #[test]
    fn unbalanced_closing_paren_reports_its_column() {
        let e = error("tariff OR levy) x");
        assert_eq!((e.column, e.message.as_str()), (15, "unexpected ')'"));
        assert_eq!(
            e.to_string(),
            "topic \"tariffs\": unexpected ')' at column 15"
        );
    }

    #[test]
    fn unclosed_paren_reports_the_end_of_the_query() {
        let e = error("(a OR b");
        assert_eq!(e.column, 8);
        assert!(e.message.contains("column 1"), "{}", e.message);
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        let e = error("ü ö )");
        assert_eq!(e.column, 5);
    }

    #[test]
    fn dangling_operators_are_errors() {
        assert_eq!(error("a AND").message, "unexpected end of query");
        assert_eq!(error("OR a").column, 1);
        assert_eq!(error("a OR OR b").column, 6);
        assert_eq!(error("a NEAR/3").column, 9);
        assert_eq!(error("").message, "empty query");
        assert_eq!(error("   ").message, "empty query");
    }

    #[test]
    fn unterminated_phrases_point_at_the_opening_quote() {
        let e = error("a \"feed in");
        assert_eq!((e.column, e.message.as_str()), (3, "unterminated phrase"));
    }

    #[test]
    fn misplaced_stars_are_errors() {
        assert_eq!(error("ta*riff").column, 3);
        assert_eq!(error("\"a* b\"").column, 3);
        assert_eq!(error("*").column, 1);
        assert_eq!(error("\"tariff *\"").column, 9);
    }

    #[test]
    fn bad_near_distances_are_errors() {
        assert_eq!(error("a NEAR/x b").column, 8);
        assert_eq!(error("a NEAR/0 b").column, 8);
        assert!(error("a NEAR/ b").message.contains("NEAR/5"));
        assert!(error("a NEAR/99999999999 b").message.contains("1000"));
    }

    #[test]
    fn unknown_and_nested_fields_are_errors() {
        let e = error("a headline:b");
        assert_eq!(e.column, 3);
        assert!(e.message.contains("unknown field 'headline'"));
        assert_eq!(error("title:body:a").column, 7);
    }

    #[test]
    fn words_with_nothing_searchable_are_errors() {
        assert_eq!(error("a &&").column, 3);
        assert_eq!(error("a \"--\"").column, 3);
    }

    #[test]
    fn a_lone_minus_is_an_error() {
        assert_eq!(error("a - b").column, 3);
        assert_eq!(error("a -").column, 3);
    }

    #[test]
    fn negation_inside_a_near_operand_position_is_an_error() {
        assert_eq!(error("a NEAR/3 -b").column, 10);
    }

    #[test]
    fn pure_not_queries_are_rejected() {
        let e = error("NOT tariff");
        assert_eq!(e.column, 1);
        assert!(e.message.contains("none of its terms"));
        assert_eq!(error("-a -b").column, 1);
        assert_eq!(error("a OR -b").column, 6);
        assert_eq!(error("title:x OR NOT (a b)").column, 12);
    }

    #[test]
    fn a_not_beside_a_positive_term_is_accepted() {
        assert_eq!(tree("-a b"), "(AND (NOT a) b)");
        assert_eq!(tree("NOT (NOT a)"), "(NOT (NOT a))");
    }

    #[test]
    fn near_operands_must_need_a_term() {
        assert_eq!(error("(NOT a) NEAR/3 b").column, 2);
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let q = format!("{}a{}", "(".repeat(10_000), ")".repeat(10_000));
        assert!(error(&q).message.contains("nested"));
        let q = format!("{}a", "NOT ".repeat(10_000));
        assert!(error(&q).message.contains("nested"));
    }
}

#[cfg(test)]
mod proptests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn the_parser_never_panics_on_arbitrary_input(q in "\\PC{0,60}") {
            let _ = parse("t", &q);
        }

        #[test]
        fn the_parser_never_panics_on_query_like_input(
            parts in proptest::collection::vec(
                prop_oneof![
                    Just("("), Just(")"), Just("\""), Just("-"), Just("*"), Just(":"),
                    Just("AND"), Just("or"), Just("NOT"), Just("NEAR/2"), Just("near/"),
                    Just("title:"), Just("body:"), Just("tariff"), Just("feed-in"), Just("é"), Just("中"),
                    Just(" "), Just("  "),
                ],
                0..24,
            )
        ) {
            let q = parts.concat();
            if let Err(e) = parse("t", &q) {
                prop_assert!(e.column >= 1 && e.column <= q.chars().count() + 1, "{e} for {q:?}");
            }
        }
    }
}
