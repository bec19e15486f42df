//! The target mailbox: STATUS, CREATE, LIST and EXAMINE.
//!
//! Why together: "does the mailbox exist, and what is its UIDVALIDITY" is
//! asked in three ways (ensure it for a sync, look without creating for
//! `popferry check`, open it read-only to settle an APPEND) and each answer
//! must tell "certainly absent" from "refused" the same way.

use super::MailboxStatus;
use super::conn::{COMMAND_BUDGET, Conn, ImapIo, SEARCH_BUDGET, ignore};
use super::error::{self, ImapError, ImapErrorKind};
use super::proto::command::Part;
use super::proto::encode;
use super::proto::reply::Untagged;

impl<S: ImapIo> Conn<S> {
    /// STATUS (MESSAGES UIDVALIDITY).
    pub(crate) async fn status(&mut self, mailbox: &str) -> Result<MailboxStatus, ImapError> {
        let arg = encode::mailbox_arg(mailbox).map_err(|w| self.invalid(w))?;
        let mut exists: Option<u32> = None;
        let mut uidvalidity: Option<u32> = None;
        let done = self
            .exec(
                "asking for the mailbox status",
                vec![
                    Part::text("STATUS "),
                    Part::arg(arg),
                    Part::text(" (MESSAGES UIDVALIDITY)"),
                ],
                COMMAND_BUDGET,
                &mut |u| {
                    if let Untagged::Status {
                        messages,
                        uidvalidity: v,
                    } = u
                    {
                        exists = messages.or(exists);
                        uidvalidity = v.or(uidvalidity);
                    }
                },
            )
            .await?;
        error::check(&self.server, done)?;
        match exists {
            Some(exists) => Ok(MailboxStatus {
                uidvalidity,
                exists,
            }),
            None => Err(self.protocol("STATUS answered without the number of messages")),
        }
    }

    /// CREATE; an existing mailbox (`[ALREADYEXISTS]`) counts as success.
    pub(crate) async fn create(&mut self, mailbox: &str) -> Result<(), ImapError> {
        let arg = encode::mailbox_arg(mailbox).map_err(|w| self.invalid(w))?;
        let done = self
            .simple(
                "creating the mailbox",
                vec![Part::text("CREATE "), Part::arg(arg)],
            )
            .await?;
        if done.is_ok() || done.code_is("ALREADYEXISTS") {
            tracing::info!(server = %self.server, mailbox, "created IMAP mailbox");
            Ok(())
        } else {
            Err(error::refusal(&self.server, done))
        }
    }

    /// STATUS, creating the mailbox when STATUS says NO.
    pub(crate) async fn ensure_mailbox(
        &mut self,
        mailbox: &str,
    ) -> Result<MailboxStatus, ImapError> {
        match self.status(mailbox).await {
            Err(e) if matches!(e.kind(), ImapErrorKind::No { .. }) => {
                self.create(mailbox).await?;
                self.status(mailbox).await
            }
            other => other,
        }
    }

    /// Whether LIST shows `mailbox` (exactly; INBOX in any case) as existing.
    pub(crate) async fn mailbox_listed(&mut self, mailbox: &str) -> Result<bool, ImapError> {
        let encoded = encode::mailbox_utf7(mailbox).map_err(|w| self.invalid(w))?;
        let mut found = false;
        let done = self
            .exec(
                "listing the mailbox",
                vec![
                    Part::text("LIST \"\" "),
                    Part::arg(encode::string_arg(encoded.as_bytes())),
                ],
                SEARCH_BUDGET,
                &mut |u| {
                    if let Untagged::List { name, nonexistent } = u {
                        let same = name == encoded.as_bytes()
                            || (name.eq_ignore_ascii_case(b"INBOX")
                                && encoded.eq_ignore_ascii_case("INBOX"));
                        found |= same && !nonexistent;
                    }
                },
            )
            .await?;
        error::check(&self.server, done)?;
        Ok(found)
    }

    /// EXAMINEs `mailbox`. `Ok(false)` when it certainly does not exist.
    pub(crate) async fn examine(&mut self, mailbox: &str) -> Result<bool, ImapError> {
        let arg = encode::mailbox_arg(mailbox).map_err(|w| self.invalid(w))?;
        let done = self
            .exec(
                "opening the mailbox",
                vec![Part::text("EXAMINE "), Part::arg(arg)],
                SEARCH_BUDGET,
                &mut ignore,
            )
            .await?;
        if done.is_ok() {
            return Ok(true);
        }
        if done.code_is("NONEXISTENT") || !self.mailbox_listed(mailbox).await? {
            return Ok(false);
        }
        Err(error::refusal(&self.server, done))
    }
}
