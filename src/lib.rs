//! popferry: a POP3 → IMAP sync bridge.
//!
//! Layout (see ARCHITECTURE.md for the full map and its invariants):
//! - [`config`]: TOML in, validated settings out.
//! - [`net`]: TCP and verified TLS connections with timeouts.
//! - [`pop3`]: our own POP3 client (sans-IO codec + typestate session).
//! - [`imap`]: the IMAP target (sans-IO `proto` on imap-codec, connection, APPEND pipeline).
//! - [`spool`]: a message's bytes on their way, memory-bounded.
//! - [`window`], [`deadline`], [`sasl`]: pipelining bookkeeping, deadlines
//!   and SASL encodings, shared by [`pop3`] and [`imap`].
//! - [`oauth`]: OAuth2 access tokens (refresh, cache, rotation) and the sign-in flows.
//! - [`ledger`]: the SQLite record of what was copied; the only SQL.
//! - [`sync`]: one pass over one account, the guarantees live here.
//! - [`scheduler`]: per-account schedules, backoff, concurrency, shutdown.
//! - [`daemon`]: `popferry run`'s runner, metrics, health endpoint and status page.
//! - [`status`]: the words `popferry status` and the status page share.

// Everything here reads what servers send: no indexing or slicing that can
// panic on a short or hostile input (tests may, for brevity).
#![cfg_attr(not(test), deny(clippy::indexing_slicing, clippy::string_slice))]

pub mod config;
pub mod daemon;
pub mod deadline;
pub mod imap;
pub mod ledger;
pub mod net;
pub mod oauth;
pub mod pop3;
pub mod sasl;
pub mod scheduler;
pub mod spool;
pub mod status;
pub mod sync;
pub mod window;
