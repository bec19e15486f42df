//! Finding a message again in the target: by Message-ID and size, or,
//! without a Message-ID, by exact size and the SHA-256 of its header
//! section; and reading a candidate back to compare its SHA-256.
//!
//! Why: an APPEND whose outcome is unknown (a crash, a dropped connection)
//! and a ledger that was lost must both be settled by looking in the target
//! before appending again (guarantee 2). Message-ID + size covers most mail
//! ([`super::Session::find_message`]); a message without a Message-ID is
//! recognised by its whole header section, which holds its Received lines
//! and Date and so is, in practice, unique.

use sha2::{Digest, Sha256};

use super::conn::{Conn, ImapIo, SEARCH_BUDGET};
use super::error::{self, ImapError};
use super::proto::command::Part;
use super::proto::encode;
use super::proto::reply::{Fetch, Untagged};

/// At most this many candidate UIDs are fetched by a search.
pub(crate) const MAX_CANDIDATES: usize = 1000;

/// Messages asked for by one FETCH of [`Conn::list_messages`]: its answer
/// (about 50 bytes a message) stays well within [`SEARCH_BUDGET`].
const LIST_CHUNK: u32 = 20_000;

/// What a mailbox holds, read without changing it (`popferry verify`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxListing {
    pub uidvalidity: Option<u32>,
    /// (UID, RFC822.SIZE) of every message, by UID.
    pub messages: Vec<(u32, u64)>,
}

impl<S: ImapIo> Conn<S> {
    /// The UIDs (highest first, at most [`MAX_CANDIDATES`]) of the messages
    /// in `mailbox` whose Message-ID header contains `message_id` and whose
    /// RFC822.SIZE is `size`; none when the mailbox certainly does not exist.
    pub(crate) async fn find_message(
        &mut self,
        mailbox: &str,
        message_id: &str,
        size: u64,
    ) -> Result<Vec<u32>, ImapError> {
        if message_id.trim().is_empty() {
            return Err(self.invalid("cannot search for an empty Message-ID"));
        }
        if !self.examine(mailbox).await? {
            return Ok(Vec::new());
        }
        let mut parts = vec![Part::text("UID SEARCH ")];
        if !message_id.is_ascii() {
            parts.push(Part::text("CHARSET UTF-8 "));
        }
        parts.push(Part::text("HEADER Message-ID "));
        parts.push(Part::arg(encode::string_arg(message_id.as_bytes())));
        let uids = self.uid_search("searching by Message-ID", parts).await?;
        if uids.is_empty() {
            return Ok(Vec::new());
        }
        self.uid_fetch_matching(
            "fetching candidate sizes",
            &uids,
            "RFC822.SIZE",
            &|f: &Fetch| f.size.is_some_and(|s| u64::from(s) == size),
        )
        .await
    }

    /// Runs a UID SEARCH made of `parts`: the UIDs found, highest first,
    /// at most [`MAX_CANDIDATES`].
    pub(crate) async fn uid_search(
        &mut self,
        what: &'static str,
        parts: Vec<Part<'_>>,
    ) -> Result<Vec<u32>, ImapError> {
        let mut uids: Vec<u32> = Vec::new();
        let done = self
            .exec(what, parts, SEARCH_BUDGET, &mut |u| {
                if let Untagged::Search(found) = u {
                    uids.extend_from_slice(&found);
                }
            })
            .await?;
        error::check(&self.server, done)?;
        uids.sort_unstable_by(|a, b| b.cmp(a));
        uids.dedup();
        uids.truncate(MAX_CANDIDATES);
        Ok(uids)
    }

    /// The UIDs (highest first) of the messages in `mailbox` of exactly
    /// `size` bytes whose header section (`BODY[HEADER]`) has the SHA-256
    /// `header_sha256`.
    pub(crate) async fn find_by_header(
        &mut self,
        mailbox: &str,
        header_sha256: [u8; 32],
        size: u64,
    ) -> Result<Vec<u32>, ImapError> {
        if !self.examine(mailbox).await? {
            return Ok(Vec::new());
        }
        // LARGER and SMALLER are strict: this pair selects exactly `size`.
        let search = match size.checked_sub(1) {
            Some(below) => format!(
                "UID SEARCH LARGER {below} SMALLER {}",
                size.saturating_add(1)
            ),
            None => "UID SEARCH SMALLER 1".to_owned(),
        };
        let uids = self
            .uid_search("searching by size", vec![Part::text(search)])
            .await?;
        if uids.is_empty() {
            return Ok(Vec::new());
        }
        self.uid_fetch_matching(
            "fetching candidate headers",
            &uids,
            "BODY.PEEK[HEADER]",
            &|f: &Fetch| {
                f.header
                    .as_ref()
                    .is_some_and(|h| <[u8; 32]>::from(Sha256::digest(h)) == header_sha256)
            },
        )
        .await
    }

