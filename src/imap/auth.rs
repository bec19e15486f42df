//! Logging in: the only place in `imap` that reads `settings.auth` and
//! `settings.password`.
//!
//! Why one place: the password must be exposed only while a command is
//! written (guarantee 7), and the choice of mechanism (`auth = auto | login
//! | plain`) and the refusal to send a password without TLS belong together.
//! The SASL encodings themselves are [`crate::sasl`]'s, shared with POP3.
//!
//! `auto` uses AUTHENTICATE PLAIN when offered (with SASL-IR when offered),
//! else LOGIN, unless the server says LOGINDISABLED. A refusal is
//! [`ImapError::Auth`] (permanent: fix the configuration) unless its code
//! says it is temporary (`[UNAVAILABLE]`...), which stays transient.

use secrecy::ExposeSecret;
use secrecy::zeroize::Zeroizing;

use super::conn::{COMMAND_BUDGET, Conn, ImapIo, ignore};
use super::error::{self, ImapError, ImapErrorKind};
use super::proto::command::Part;
use super::proto::encode;
use super::proto::flow::{Flow, Step};
use super::proto::reply::{Done, State};
use crate::config::{Credential, ImapAuth, ServerSettings};
use crate::sasl;

/// Which command logs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Login,
    Sasl(sasl::Mechanism),
}

impl<S: ImapIo> Conn<S> {
    /// Logs in as configured. Refuses to send a password without TLS unless
    /// allowed; picks AUTHENTICATE PLAIN or LOGIN; refreshes capabilities.
    pub(crate) async fn authenticate(
        &mut self,
        settings: &ServerSettings<ImapAuth>,
        tls: bool,
    ) -> Result<(), ImapError> {
        if !tls && !settings.allow_plaintext_password {
            return Err(ImapError::new(
                self.server.clone(),
                ImapErrorKind::PlaintextRefused,
            ));
        }
        let method = match settings.auth {
            ImapAuth::Plain => Method::Sasl(sasl::Mechanism::Plain),
            ImapAuth::Login => Method::Login,
            ImapAuth::Auto if self.caps.auth("PLAIN") => Method::Sasl(sasl::Mechanism::Plain),
            ImapAuth::Auto => Method::Login,
        };
        if method == Method::Login && self.caps.login_disabled() {
            return Err(ImapError::new(self.server.clone(), ImapErrorKind::Auth { text: "the server disables LOGIN here (LOGINDISABLED) and PLAIN was not chosen or offered"
                    .into() }));
        }
        let user = settings.username.as_str();
        let Credential::Password(password) = settings.credential().await.map_err(|source| {
            ImapError::new(self.server.clone(), ImapErrorKind::Credential { source })
        })?;
        let password = password.expose_secret();
        let done = match method {
            Method::Login => {
                let parts = vec![
                    Part::text("LOGIN "),
                    Part::arg(encode::string_arg(user.as_bytes())),
                    Part::text(" "),
                    Part::arg(encode::string_arg(password.as_bytes())),
                ];
                self.simple("logging in", parts).await?
            }
            Method::Sasl(_) => {
                self.authenticate_sasl(sasl::Exchange::plain(user, password))
                    .await?
            }
        };
        self.logged_in(done, &settings.username, method).await
    }

    /// What the login's completion means.
    async fn logged_in(&mut self, done: Done, user: &str, method: Method) -> Result<(), ImapError> {
        if done.state == State::Ok {
            tracing::debug!(
                server = %self.server,
                user = %user,
                mechanism = match method {
                    Method::Login => "LOGIN",
                    Method::Sasl(_) => "AUTHENTICATE PLAIN",
                },
                "IMAP login succeeded"
            );
            match done.caps {
                // Only trust a list that reflects the logged-in state.
                Some(caps) if !caps.is_empty() => self.caps = caps,
                _ => self.capability().await?,
            }
            return Ok(());
        }
        let err = error::refusal(&self.server, done);
        if err.is_transient() {
            return Err(err);
        }
        let text = match err.kind() {
            ImapErrorKind::No {
                code: Some(c),
                text,
            } => format!("[{c}] {text}"),
            ImapErrorKind::No { text, .. } | ImapErrorKind::Bad { text } => text.clone(),
            _ => err.to_string(),
        };
        Err(ImapError::new(
            self.server.clone(),
            ImapErrorKind::Auth { text },
        ))
    }

    /// AUTHENTICATE with a SASL exchange, its first response sent with the
    /// command when the server offers SASL-IR; a challenge the mechanism
    /// cannot answer is cancelled with `*`.
    async fn authenticate_sasl(&mut self, mut exchange: sasl::Exchange) -> Result<Done, ImapError> {
        const WHAT: &str = "authenticating";
        let tag = self.begin(COMMAND_BUDGET)?;
        let mut flow = Flow::new(&tag);
        flow.expect_challenges();
        let mut line: Zeroizing<Vec<u8>> = Zeroizing::new(
            format!("{tag} AUTHENTICATE {}", exchange.mechanism().name()).into_bytes(),
        );
        if self.caps.sasl_ir()
            && let Some(first) = exchange.initial_response()
        {
            line.push(b' ');
            line.extend_from_slice(first.as_bytes());
        }
        line.extend_from_slice(b"\r\n");
        self.write(&line, WHAT).await?;
        self.flush(WHAT).await?;
        drop(line);
        loop {
            match self.next_step(&mut flow, WHAT, &mut ignore).await? {
                Step::Done(done) => {
                    self.end();
                    return Ok(done);
                }
                Step::Proceed => {
                    let answer: Zeroizing<Vec<u8>> = match exchange.respond(b"") {
                        sasl::Step::Respond(r) => {
                            let mut a = Zeroizing::new(Vec::with_capacity(r.len() + 2));
                            a.extend_from_slice(r.as_bytes());
                            a.extend_from_slice(b"\r\n");
                            a
                        }
                        sasl::Step::Abort => Zeroizing::new(b"*\r\n".to_vec()),
                    };
                    self.write(&answer, WHAT).await?;
                    self.flush(WHAT).await?;
                }
                Step::Data(_) | Step::Bye(_) => {}
            }
        }
    }
}
