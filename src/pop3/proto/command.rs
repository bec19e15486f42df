//! The commands the client sends, and how they are written.
//!
//! Why here: encoding is where a hostile argument could smuggle a second
//! command (a CR or LF in a user name), and where a secret could reach a log;
//! both are ruled out in one place: arguments holding CR, LF or NUL are
//! refused, and the `Debug` form redacts every secret-bearing command.

use std::fmt;

use super::ProtoError;

/// A POP3 command. Arguments are borrowed; secrets are exposed only for the
/// time it takes to encode them, and the `Debug` form never shows them.
#[derive(Clone, Copy)]
pub enum Command<'a> {
    User(&'a str),
    Pass(&'a str),
    Apop {
        user: &'a str,
        digest: &'a str,
    },
    /// `AUTH <mechanism>` without an initial response.
    Auth(&'a str),
    /// A line answering a SASL challenge (base64; may hold credentials).
    SaslResponse(&'a str),
    Capa,
    Stls,
    Stat,
    /// `LIST` with no argument: a multi-line scan listing.
    List,
    /// `UIDL` with no argument: a multi-line unique-id listing.
    Uidl,
    Retr(u32),
    Top(u32, u32),
    Dele(u32),
    /// `UTF8` (RFC 6856): UTF-8 mode, sent in AUTHORIZATION state only.
    Utf8,
    Quit,
}

impl Command<'_> {
    /// The command's keyword, for logs and error messages.
    pub fn name(&self) -> &'static str {
        match self {
            Command::User(_) => "USER",
            Command::Pass(_) => "PASS",
            Command::Apop { .. } => "APOP",
            Command::Auth(_) => "AUTH",
            Command::SaslResponse(_) => "AUTH (response)",
            Command::Capa => "CAPA",
            Command::Stls => "STLS",
            Command::Stat => "STAT",
            Command::List => "LIST",
            Command::Uidl => "UIDL",
            Command::Retr(_) => "RETR",
            Command::Top(..) => "TOP",
            Command::Dele(_) => "DELE",
            Command::Utf8 => "UTF8",
            Command::Quit => "QUIT",
        }
    }

    /// True when the encoded command holds a secret (or something derived
    /// from one): it is then logged by name only and its buffer wiped.
    pub fn is_sensitive(&self) -> bool {
        matches!(
            self,
            Command::Pass(_) | Command::Apop { .. } | Command::SaslResponse(_)
        )
    }

    /// Appends the command and its CRLF to `out`. Arguments holding CR, LF
    /// or NUL are refused: they would smuggle a second command.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), ProtoError> {
        fn arg(out: &mut Vec<u8>, a: &str) -> Result<(), ProtoError> {
            if a.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
                return Err(ProtoError::BadArgument);
            }
            out.push(b' ');
            out.extend_from_slice(a.as_bytes());
            Ok(())
        }
        let num = |out: &mut Vec<u8>, n: u32| {
            out.push(b' ');
            out.extend_from_slice(n.to_string().as_bytes());
        };
        match self {
            Command::User(u) => {
                out.extend_from_slice(b"USER");
                arg(out, u)?;
            }
            Command::Pass(p) => {
                out.extend_from_slice(b"PASS");
                arg(out, p)?;
            }
            Command::Apop { user, digest } => {
                out.extend_from_slice(b"APOP");
                arg(out, user)?;
                arg(out, digest)?;
            }
            Command::Auth(mech) => {
                out.extend_from_slice(b"AUTH");
                arg(out, mech)?;
            }
            Command::SaslResponse(r) => {
                if r.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
                    return Err(ProtoError::BadArgument);
                }
                out.extend_from_slice(r.as_bytes());
            }
            Command::Capa => out.extend_from_slice(b"CAPA"),
            Command::Stls => out.extend_from_slice(b"STLS"),
            Command::Stat => out.extend_from_slice(b"STAT"),
            Command::List => out.extend_from_slice(b"LIST"),
            Command::Uidl => out.extend_from_slice(b"UIDL"),
            Command::Retr(n) => {
                out.extend_from_slice(b"RETR");
                num(out, *n);
            }
            Command::Top(n, lines) => {
                out.extend_from_slice(b"TOP");
                num(out, *n);
                num(out, *lines);
            }
            Command::Dele(n) => {
                out.extend_from_slice(b"DELE");
                num(out, *n);
            }
            Command::Utf8 => out.extend_from_slice(b"UTF8"),
            Command::Quit => out.extend_from_slice(b"QUIT"),
        }
        out.extend_from_slice(b"\r\n");
        Ok(())
    }
}

impl fmt::Debug for Command<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::User(u) => write!(f, "USER {u}"),
            Command::Pass(_) => f.write_str("PASS <redacted>"),
            Command::Apop { user, .. } => write!(f, "APOP {user} <redacted>"),
            Command::Auth(m) => write!(f, "AUTH {m}"),
            Command::SaslResponse(_) => f.write_str("<SASL response redacted>"),
            Command::Retr(n) => write!(f, "RETR {n}"),
            Command::Top(n, l) => write!(f, "TOP {n} {l}"),
            Command::Dele(n) => write!(f, "DELE {n}"),
            other => f.write_str(other.name()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn command_encoding() {
        let enc = |c: Command<'_>| {
            let mut v = Vec::new();
            c.encode(&mut v).unwrap();
            v
        };
        assert_eq!(enc(Command::User("me@x")), b"USER me@x\r\n");
        assert_eq!(enc(Command::Pass("p w")), b"PASS p w\r\n");
        assert_eq!(enc(Command::Retr(7)), b"RETR 7\r\n");
        assert_eq!(enc(Command::Top(7, 0)), b"TOP 7 0\r\n");
        assert_eq!(enc(Command::List), b"LIST\r\n");
        assert_eq!(enc(Command::Utf8), b"UTF8\r\n");
        assert_eq!(
            enc(Command::Apop {
                user: "mrose",
                digest: "c4c9"
            }),
            b"APOP mrose c4c9\r\n"
        );
        assert_eq!(enc(Command::SaslResponse("AGEAYg==")), b"AGEAYg==\r\n");
        assert_eq!(
            Command::User("a\r\nDELE 1").encode(&mut Vec::new()),
            Err(ProtoError::BadArgument)
        );
        assert_eq!(format!("{:?}", Command::Pass("hunter2")), "PASS <redacted>");
        assert!(
            !format!(
                "{:?}",
                Command::Apop {
                    user: "u",
                    digest: "d1g"
                }
            )
            .contains("d1g")
        );
    }
}
