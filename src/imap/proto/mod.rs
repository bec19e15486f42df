//! The IMAP protocol without I/O, in the spirit of [`crate::pop3::proto`]:
//! commands are encoded into segments to write ([`command`]), server bytes
//! are decoded into replies ([`decode`], parsed by imap-codec and reduced in
//! [`reply`]), and one command's tag/continuation conversation is a small
//! state machine ([`flow`]). Argument encoding and server-text bounding are
//! in [`encode`]. Everything here is tested on scripted bytes and fuzzed
//! (`fuzz/`); the connection (`super::conn`) only moves bytes.

pub mod command;
pub mod decode;
pub mod encode;
pub mod flow;
pub mod reply;
