//! One message as it arrives (RETR or TOP): decoded chunk by chunk, so a
//! message of any size goes into a spool without being held in memory, and
//! a body dropped before its end poisons the session (its bytes would be
//! read as the next reply).

use tokio::io::{AsyncRead, AsyncWrite};

use super::connection::Connection;
use super::error::{Pop3Error, Pop3ErrorKind};
use super::proto::DotDecoder;
use crate::net::MaybeTls;

/// A message being received: decoded (dot-unstuffed) bytes, chunk by chunk.
/// Dropping it before [`Body::next_chunk`] returned `None` poisons the
/// session.
pub struct Body<'a, S = MaybeTls> {
    conn: &'a mut Connection<S>,
    dec: DotDecoder,
}

impl<'a, S> Body<'a, S> {
    pub(super) fn new(conn: &'a mut Connection<S>) -> Body<'a, S> {
        Body {
            conn,
            dec: DotDecoder::new(),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Body<'_, S> {
    /// The next chunk of the message (at most 64 KiB), `None` at its end.
    pub async fn next_chunk(&mut self) -> Result<Option<&[u8]>, Pop3Error> {
        self.conn.next_data(&mut self.dec).await
    }

    /// The whole message in memory; an error (which poisons the session)
    /// when it exceeds `limit` bytes. For TOP and tests: RETR of a message of
    /// any size belongs in a spool, chunk by chunk.
    pub async fn read_to_end(mut self, limit: usize) -> Result<Vec<u8>, Pop3Error> {
        let mut all = Vec::new();
        while let Some(chunk) = self.next_chunk().await? {
            if all.len().saturating_add(chunk.len()) > limit {
                return Err(self.conn.error(Pop3ErrorKind::TooLarge { limit }));
            }
            all.extend_from_slice(chunk);
        }
        Ok(all)
    }
}

impl<S> Drop for Body<'_, S> {
    fn drop(&mut self) {
        if !self.dec.is_done() {
            self.conn.poison();
        }
    }
}
