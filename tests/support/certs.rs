//! Test PKI made with the `openssl` command line (EC P-256: fast to make).
//!
//! Generated once per test process, then copied into each instance's `tls/`:
//! - `ca.pem` / `ca.key`: the test CA;
//! - `localhost.pem` / `.key`: server certificate for DNS:localhost and IP:127.0.0.1, signed by the CA;
//! - `wrong-name.pem` / `.key`: signed by the same CA for DNS:wrong-name.invalid only;
//! - `wrong-ca.pem` / `.key`: a second, unrelated CA.
//! - `self-signed.pem` / `.key`: what a small legacy server typically has,
//!   made exactly as its admin would, with the system's defaults:
//!   `openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=mail.legacy.test/O=Legacy Mail`.
//!   It is self-signed with `basicConstraints CA:TRUE` (checked here) and
//!   names no host popferry connects to (the tests use `127.0.0.1`).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

const FILES: &[&str] = &[
    "ca.pem",
    "ca.key",
    "localhost.pem",
    "localhost.key",
    "wrong-name.pem",
    "wrong-name.key",
    "wrong-ca.pem",
    "wrong-ca.key",
    "self-signed.pem",
    "self-signed.key",
];

const OPENSSL_CNF: &str = "\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca_ext]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[leaf_localhost]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost,IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[leaf_wrong]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:wrong-name.invalid
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
";

fn openssl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        // The system's defaults, as for a person typing the command.
        .env_remove("OPENSSL_CONF")
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run openssl ({e}); install it with:\n    {}",
                super::INSTALL_HINT
            )
        });
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn make_ca(dir: &Path, name: &str, cn: &str) {
    let subj = format!("/CN={cn}");
    let key = format!("{name}.key");
    let pem = format!("{name}.pem");
    openssl(
        dir,
        &[
            "req",
            "-config",
            "openssl.cnf",
            "-x509",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "3650",
            "-sha256",
            "-subj",
            &subj,
            "-extensions",
            "ca_ext",
            "-keyout",
            &key,
            "-out",
            &pem,
        ],
    );
}

fn make_leaf(dir: &Path, name: &str, cn: &str, ext: &str, serial: &str) {
    let subj = format!("/CN={cn}");
    let key = format!("{name}.key");
    let csr = format!("{name}.csr");
    let pem = format!("{name}.pem");
    openssl(
        dir,
        &[
            "req",
            "-config",
            "openssl.cnf",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            &subj,
            "-keyout",
            &key,
            "-out",
            &csr,
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-set_serial",
            serial,
            "-days",
            "3650",
            "-sha256",
            "-extfile",
            "openssl.cnf",
            "-extensions",
            ext,
            "-out",
            &pem,
        ],
    );
}

/// The certificate a legacy server's admin makes with one command and the
/// system's `openssl.cnf`: no `-config`, no extensions of our own.
fn make_self_signed(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "365",
            "-subj",
            "/CN=mail.legacy.test/O=Legacy Mail",
            "-keyout",
            "self-signed.key",
            "-out",
            "self-signed.pem",
        ],
    );
    let text = openssl(dir, &["x509", "-in", "self-signed.pem", "-noout", "-text"]);
    assert!(
        text.contains("CA:TRUE"),
        "`openssl req -x509` made a certificate without basicConstraints CA:TRUE here, \
         so the self-signed tests would not test what they say:\n{text}"
    );
}

/// The SHA-256 fingerprint of a PEM certificate as `openssl x509
/// -fingerprint -sha256` prints it: upper-case hex pairs joined by colons.
pub fn openssl_sha256_fingerprint(pem: &Path) -> String {
    let dir = pem.parent().expect("a certificate in a folder");
    let out = openssl(
        dir,
        &[
            "x509",
            "-in",
            pem.to_str().expect("utf-8 path"),
            "-noout",
            "-fingerprint",
            "-sha256",
        ],
    );
    // `sha256 Fingerprint=AB:CD:...` (the label's case varies by version).
    let (_, hex) = out
        .trim()
        .split_once('=')
        .unwrap_or_else(|| panic!("unexpected openssl fingerprint output {out:?}"));
    assert_eq!(hex.len(), 95, "32 hex pairs and 31 colons: {hex:?}");
    hex.to_owned()
}

fn generate() -> Vec<(&'static str, Vec<u8>)> {
    let dir = super::short_temp_dir("pfc");
    fs::write(dir.join("openssl.cnf"), OPENSSL_CNF).expect("write openssl.cnf");
    let serial = format!("0x{:016x}", super::random_u64() >> 1);
    make_ca(&dir, "ca", "popferry test CA");
    make_ca(&dir, "wrong-ca", "popferry unrelated CA");
    make_leaf(&dir, "localhost", "localhost", "leaf_localhost", &serial);
    let serial2 = format!("0x{:016x}", super::random_u64() >> 1);
    make_leaf(
        &dir,
        "wrong-name",
        "wrong-name.invalid",
        "leaf_wrong",
        &serial2,
    );
    make_self_signed(&dir);
    let files = FILES
        .iter()
        .map(|f| {
            (
                *f,
                fs::read(dir.join(f)).unwrap_or_else(|e| panic!("read {f}: {e}")),
            )
        })
        .collect();
    let _ = fs::remove_dir_all(&dir);
    files
}

/// Writes the process-wide test PKI into `dir` (keys mode 0600).
pub fn install(dir: &Path) {
    static PKI: OnceLock<Vec<(&'static str, Vec<u8>)>> = OnceLock::new();
    for (name, bytes) in PKI.get_or_init(generate) {
        let path = dir.join(name);
        fs::write(&path, bytes).expect("write TLS file");
        let mode = if name.ends_with(".key") { 0o600 } else { 0o644 };
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod TLS file");
    }
}
