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
//!
//! Where and how much: temporary files go to the folder `[spool] path`
//! names (default: the system's temp dir), and the bytes in them are bounded
//! per process by `[spool] max_bytes`, shared by every account's pass
//! ([`configure`], once at start-up). A spool that moves to a file reserves
//! its share of the budget at once (the message's limit, `max_message_size`,
//! capped at the whole budget, so a message larger than the budget still
//! goes through, alone) and gives back what it did not use when it is
//! finished; when the budget is full, a new spool waits, never fails. One
//! reservation per spool, taken in one step from a fair semaphore, so two
//! spools never wait on each other.

use std::io::{self, SeekFrom};
use std::pin::Pin;
use std::task::{Context, Poll};

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncSeekExt, AsyncWriteExt, BufWriter, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Default: messages up to 1 MiB stay in memory.
pub const DEFAULT_MEMORY_THRESHOLD: usize = 1024 * 1024;
/// At most this much of the header section is kept for parsing.
pub const MAX_HEADER_BYTES: usize = 256 * 1024;

/// Default `[spool] max_bytes`: 1 GiB of temporary files per process.
pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;
/// The budget counts in units of this many bytes (a semaphore's permits).
const UNIT: u64 = 1024;
/// A spool may hold this much more than its limit (the last chunk read).
const SLACK: u64 = 1 << 20;

/// Where temporary files go and how many bytes they may hold in all.
#[derive(Debug)]
pub struct Place {
    /// `None`: the system's temp dir.
    pub dir: Option<PathBuf>,
    budget: Arc<Semaphore>,
    units: u64,
}

impl Place {
    pub fn new(dir: Option<PathBuf>, max_bytes: u64) -> Place {
        let units = max_bytes.div_ceil(UNIT).clamp(1, u64::from(u32::MAX));
        Place {
            dir,
            budget: Arc::new(Semaphore::new(
                usize::try_from(units).unwrap_or(usize::MAX >> 4),
            )),
            units,
        }
    }

    /// Creates (and unlinks) a temporary file; the error names the key.
    fn tempfile(&self) -> io::Result<std::fs::File> {
        let made = match &self.dir {
            Some(d) => tempfile::tempfile_in(d),
            None => tempfile::tempfile(),
        };
        made.map_err(|e| {
            let dir = self
                .dir
                .clone()
                .unwrap_or_else(std::env::temp_dir)
                .display()
                .to_string();
            io::Error::new(
                e.kind(),
                format!("cannot create a temporary file in {dir} (check [spool] path): {e}"),
            )
        })
    }

    /// Waits for `bytes` of the budget (at most all of it).
    async fn reserve(&self, bytes: u64) -> Option<OwnedSemaphorePermit> {
        let units = bytes.div_ceil(UNIT).clamp(1, self.units);
        let n = u32::try_from(units).unwrap_or(u32::MAX);
        self.budget.clone().acquire_many_owned(n).await.ok()
    }

    /// Checks that a temporary file can be made there (at start-up, so
    /// that a wrong `[spool] path` is found before any server is contacted).
    pub fn check(&self) -> io::Result<()> {
        self.tempfile().map(drop)
    }

    /// Budget units free now (for tests).
    pub fn available_bytes(&self) -> u64 {
        self.budget.available_permits() as u64 * UNIT
    }
}

static PLACE: OnceLock<Place> = OnceLock::new();

/// Sets the process's spool folder and budget; the first call wins (one
/// process, one budget). Without it: the temp dir and [`DEFAULT_MAX_BYTES`].
pub fn configure(dir: Option<PathBuf>, max_bytes: u64) -> &'static Place {
    PLACE.get_or_init(|| Place::new(dir, max_bytes))
}

fn place() -> &'static Place {
    PLACE.get_or_init(|| Place::new(None, DEFAULT_MAX_BYTES))
}

enum Storage {
    Memory(Vec<u8>),
    File(BufWriter<tokio::fs::File>),
}

/// What the bytes of a message are known by, computed while they stream
/// through: the one transformation (bare LF to CRLF), the SHA-256 of the
/// result, and a bounded copy of its header section. [`Spool`] keeps the
/// bytes as well; alone, it tells whether a message on the POP3 server is
/// still the one copied earlier (guarantee 8) without keeping it.
pub struct Fingerprint {
    len: u64,
    sha: Sha256,
    has_nul: bool,
    prev_cr: bool,
    header: Vec<u8>,
    header_done: bool,
    scratch: Vec<u8>,
}

