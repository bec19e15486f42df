//! A message's bytes on their way from POP3 to IMAP: in memory while small,
//! in an unlinked temporary file once large.
//!
//! Why: guarantee 6 (bounded memory) says peak memory must not grow with the
//! size of one message, so nothing above [`Spool`]'s threshold is ever held
//! whole in memory. While the bytes stream through, the spool also does the
//! one transformation the design allows (a bare LF becomes CRLF, because IMAP
//! demands CRLF; a lone CR and every other byte pass untouched), computes the
//! SHA-256 the ledger keeps, notes whether a NUL is present (it decides
//! literal vs literal8) and keeps a bounded copy of the header section for
//! Message-ID and date extraction.

use std::io::{self, SeekFrom};
use std::pin::Pin;
use std::task::{Context, Poll};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncSeekExt, AsyncWriteExt, BufWriter, ReadBuf};

/// Default: messages up to 1 MiB stay in memory.
pub const DEFAULT_MEMORY_THRESHOLD: usize = 1024 * 1024;
/// At most this much of the header section is kept for parsing.
pub const MAX_HEADER_BYTES: usize = 256 * 1024;

enum Storage {
    Memory(Vec<u8>),
    File(BufWriter<tokio::fs::File>),
}

/// Collects one message while it is read from the POP3 server.
pub struct Spool {
    storage: Storage,
    threshold: usize,
    len: u64,
    sha: Sha256,
    has_nul: bool,
    prev_cr: bool,
    header: Vec<u8>,
    header_done: bool,
    scratch: Vec<u8>,
}

impl Spool {
    /// A spool that moves to a temporary file once it holds more than
    /// `threshold` bytes.
    pub fn new(threshold: usize) -> Self {
        Spool {
            storage: Storage::Memory(Vec::new()),
            threshold,
            len: 0,
            sha: Sha256::new(),
            has_nul: false,
            prev_cr: false,
            header: Vec::new(),
            header_done: false,
            scratch: Vec::new(),
        }
    }

    /// Bytes written so far (after LF → CRLF).
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends decoded message bytes (after dot-unstuffing).
    pub async fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        let mut out = std::mem::take(&mut self.scratch);
        out.clear();
        normalize_crlf(chunk, &mut self.prev_cr, &mut out);
        self.absorb(&out).await?;
        self.scratch = out;
        Ok(())
    }

    async fn absorb(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        self.sha.update(data);
        self.len = self.len.saturating_add(data.len() as u64);
        if !self.has_nul && data.contains(&0) {
            self.has_nul = true;
        }
        if !self.header_done {
            self.capture_header(data);
        }
        match &mut self.storage {
            Storage::Memory(buf) => {
                if buf.len().saturating_add(data.len()) > self.threshold {
                    let file = tempfile::tempfile()?;
                    let mut w =
                        BufWriter::with_capacity(64 * 1024, tokio::fs::File::from_std(file));
                    w.write_all(buf).await?;
                    w.write_all(data).await?;
                    self.storage = Storage::File(w);
                } else {
                    buf.extend_from_slice(data);
                }
            }
            Storage::File(w) => w.write_all(data).await?,
        }
        Ok(())
    }

    fn capture_header(&mut self, data: &[u8]) {
        let room = MAX_HEADER_BYTES.saturating_sub(self.header.len());
        let take = data.len().min(room);
        let start = self.header.len().saturating_sub(3);
        self.header
            .extend_from_slice(data.get(..take).unwrap_or_default());
        // Stop at the blank line that ends the header section.
        if let Some(pos) = find(self.header.get(start..).unwrap_or_default(), b"\r\n\r\n") {
            self.header.truncate(start + pos + 4);
            self.header_done = true;
        } else if self.header.len() >= MAX_HEADER_BYTES {
            self.header_done = true;
        }
    }

    /// Ends the message. A trailing lone CR is kept as it is.
    pub async fn finish(self) -> io::Result<SpooledMessage> {
        let storage = match self.storage {
            Storage::Memory(buf) => Stored::Memory(buf),
            Storage::File(mut w) => {
                w.flush().await?;
                let mut file = w.into_inner();
                file.sync_data().await.ok();
                file.seek(SeekFrom::Start(0)).await?;
                Stored::File(tokio::sync::Mutex::new(file))
            }
        };
        Ok(SpooledMessage {
            storage,
            len: self.len,
            sha256: self.sha.finalize().into(),
            has_nul: self.has_nul,
            header: self.header,
        })
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Copies `input` to `out`, turning every LF not preceded by CR into CRLF.
/// `prev_cr` carries the last byte's state across chunk boundaries.
pub fn normalize_crlf(input: &[u8], prev_cr: &mut bool, out: &mut Vec<u8>) {
    out.reserve(input.len() + input.len() / 64);
    for &b in input {
        if b == b'\n' && !*prev_cr {
            out.push(b'\r');
        }
        out.push(b);
        *prev_cr = b == b'\r';
    }
}

enum Stored {
    Memory(Vec<u8>),
    File(tokio::sync::Mutex<tokio::fs::File>),
}

/// A complete message, ready to be appended (possibly several times, if a
/// connection drops and the APPEND is retried).
pub struct SpooledMessage {
    storage: Stored,
    len: u64,
    sha256: [u8; 32],
    has_nul: bool,
    header: Vec<u8>,
}

impl SpooledMessage {
    /// Builds a message from bytes already in memory (tests, TOP fallbacks).
    pub fn from_bytes(bytes: &[u8]) -> Self {
        let mut out = Vec::with_capacity(bytes.len());
        let mut prev_cr = false;
        normalize_crlf(bytes, &mut prev_cr, &mut out);
        let header = match find(&out, b"\r\n\r\n") {
            Some(p) => out.get(..p + 4).unwrap_or_default().to_vec(),
            None => out
                .get(..out.len().min(MAX_HEADER_BYTES))
                .unwrap_or_default()
                .to_vec(),
        };
        SpooledMessage {
            len: out.len() as u64,
            sha256: Sha256::digest(&out).into(),
            has_nul: out.contains(&0),
            header,
            storage: Stored::Memory(out),
        }
    }

    /// Size in bytes, as it will be appended.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the message holds a NUL byte (needs a literal8 to be exact).
    pub fn has_nul(&self) -> bool {
        self.has_nul
    }

    /// True when the bytes live in a temporary file.
    pub fn is_on_disk(&self) -> bool {
        matches!(self.storage, Stored::File(_))
    }

    /// The header section (up to [`MAX_HEADER_BYTES`]), blank line included.
    pub fn header(&self) -> &[u8] {
        &self.header
    }

    pub fn sha256(&self) -> [u8; 32] {
        self.sha256
    }

    pub fn sha256_hex(&self) -> String {
        hex(&self.sha256)
    }

    /// A reader over the whole message from its first byte.
    pub async fn reader(&self) -> io::Result<SpoolReader<'_>> {
        match &self.storage {
            Stored::Memory(buf) => Ok(SpoolReader::Memory(buf.as_slice())),
            Stored::File(file) => {
                let mut guard = file.lock().await;
                guard.seek(SeekFrom::Start(0)).await?;
                Ok(SpoolReader::File(tokio::io::BufReader::with_capacity(
                    64 * 1024,
                    FileGuard(guard),
                )))
            }
        }
    }

    /// SHA-256 of the message with every NUL shown as 0x80: how Dovecot
    /// returns a stored NUL under `BODY[]`, to recognise such a message in
    /// the target.
    pub async fn sha256_nul_as_0x80(&self) -> io::Result<[u8; 32]> {
        use tokio::io::AsyncReadExt;
        let mut reader = self.reader().await?;
        let mut sha = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = reader.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            for b in buf.get_mut(..n).unwrap_or_default() {
                if *b == 0 {
                    *b = 0x80;
                }
            }
            sha.update(buf.get(..n).unwrap_or_default());
        }
        Ok(sha.finalize().into())
    }

    /// Reads the whole message into memory. For tests and small messages only.
    pub async fn to_vec(&self) -> io::Result<Vec<u8>> {
        use tokio::io::AsyncReadExt;
        let mut out = Vec::new();
        self.reader().await?.read_to_end(&mut out).await?;
        Ok(out)
    }
}

