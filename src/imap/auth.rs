//! Logging in: the only place in `imap` that reads `settings.auth` and
//! the credential.
//!
//! Why one place: the password or token must be exposed only while a
//! command is written (guarantee 7), and the choice of mechanism (`auth =
//! auto | login | plain | xoauth2 | oauthbearer`) and the refusal to send a
//! secret without TLS belong together. The SASL encodings themselves are
//! [`crate::sasl`]'s, shared with POP3.
//!
//! `auto` uses AUTHENTICATE PLAIN when offered, else LOGIN, unless the
//! server says LOGINDISABLED. Every AUTHENTICATE sends its first response
//! with the command when the server offers SASL-IR (RFC 4959), after the
//! first `+` otherwise. A refusal is [`ImapErrorKind::Auth`] (permanent: fix
//! the configuration) unless its code says it is temporary
//! (`[UNAVAILABLE]`...), which stays transient. With XOAUTH2 or OAUTHBEARER
//! a refusal is [`ImapErrorKind::TokenRefused`], carrying what the server's
//! error challenge (base64 JSON, answered as [`crate::sasl`] says) said.
//! Nothing here is traced: the command line with its SASL-IR and every
//! response are written without a log line at any level.

use secrecy::zeroize::Zeroizing;
use secrecy::{ExposeSecret, SecretString};

use super::conn::{COMMAND_BUDGET, Conn, ImapIo, ignore};
use super::error::{self, ImapError, ImapErrorKind};
use super::proto::command::Part;
use super::proto::encode;
use super::proto::flow::{Flow, Step};
use super::proto::reply::{Done, State};
use crate::config::{Credential, ImapAuth, Mechanism as _, ServerSettings};
use crate::sasl;

/// Most `+` challenges one AUTHENTICATE may send; a server asking for more
/// is not speaking any mechanism we run.
const MAX_SASL_ROUNDS: usize = 4;

/// Which command logs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Login,
    Sasl(sasl::Mechanism),
}

impl Method {
    /// For logs and `check`: "LOGIN", "AUTHENTICATE PLAIN"...
    pub(crate) fn name(self) -> &'static str {
        match self {
            Method::Login => "LOGIN",
            Method::Sasl(sasl::Mechanism::Plain) => "AUTHENTICATE PLAIN",
            Method::Sasl(sasl::Mechanism::Login) => "AUTHENTICATE LOGIN",
            Method::Sasl(sasl::Mechanism::XOAuth2) => "AUTHENTICATE XOAUTH2",
            Method::Sasl(sasl::Mechanism::OAuthBearer) => "AUTHENTICATE OAUTHBEARER",
        }
    }
}