impl Default for Fingerprint {
    fn default() -> Self {
        Fingerprint {
            len: 0,
            sha: Sha256::new(),
            has_nul: false,
            prev_cr: false,
            header: Vec::new(),
            header_done: false,
            scratch: Vec::new(),
        }
    }
}

impl Fingerprint {
    /// Takes decoded message bytes (after dot-unstuffing); returns them as
    /// they are kept (after LF to CRLF).
    pub fn write(&mut self, chunk: &[u8]) -> &[u8] {
        let mut out = std::mem::take(&mut self.scratch);
        out.clear();
        normalize_crlf(chunk, &mut self.prev_cr, &mut out);
        self.sha.update(&out);
        self.len = self.len.saturating_add(out.len() as u64);
        if !self.has_nul && out.contains(&0) {
            self.has_nul = true;
        }
        if !self.header_done {
            self.capture_header(&out);
        }
        self.scratch = out;
        &self.scratch
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

    /// The header section so far (up to [`MAX_HEADER_BYTES`]), blank line
    /// included.
    pub fn header(&self) -> &[u8] {
        &self.header
    }

    /// The SHA-256 of the bytes so far, as hex.
    pub fn sha256_hex(&self) -> String {
        hex(&self.sha.clone().finalize())
    }
}

/// The SHA-256 (hex) of a header section as [`Fingerprint::header`] and
/// [`SpooledMessage::header`] give it: what the ledger keeps to tell a
/// message from another listed later under the same UIDL and size.
pub fn header_sha256(header: &[u8]) -> String {
    hex(&Sha256::digest(header))
}

/// Collects one message while it is read from the POP3 server.
pub struct Spool {
    storage: Storage,
    threshold: usize,
    fp: Fingerprint,
    /// The most this message may hold (bounds its reservation).
    limit: u64,
    place: &'static Place,
    reserved: Option<OwnedSemaphorePermit>,
}

impl Spool {
    /// A spool that moves to a temporary file once it holds more than
    /// `threshold` bytes.
    pub fn new(threshold: usize) -> Self {
        Spool {
            storage: Storage::Memory(Vec::new()),
            threshold,
            fp: Fingerprint::default(),
            limit: u64::MAX,
            place: place(),
            reserved: None,
        }
    }

    /// The message will not be kept past `limit` bytes (the caller stops
    /// there): a temporary file reserves that much of the budget, not all.
    pub fn with_limit(mut self, limit: u64) -> Self {
        self.limit = limit;
        self
    }

    /// Uses `place` instead of the process's (tests).
    pub fn in_place(mut self, place: &'static Place) -> Self {
        self.place = place;
        self
    }

    /// Bytes written so far (after LF → CRLF).
    pub fn len(&self) -> u64 {
        self.fp.len
    }

    pub fn is_empty(&self) -> bool {
        self.fp.len == 0
    }