    /// Every message of `mailbox` as (UID, RFC822.SIZE), by UID, with the
    /// mailbox's UIDVALIDITY: STATUS, then EXAMINE (read-only: no flag
    /// changes, not even `\Recent`) and FETCHes of at most [`LIST_CHUNK`]
    /// messages each. `None` when LIST does not show the mailbox.
    pub(crate) async fn list_messages(
        &mut self,
        mailbox: &str,
    ) -> Result<Option<MailboxListing>, ImapError> {
        if !self.mailbox_listed(mailbox).await? {
            return Ok(None);
        }
        let status = self.status(mailbox).await?;
        if !self.examine(mailbox).await? {
            return Ok(None);
        }
        let mut messages: Vec<(u32, u64)> = Vec::new();
        let mut first: u32 = 1;
        while first <= status.exists {
            let last = first.saturating_add(LIST_CHUNK - 1);
            // The last chunk ends at `*`: a mailbox that shrank since STATUS
            // answers with what is left instead of refusing the range.
            let range = if last >= status.exists {
                format!("{first}:*")
            } else {
                format!("{first}:{last}")
            };
            let done = self
                .exec(
                    "listing the mailbox's messages",
                    vec![Part::text(format!("FETCH {range} (UID RFC822.SIZE)"))],
                    SEARCH_BUDGET,
                    &mut |u| {
                        if let Untagged::Fetch(Fetch {
                            uid: Some(uid),
                            size: Some(size),
                            ..
                        }) = u
                        {
                            messages.push((uid, u64::from(size)));
                        }
                    },
                )
                .await?;
            error::check(&self.server, done)?;
            first = last.saturating_add(1);
            if last == u32::MAX {
                break;
            }
        }
        messages.sort_unstable();
        messages.dedup_by_key(|m| m.0);
        Ok(Some(MailboxListing {
            uidvalidity: status.uidvalidity,
            messages,
        }))
    }

    /// UID FETCHes `item` for `uids` and returns those (highest first) whose
    /// FETCH response satisfies `wanted`; UIDs the server adds on its own are
    /// ignored.
    pub(crate) async fn uid_fetch_matching(
        &mut self,
        what: &'static str,
        uids: &[u32],
        item: &str,
        wanted: &(dyn Fn(&Fetch) -> bool + Sync),
    ) -> Result<Vec<u32>, ImapError> {
        let mut matching: Vec<u32> = Vec::new();
        let command = format!("UID FETCH {} (UID {item})", encode::uid_set(uids));
        let done = self
            .exec(what, vec![Part::text(command)], SEARCH_BUDGET, &mut |u| {
                if let Untagged::Fetch(f) = u
                    && let Some(uid) = f.uid
                    && wanted(&f)
                {
                    matching.push(uid);
                }
            })
            .await?;
        error::check(&self.server, done)?;
        matching.retain(|u| uids.contains(u));
        matching.sort_unstable_by(|a, b| b.cmp(a));
        matching.dedup();
        Ok(matching)
    }

    /// SHA-256 of the message `uid` of the selected mailbox as `BODY[]`,
    /// read in bounded slices (`BODY.PEEK[]<offset.length>`) so that memory
    /// stays flat whatever its size. `None` when the server does not return
    /// the message or it is not `size` bytes.
    pub(crate) async fn content_sha256(
        &mut self,
        uid: u32,
        size: u64,
    ) -> Result<Option<[u8; 32]>, ImapError> {
        const SLICE: u64 = 1 << 20;
        let mut exact = Sha256::new();
        let mut offset: u64 = 0;
        while offset < size {
            let len = SLICE.min(size.saturating_sub(offset));
            let mut got: Option<Vec<u8>> = None;
            let done = self
                .exec(
                    "fetching a candidate message",
                    vec![Part::text(format!(
                        "UID FETCH {uid} (UID BODY.PEEK[]<{offset}.{len}>)"
                    ))],
                    SEARCH_BUDGET,
                    &mut |u| {
                        if let Untagged::Fetch(Fetch { body: Some(b), .. }) = u {
                            got = Some(b);
                        }
                    },
                )
                .await?;
            error::check(&self.server, done)?;
            let Some(chunk) = got.filter(|c| !c.is_empty() && c.len() as u64 <= len) else {
                return Ok(None);
            };
            exact.update(&chunk);
            offset = offset.saturating_add(chunk.len() as u64);
        }
        Ok(Some(exact.finalize().into()))
    }
}
