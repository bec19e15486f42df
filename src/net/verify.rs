//! Which server certificates are trusted, and what to tell the user about
//! one that is not.
//!
//! A certificate is trusted when any of these holds:
//! - it chains to the platform's roots or to a CA in the server's `ca_file`
//!   and names the host (the platform verifier, unchanged);
//! - it is byte for byte a certificate in `ca_file` (*pinned*): what a
//!   small legacy server has is a self-signed certificate with
//!   `basicConstraints CA:TRUE`, which path building refuses as an end
//!   entity (`CaUsedAsEndEntity`);
//! - its SHA-256 is the server's `tls_fingerprint` (pinned too).
//!
//! A pinned certificate is trusted as that server's identity, as ssh trusts
//! a host key: its names and validity dates are not checked (a legacy
//! certificate seldom names the host it is reached by, and `openssl req
//! -x509` makes it for 30 days by default). The handshake's signature is
//! still verified with the certificate's key (`verify_tls12_signature` /
//! `verify_tls13_signature` are the platform verifier's), so only the holder
//! of the pinned key can be that server.
//!
//! When a certificate is refused, the verifier keeps its fingerprint and
//! subject, so that the error can show them (and `popferry check` the line
//! that would pin it).

use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

/// A certificate's SHA-256 (of its DER bytes), as `tls_fingerprint` names
/// it. Shown as `sha256:AB:CD:…` (upper-case pairs, as `openssl x509
/// -fingerprint -sha256` prints them).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CertFingerprint([u8; 32]);

impl CertFingerprint {
    /// The fingerprint of a DER certificate.
    pub fn of(der: &[u8]) -> CertFingerprint {
        CertFingerprint(Sha256::digest(der).into())
    }

    /// The configuration line that pins this certificate.
    pub fn config_line(&self) -> String {
        format!("tls_fingerprint = \"{self}\"")
    }
}

impl std::fmt::Display for CertFingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("sha256:")?;
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for CertFingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// Why a `tls_fingerprint` value is not one. Never quotes the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "not a SHA-256 fingerprint ({0}); write it as \"sha256:AB:CD:…\" (32 hex pairs, colons optional)"
)]
pub struct FingerprintError(&'static str);

impl std::str::FromStr for CertFingerprint {
    type Err = FingerprintError;

    /// `sha256:` (any case, optional) and 64 hex digits in either case,
    /// either all in colon-separated pairs or with no colons at all.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex = match s.split_once(':') {
            Some((algo, rest)) if algo.eq_ignore_ascii_case("sha256") => rest,
            Some((algo, _))
                if algo.len() > 2 && algo.chars().all(|c| c.is_ascii_alphanumeric()) =>
            {
                return Err(FingerprintError("only sha256 is accepted"));
            }
            _ => s,
        };
        let digits: Vec<u8> = if hex.contains(':') {
            let pairs: Vec<&str> = hex.split(':').collect();
            if pairs.iter().any(|p| p.len() != 2) {
                return Err(FingerprintError("colons must separate pairs of hex digits"));
            }
            pairs.concat().into_bytes()
        } else {
            hex.as_bytes().to_vec()
        };
        if digits.len() != 64 {
            return Err(FingerprintError("it must have 64 hex digits"));
        }
        let mut out = [0u8; 32];
        for (byte, pair) in out.iter_mut().zip(digits.chunks(2)) {
            let text = std::str::from_utf8(pair).map_err(|_| FingerprintError("not hex"))?;
            if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(FingerprintError("a character is not a hex digit"));
            }
            *byte = u8::from_str_radix(text, 16).map_err(|_| FingerprintError("not hex"))?;
        }
        Ok(CertFingerprint(out))
    }
}

/// The certificate a server presented and we refused: what a user needs to
/// decide whether to pin it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresentedCertificate {
    pub fingerprint: CertFingerprint,
    /// `CN=…, O=…`; `None` when it could not be read.
    pub subject: Option<String>,
}

impl std::fmt::Display for PresentedCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.fingerprint)?;
        match &self.subject {
            Some(s) => write!(f, ", subject {s}"),
            None => f.write_str(", subject unreadable"),
        }
    }
}

/// The platform verifier, plus the certificates pinned for this server.
#[derive(Debug)]
pub(super) struct PinningVerifier {
    inner: Arc<dyn ServerCertVerifier>,
    /// The certificates of `ca_file`, each accepted when presented as is.
    pinned: Vec<CertificateDer<'static>>,
    fingerprint: Option<CertFingerprint>,
    /// The certificate refused during this handshake, if any.
    refused: Mutex<Option<PresentedCertificate>>,
}

impl PinningVerifier {
    pub(super) fn new(
        inner: Arc<dyn ServerCertVerifier>,
        pinned: Vec<CertificateDer<'static>>,
        fingerprint: Option<CertFingerprint>,
    ) -> PinningVerifier {
        PinningVerifier {
            inner,
            pinned,
            fingerprint,
            refused: Mutex::new(None),
        }
    }

    /// The certificate this verifier refused, if it refused one.
    pub(super) fn refused(&self) -> Option<PresentedCertificate> {
        match self.refused.lock() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn is_pinned(&self, end_entity: &CertificateDer<'_>, fp: CertFingerprint) -> bool {
        self.fingerprint == Some(fp)
            || self
                .pinned
                .iter()
                .any(|c| c.as_ref() == end_entity.as_ref())
    }
}

impl ServerCertVerifier for PinningVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let fp = CertFingerprint::of(end_entity);
        if self.is_pinned(end_entity, fp) {
            tracing::debug!(fingerprint = %fp, "The server presented a pinned certificate");
            return Ok(ServerCertVerified::assertion());
        }
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .inspect_err(|_| {
                let presented = PresentedCertificate {
                    fingerprint: fp,
                    subject: super::subject::subject(end_entity),
                };
                match self.refused.lock() {
                    Ok(mut g) => *g = Some(presented),
                    Err(poisoned) => *poisoned.into_inner() = Some(presented),
                }
            })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
#[path = "verify_tests.rs"]
mod tests;
