//! The pinning decision and the fingerprint syntax, without a network.

use super::*;
use rustls::pki_types::pem::PemObject;

/// Made with `openssl req -x509 -newkey rsa:2048 -nodes -subj "/CN=localhost/O=Legacy Mail"`
/// (self-signed, basicConstraints CA:TRUE).
const SELF_SIGNED: &str = "\
-----BEGIN CERTIFICATE-----
MIIDNTCCAh2gAwIBAgIULwyIJZ/Hnq/ERKaEEsoVCP2IA08wDQYJKoZIhvcNAQEL
BQAwKjESMBAGA1UEAwwJbG9jYWxob3N0MRQwEgYDVQQKDAtMZWdhY3kgTWFpbDAe
Fw0yNjEyMDEyMTAyMDhaFw0yNzEyMDEyMTAyMDhaMCoxEjAQBgNVBAMMCWxvY2Fs
aG9zdDEUMBIGA1UECgwLTGVnYWN5IE1haWwwggEiMA0GCSqGSIb3DQEBAQUAA4IB
DwAwggEKAoIBAQDa5APFnA5vOj22bQR0jOP9i8qtER3F7erf+YAU+vvkEK+TGvGb
Z3u0Yb+523wHdDBLhpkCDMvPgtz6sacuUejIY2rYUgeeaYK1v+snRZBW4h8L+VoE
4rFiahCRt6t6pKT1KiNexPxG8f2GtfqkdZJEFyRj+peA8ZpzC8R+vJbkAk4jJMoZ
HoUDmvt3j1Ika+ELFxmZccTevoxwzN7QSdx/G51x0QmJwPIPFiN3JA8nZcKj5AJe
oyX5Mjo+2k+xsI6rkiL3BeWvsILGFbYdpsGTP8hFYCBpFKRzgLpuC4MlRbrQs7hO
IXxb6bjSs81h4pykoZrkgJbaU06zGRJAwwF/AgMBAAGjUzBRMB0GA1UdDgQWBBSi
j1NH+zjCYLKxpk23n0Ch/OYDAzAfBgNVHSMEGDAWgBSij1NH+zjCYLKxpk23n0Ch
/OYDAzAPBgNVHRMBAf8EBTADAQH/MA0GCSqGSIb3DQEBCwUAA4IBAQA+YEXxqaUC
b/0MQypq22qjBeSh9MFD6AQ3QGhm1rS7bkKMzCCzWnR1qcbs8RlaXjRNvd9vvvrL
q3R6SkSX1O8xQx2nxp4AGXanuZqj06zAW6XUp/jueQfq3XTNcAO05GAWHNaNaIbi
5QlIxYYoFjEI19prQVL8oebCARnfrJ3aMZZfgUYfreCy3kiouxKVZm67wER7RYRW
ymvFWccbKlobMT6D39cAvBmpOp5V943H+qRfppX6bSUI5fyGVdyj2Bgigw1A+ra4
C99+2R9g8EDQJLPfD1oLs9NTbe44bgqXRoK6DHSGs6+DQxjuDsNaq4wb5dlP4J+V
patywb/PaKpF
-----END CERTIFICATE-----
";

fn cert() -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(SELF_SIGNED.as_bytes()).expect("test certificate")
}

/// A verifier that refuses everything, as the platform one does here.
#[derive(Debug)]
struct RefuseAll;

impl ServerCertVerifier for RefuseAll {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer,
        ))
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("refused".into()))
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("refused".into()))
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ECDSA_NISTP256_SHA256]
    }
}

fn verify(v: &PinningVerifier) -> Result<ServerCertVerified, rustls::Error> {
    let name = ServerName::try_from("other.example").expect("name");
    v.verify_server_cert(&cert(), &[], &name, &[], UnixTime::now())
}

#[test]
fn a_pinned_certificate_is_accepted_whatever_its_names() {
    let by_bytes = PinningVerifier::new(Arc::new(RefuseAll), vec![cert()], None);
    assert!(verify(&by_bytes).is_ok());
    assert_eq!(by_bytes.refused(), None);
    let by_fp = PinningVerifier::new(
        Arc::new(RefuseAll),
        Vec::new(),
        Some(CertFingerprint::of(&cert())),
    );
    assert!(verify(&by_fp).is_ok());
}

#[test]
fn anything_else_is_refused_and_remembered() {
    let other = CertFingerprint([7; 32]);
    let v = PinningVerifier::new(Arc::new(RefuseAll), Vec::new(), Some(other));
    assert!(verify(&v).is_err());
    let refused = v.refused().expect("the refused certificate is kept");
    assert_eq!(refused.fingerprint, CertFingerprint::of(&cert()));
    assert_eq!(
        refused.subject.as_deref(),
        Some("CN=localhost, O=Legacy Mail")
    );
}

#[test]
fn signatures_are_still_the_inner_verifiers_to_check() {
    let v = PinningVerifier::new(Arc::new(RefuseAll), vec![cert()], None);
    assert_eq!(
        v.supported_verify_schemes(),
        vec![SignatureScheme::ECDSA_NISTP256_SHA256]
    );
}

#[test]
fn fingerprints_parse_in_every_accepted_spelling() {
    let fp = CertFingerprint::of(&cert());
    let shown = fp.to_string();
    assert!(
        shown.starts_with("sha256:") && shown.len() == 7 + 95,
        "{shown}"
    );
    let bare = shown.trim_start_matches("sha256:").replace(':', "");
    for s in [
        shown.clone(),
        shown.to_lowercase(),
        shown.to_uppercase(),
        bare.clone(),
        bare.to_lowercase(),
        format!("sha256:{bare}"),
    ] {
        assert_eq!(s.parse::<CertFingerprint>(), Ok(fp), "{s}");
    }
    for bad in [
        "",
        "sha256:",
        "md5:00",
        "é",
        &format!("{bare}0"),
        &bare[1..],
        &format!("sha256:{}", shown[8..].replacen(':', "", 1)),
        &format!("sha256: {bare}"),
        &"é".repeat(32),
    ] {
        assert!(bad.parse::<CertFingerprint>().is_err(), "{bad:?}");
    }
    assert_eq!(fp.config_line(), format!("tls_fingerprint = \"{shown}\""));
}
