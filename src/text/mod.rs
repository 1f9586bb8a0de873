//! Text helpers shared by the stages that read markup and dates without a full parser:
//! the feed parser ([`crate::source::feed`]), article extraction ([`crate::extract`]), the
//! normaliser ([`crate::normalize`]) and dedup ([`crate::dedup`]). Each helper exists once
//! here so that a feed and a page, or a stored story and a fresh one, are read alike.

pub(crate) mod boilerplate;
pub(crate) mod charset;
pub(crate) mod dates;
pub(crate) mod entities;
pub(crate) mod markup;
