//! Finding a message in the target without its Message-ID: by exact size,
//! then by the SHA-256 of its header section.
//!
//! Why: an APPEND whose outcome is unknown (a crash, a dropped connection)
//! and a ledger that was lost must both be settled by looking in the target
//! before appending again (guarantee 2). Message-ID + size covers most mail
//! ([`super::Session::find_message`]); a message without a Message-ID is
//! recognised by its whole header section, which holds its Received lines
//! and Date and so is, in practice, unique.

use async_imap::imap_proto::{AttributeValue, MailboxDatum, MessageSection, Response, SectionPath};
use sha2::{Digest, Sha256};

use super::conn::{Conn, ImapIo, MAX_CANDIDATES, Piece, SEARCH_BUDGET};
use super::encode;
use super::error::ImapError;

impl<S: ImapIo> Conn<S> {
    /// EXAMINEs `mailbox`. `Ok(false)` when it certainly does not exist.
    pub(crate) async fn examine(&mut self, mailbox: &str) -> Result<bool, ImapError> {
        let arg = encode::mailbox_arg(mailbox).map_err(|w| self.invalid(w))?;
        let done = self
            .exec(
                "opening the mailbox",
                vec![Piece::text("EXAMINE "), Piece::arg(arg)],
                SEARCH_BUDGET,
                &mut |_: &Response<'_>| {},
            )
            .await?;
        if done.is_ok() {
            return Ok(true);
        }
        if done.code_is("NONEXISTENT") || !self.mailbox_listed(mailbox).await? {
            return Ok(false);
        }
        Err(done.into_error(&self.server))
    }

    /// Runs a UID SEARCH made of `pieces`: the UIDs found, highest first,
    /// at most [`MAX_CANDIDATES`].
    pub(crate) async fn uid_search(
        &mut self,
        what: &'static str,
        pieces: Vec<Piece<'_>>,
    ) -> Result<Vec<u32>, ImapError> {
        let mut uids: Vec<u32> = Vec::new();
        let done = self
            .exec(what, pieces, SEARCH_BUDGET, &mut |r: &Response<'_>| {
                if let Response::MailboxData(MailboxDatum::Search(found)) = r {
                    uids.extend_from_slice(found);
                }
            })
            .await?;
        done.ok_or_error(&self.server)?;
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
            .uid_search("searching by size", vec![Piece::text(search)])
            .await?;
        if uids.is_empty() {
            return Ok(Vec::new());
        }
        self.uid_fetch_matching(
            "fetching candidate headers",
            &uids,
            "BODY.PEEK[HEADER]",
            &|a: &AttributeValue<'_>| match a {
                AttributeValue::BodySection {
                    section: Some(SectionPath::Full(MessageSection::Header)),
                    data: Some(data),
                    ..
                } => <[u8; 32]>::from(Sha256::digest(data.as_ref())) == header_sha256,
                _ => false,
            },
        )
        .await
    }

    /// UID FETCHes `item` for `uids` and returns those (highest first) for
    /// which some attribute satisfies `wanted`; UIDs the server adds on its
    /// own are ignored.
    pub(crate) async fn uid_fetch_matching(
        &mut self,
        what: &'static str,
        uids: &[u32],
        item: &str,
        wanted: &(dyn Fn(&AttributeValue<'_>) -> bool + Sync),
    ) -> Result<Vec<u32>, ImapError> {
        let mut matching: Vec<u32> = Vec::new();
        let command = format!("UID FETCH {} (UID {item})", encode::uid_set(uids));
        let done = self
            .exec(
                what,
                vec![Piece::text(command)],
                SEARCH_BUDGET,
                &mut |r: &Response<'_>| {
                    if let Response::Fetch(_, attrs) = r {
                        let uid = attrs.iter().find_map(|a| match a {
                            AttributeValue::Uid(u) => Some(*u),
                            _ => None,
                        });
                        if let Some(u) = uid
                            && attrs.iter().any(wanted)
                        {
                            matching.push(u);
                        }
                    }
                },
            )
            .await?;
        done.ok_or_error(&self.server)?;
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
            let len = SLICE.min(size - offset);
            let mut got: Option<Vec<u8>> = None;
            let done = self
                .exec(
                    "fetching a candidate message",
                    vec![Piece::text(format!(
                        "UID FETCH {uid} (UID BODY.PEEK[]<{offset}.{len}>)"
                    ))],
                    SEARCH_BUDGET,
                    &mut |r: &Response<'_>| {
                        if let Response::Fetch(_, attrs) = r {
                            for a in attrs {
                                if let AttributeValue::BodySection {
                                    section: None,
                                    data: Some(data),
                                    ..
                                } = a
                                {
                                    got = Some(data.to_vec());
                                }
                            }
                        }
                    },
                )
                .await?;
            done.ok_or_error(&self.server)?;
            let Some(chunk) = got.filter(|c| !c.is_empty() && c.len() as u64 <= len) else {
                return Ok(None);
            };
            exact.update(&chunk);
            offset += chunk.len() as u64;
        }
        Ok(Some(exact.finalize().into()))
    }
}