    /// Appends decoded message bytes (after dot-unstuffing).
    pub async fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        let data = self.fp.write(chunk);
        if data.is_empty() {
            return Ok(());
        }
        match &mut self.storage {
            Storage::Memory(buf) => {
                if buf.len().saturating_add(data.len()) > self.threshold {
                    self.reserved = self.place.reserve(self.limit.saturating_add(SLACK)).await;
                    let file = self.place.tempfile()?;
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

    /// Ends the message. A trailing lone CR is kept as it is.
    pub async fn finish(self) -> io::Result<SpooledMessage> {
        let mut reserved = self.reserved;
        // Keep what the file holds; give the rest of the reservation back.
        if let Some(p) = reserved.as_mut() {
            let keep = usize::try_from(self.fp.len.div_ceil(UNIT).max(1)).unwrap_or(usize::MAX);
            if let Some(extra) = p.num_permits().checked_sub(keep).and_then(|n| p.split(n)) {
                drop(extra);
            }
        }
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
            len: self.fp.len,
            sha256: self.fp.sha.finalize().into(),
            has_nul: self.fp.has_nul,
            header: self.fp.header,
            _reserved: reserved,
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
    /// Its share of the process's spool budget, given back when dropped.
    _reserved: Option<OwnedSemaphorePermit>,
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
            _reserved: None,
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

    /// A fingerprint alone knows a message as its spool does: what TOP
    /// or RETR give again later is compared with what was copied.
    #[tokio::test]
    async fn a_fingerprint_matches_the_spool_of_the_same_bytes() {
        let chunks: [&[u8]; 3] = [b"Subject: x\n", b"From: y\r\n\nbody\n", b"more\r\n"];
        let m = spool(&chunks, 8).await;
        let mut fp = Fingerprint::default();
        for c in chunks {
            fp.write(c);
        }
        assert_eq!(fp.header(), m.header());
        assert_eq!(fp.header(), b"Subject: x\r\nFrom: y\r\n\r\n");
        assert_eq!(fp.sha256_hex(), m.sha256_hex());
        // TOP n 0 gives the header section alone: the same digest.
        let mut top = Fingerprint::default();
        top.write(b"Subject: x\nFrom: y\n\n");
        assert_eq!(header_sha256(top.header()), header_sha256(m.header()));
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

    fn leaked(dir: Option<PathBuf>, max_bytes: u64) -> &'static Place {
        Box::leak(Box::new(Place::new(dir, max_bytes)))
    }

    /// The temporary file is made in `[spool] path` (it is unlinked at
    /// once, so it shows only among the process's open files).
    #[tokio::test]
    async fn the_spool_file_is_made_in_the_configured_folder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let place = leaked(Some(dir.path().to_owned()), 64 << 20);
        let mut s = Spool::new(16).in_place(place);
        s.write(&[b'x'; 100]).await.expect("write");
        let m = s.finish().await.expect("finish");
        assert!(m.is_on_disk());
        let open: Vec<String> = std::fs::read_dir("/proc/self/fd")
            .expect("/proc/self/fd")
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .map(|p| p.display().to_string())
            .collect();
        let ours = dir.path().display().to_string();
        assert!(
            open.iter()
                .any(|p| p.starts_with(&ours) && p.ends_with("(deleted)")),
            "no unlinked file in {ours}: {open:?}"
        );
        assert!(
            std::fs::read_dir(dir.path())
                .expect("read")
                .next()
                .is_none()
        );
    }

    #[tokio::test]
    async fn an_unusable_folder_is_an_error_naming_the_key() {
        let place = leaked(Some("/nonexistent/popferry-spool".into()), 1 << 20);
        let e = place.check().expect_err("no such folder");
        assert!(e.to_string().contains("[spool] path"), "{e}");
        assert!(e.to_string().contains("/nonexistent/popferry-spool"), "{e}");
        let mut s = Spool::new(4).in_place(place);
        let e = s.write(b"0123456789").await.expect_err("spill fails");
        assert!(e.to_string().contains("[spool] path"), "{e}");
    }

    /// Polls `f` once (no I/O happens before a spool's reservation).
    fn poll_once<F: std::future::Future>(f: std::pin::Pin<&mut F>) -> Poll<F::Output> {
        f.poll(&mut Context::from_waker(std::task::Waker::noop()))
    }

    /// The budget bounds the bytes in temporary files across spools: while
    /// one message holds it, a second one that needs a file waits (and does
    /// not fail); a message larger than the whole budget goes through
    /// alone; a finished spool keeps only what it holds.
    #[tokio::test]
    async fn the_budget_bounds_concurrent_spooling() {
        let place = leaked(None, 4 << 20);
        assert_eq!(place.available_bytes(), 4 << 20);
        // Limit larger than the budget: reserves all of it.
        let mut big = Spool::new(16).in_place(place).with_limit(64 << 20);
        big.write(&[b'a'; 100]).await.expect("write");
        assert_eq!(place.available_bytes(), 0, "the big one holds it all");

        let mut second = Spool::new(16).in_place(place).with_limit(1 << 20);
        {
            let mut w = std::pin::pin!(second.write(&[b'b'; 100]));
            assert!(poll_once(w.as_mut()).is_pending(), "waits for the budget");
            let finished = big.finish().await.expect("finish");
            // 100 bytes kept (one unit), the rest given back, and handed
            // at once to the waiting spool (its limit plus slack: 2 MiB).
            assert_eq!(place.available_bytes(), (2 << 20) - UNIT);
            w.await.expect("the second one goes on");
            drop(finished);
        }
        assert_eq!(place.available_bytes(), 2 << 20);
        let m = second.finish().await.expect("finish");
        assert_eq!(place.available_bytes(), (4 << 20) - UNIT);
        drop(m);
        assert_eq!(place.available_bytes(), 4 << 20);
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