/// Lower-case hex of some bytes.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Owns the lock on the spool file while it is read.
pub struct FileGuard<'a>(tokio::sync::MutexGuard<'a, tokio::fs::File>);

impl AsyncRead for FileGuard<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().0).poll_read(cx, buf)
    }
}

/// Reads a [`SpooledMessage`] from memory or from its file.
pub enum SpoolReader<'a> {
    Memory(&'a [u8]),
    File(tokio::io::BufReader<FileGuard<'a>>),
}

impl AsyncRead for SpoolReader<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            SpoolReader::Memory(s) => Pin::new(s).poll_read(cx, buf),
            SpoolReader::File(r) => Pin::new(r).poll_read(cx, buf),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn spool(chunks: &[&[u8]], threshold: usize) -> SpooledMessage {
        let mut s = Spool::new(threshold);
        for c in chunks {
            s.write(c).await.expect("write");
        }
        s.finish().await.expect("finish")
    }

    #[tokio::test]
    async fn bare_lf_becomes_crlf_across_chunks_and_lone_cr_stays() {
        let m = spool(&[b"a\r", b"\nb\n", b"c\rd\n"], 1024).await;
        assert_eq!(m.to_vec().await.expect("read"), b"a\r\nb\r\nc\rd\r\n");
        assert_eq!(m.len(), 11);
    }

    #[tokio::test]
    async fn large_message_moves_to_disk_and_reads_back_twice() {
        let body: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut expected = Vec::new();
        normalize_crlf(&body, &mut false, &mut expected);
        let m = spool(&[b"Subject: x\r\n\r\n", &body], 4096).await;
        assert!(m.is_on_disk());
        assert!(m.has_nul());
        let mut want = b"Subject: x\r\n\r\n".to_vec();
        want.extend_from_slice(&expected);
        assert_eq!(m.to_vec().await.expect("read"), want);
        assert_eq!(m.to_vec().await.expect("read again"), want);
        assert_eq!(m.header(), b"Subject: x\r\n\r\n");
        assert_eq!(m.sha256_hex(), hex(&Sha256::digest(&want)));
    }

    #[tokio::test]
    async fn empty_message_is_empty() {
        let m = spool(&[], 10).await;
        assert!(m.is_empty());
        assert!(!m.has_nul());
        assert_eq!(
            m.sha256_hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
