//! Our own POP3 client (RFC 1939, RFC 2449 CAPA/RESP-CODES, RFC 2595 STLS,
//! RFC 5034 SASL PLAIN, XOAUTH2 and OAUTHBEARER, APOP).
//!
//! Why our own: the available crate was tried and rejected (see DESIGN.md:
//! it altered message bytes, hung on empty messages, buffered whole messages
//! and had no timeouts nor STLS). This one is layered so that each concern
//! can be proved on its own:
//! - [`proto`]: the wire format with no I/O (commands, status lines,
//!   RESP-CODES, listings, CAPA, a streaming dot-unstuffing decoder);
//! - `connection`: a stream with a bounded read buffer and a deadline on
//!   every read and write ([`crate::deadline`]), and a throughput floor per
//!   reply: a reply of `n` bytes may wait on the server for the timeout plus
//!   `n /` [`MIN_RATE`] seconds in all, so that a server trickling a byte
//!   just before each deadline cannot hold a pass;
//! - `client`: the conversation, with a typestate [`Session`] that exists only
//!   once logged in, and a streaming [`Body`] per message;
//! - `login`: the mechanisms (SASL from [`crate::sasl`]: PLAIN, and the
//!   two-step XOAUTH2 / OAUTHBEARER with their error challenge);
//! - `pipeline`: RFC 2449 PIPELINING (LIST+UIDL in one flight, a bounded
//!   window of RETRs as a [`RetrStream`], DELEs in a sliding window, both
//!   kept by [`crate::window::Window`]), which falls back to one command at
//!   a time on servers that do not announce it.
//!
//! This module is the facade: the sync engine uses [`connect`], [`Session`],
//! [`Body`], [`Capa`] and [`Pop3Error`].

mod body;
mod client;
mod connection;
mod error;
mod login;
mod pipeline;
pub mod proto;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests;

pub use body::Body;
pub use client::{Session, UidlReply, connect, connect_with};
pub use connection::MIN_RATE;
pub use error::{Pop3Error, Pop3ErrorKind};
pub use pipeline::{Each, RetrStream};
pub use proto::{BadUidl, Capa, RespCode};