impl<S: ImapIo> Conn<S> {
    /// Logs in as configured, with `credential` or (without one) the
    /// settings' own, resolved now. Refuses to send a secret without TLS
    /// unless allowed; picks the mechanism; refreshes capabilities. Returns
    /// the method's name.
    pub(crate) async fn authenticate(
        &mut self,
        settings: &ServerSettings<ImapAuth>,
        tls: bool,
        credential: Option<Credential>,
    ) -> Result<&'static str, ImapError> {
        if !tls && !settings.allow_plaintext_password {
            return Err(ImapError::new(
                self.server.clone(),
                ImapErrorKind::PlaintextRefused,
            ));
        }
        let method = match settings.auth {
            ImapAuth::Plain => Method::Sasl(sasl::Mechanism::Plain),
            ImapAuth::XOAuth2 => Method::Sasl(sasl::Mechanism::XOAuth2),
            ImapAuth::OAuthBearer => Method::Sasl(sasl::Mechanism::OAuthBearer),
            ImapAuth::Login => Method::Login,
            ImapAuth::Auto if self.caps.auth("PLAIN") => Method::Sasl(sasl::Mechanism::Plain),
            ImapAuth::Auto => Method::Login,
        };
        if method == Method::Login && self.caps.login_disabled() {
            return Err(ImapError::new(self.server.clone(), ImapErrorKind::Auth { text: "the server disables LOGIN here (LOGINDISABLED) and PLAIN was not chosen or offered"
                    .into() }));
        }
        let user = settings.username.as_str();
        let credential = match credential {
            Some(c) => c,
            None => settings.credential().await.map_err(|source| {
                ImapError::new(self.server.clone(), ImapErrorKind::Credential { source })
            })?,
        };
        let secret = self.secret_for(settings.auth, method, credential)?;
        let secret = secret.expose_secret();
        let (done, exchange) = match method {
            Method::Login => {
                let parts = vec![
                    Part::text("LOGIN "),
                    Part::arg(encode::string_arg(user.as_bytes())),
                    Part::text(" "),
                    Part::arg(encode::string_arg(secret.as_bytes())),
                ];
                (self.simple("logging in", parts).await?, None)
            }
            Method::Sasl(mechanism) => {
                let mut exchange = match mechanism {
                    sasl::Mechanism::XOAuth2 => sasl::Exchange::xoauth2(user, secret),
                    sasl::Mechanism::OAuthBearer => {
                        let ep = &settings.endpoint;
                        sasl::Exchange::oauthbearer(user, &ep.host, ep.port, secret)
                    }
                    sasl::Mechanism::Plain | sasl::Mechanism::Login => {
                        sasl::Exchange::plain(user, secret)
                    }
                };
                let done = self.authenticate_sasl(&mut exchange).await?;
                (done, Some(exchange))
            }
        };
        self.logged_in(done, &settings.username, method, exchange.as_ref())
            .await?;
        Ok(method.name())
    }

    /// The secret `method` presents: a password for LOGIN and PLAIN, an
    /// access token for XOAUTH2 and OAUTHBEARER; the other kind is a
    /// configuration error, said in words.
    fn secret_for(
        &self,
        auth: ImapAuth,
        method: Method,
        credential: Credential,
    ) -> Result<SecretString, ImapError> {
        let needs_bearer = matches!(method, Method::Sasl(m) if m.is_oauth());
        match credential {
            Credential::Password(p) if !needs_bearer => Ok(p),
            Credential::Bearer(t) if needs_bearer => Ok(t),
            other => Err(ImapError::new(
                self.server.clone(),
                ImapErrorKind::WrongCredential {
                    auth: auth.name(),
                    got: other.kind(),
                },
            )),
        }
    }

    /// What the login's completion means.
    async fn logged_in(
        &mut self,
        done: Done,
        user: &str,
        method: Method,
        exchange: Option<&sasl::Exchange>,
    ) -> Result<(), ImapError> {
        if done.state == State::Ok {
            tracing::debug!(
                server = %self.server,
                user = %user,
                mechanism = method.name(),
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
        let kind = match exchange {
            Some(x) if x.mechanism().is_oauth() => ImapErrorKind::TokenRefused {
                mechanism: x.mechanism().name(),
                text,
                detail: x.server_error().map(ToString::to_string),
            },
            _ => ImapErrorKind::Auth { text },
        };
        Err(ImapError::new(self.server.clone(), kind))
    }

    /// AUTHENTICATE with a SASL exchange, its first response sent with the
    /// command when the server offers SASL-IR; a challenge the mechanism
    /// cannot answer is cancelled with `*`.
    async fn authenticate_sasl(
        &mut self,
        exchange: &mut sasl::Exchange,
    ) -> Result<Done, ImapError> {
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
        let mut rounds = 0usize;
        loop {
            match self.next_step(&mut flow, WHAT, &mut ignore).await? {
                Step::Done(done) => {
                    self.end();
                    return Ok(done);
                }
                Step::Proceed(challenge) => {
                    rounds = rounds.saturating_add(1);
                    if rounds > MAX_SASL_ROUNDS {
                        return Err(ImapError::new(
                            self.server.clone(),
                            ImapErrorKind::Protocol {
                                what: format!(
                                    "more than {MAX_SASL_ROUNDS} SASL challenges to AUTHENTICATE {}",
                                    exchange.mechanism().name()
                                ),
                            },
                        ));
                    }
                    let answer: Zeroizing<Vec<u8>> = match exchange.respond(&challenge) {
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
                Step::Data(_) | Step::Bye(_) | Step::Other(..) => {}
            }
        }
    }
}
