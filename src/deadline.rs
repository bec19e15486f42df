//! Every read and write on a server connection has a deadline (the server's
//! `timeout`); this is the one place that turns "the time ran out" into the
//! caller's error.
//!
//! Why: without it each protocol module wrote its own
//! `match tokio::time::timeout(..) { Ok(Ok(x)) .., Ok(Err(e)) .., Err(_) .. }`
//! (eight of them across `imap` and `pop3`), and IMAP had a second layer of
//! timeouts in the stream itself. With [`within`] a call site states the
//! deadline, the operation (whose own errors it has already mapped) and the
//! error for an elapsed deadline, and nothing else.
//!
//! A future cut off by its deadline is dropped mid-way: whatever it had
//! written or read is lost, so the caller must treat the connection as
//! unusable afterwards (both protocol modules do).

use std::future::Future;
use std::time::Duration;

/// Runs `operation` for at most `limit`. Its own error is returned as it
/// is; an elapsed deadline becomes `on_elapsed()`.
///
/// ```
/// # use std::time::Duration;
/// # async fn demo(stream: &mut tokio::io::DuplexStream) -> Result<(), String> {
/// use tokio::io::AsyncWriteExt as _;
/// popferry::deadline::within(
///     Duration::from_secs(60),
///     async { stream.write_all(b"a1 NOOP\r\n").await.map_err(|e| e.to_string()) },
///     || "no progress within 60s".to_owned(),
/// )
/// .await
/// # }
/// ```
pub async fn within<T, E, F>(
    limit: Duration,
    operation: F,
    on_elapsed: impl FnOnce() -> E,
) -> Result<T, E>
where
    F: Future<Output = Result<T, E>>,
{
    match tokio::time::timeout(limit, operation).await {
        Ok(result) => result,
        Err(_elapsed) => Err(on_elapsed()),
    }
}

/// Like [`within`] for an operation that cannot fail by itself (say a
/// best-effort TLS close): `None` when the deadline elapsed.
pub async fn within_or_none<T, F>(limit: Duration, operation: F) -> Option<T>
where
    F: Future<Output = T>,
{
    tokio::time::timeout(limit, operation).await.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    enum E {
        Failed(&'static str),
        Late(Duration),
    }

    #[tokio::test(start_paused = true)]
    async fn a_result_in_time_passes_through() {
        let limit = Duration::from_secs(5);
        let ok = within(limit, async { Ok::<_, E>(7) }, || E::Late(limit)).await;
        assert_eq!(ok, Ok(7));
        let err = within(limit, async { Err::<u8, _>(E::Failed("io")) }, || {
            E::Late(limit)
        })
        .await;
        assert_eq!(err, Err(E::Failed("io")));
    }

    #[tokio::test(start_paused = true)]
    async fn an_elapsed_deadline_is_the_callers_error() {
        let limit = Duration::from_secs(5);
        let started = tokio::time::Instant::now();
        let late = within(
            limit,
            async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok::<_, E>(())
            },
            || E::Late(limit),
        )
        .await;
        assert_eq!(late, Err(E::Late(limit)));
        assert_eq!(started.elapsed(), limit);
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_bounds_the_whole_operation_not_each_step() {
        let limit = Duration::from_secs(5);
        let late = within(
            limit,
            async {
                for _ in 0..4 {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                Ok::<_, E>(())
            },
            || E::Late(limit),
        )
        .await;
        assert_eq!(late, Err(E::Late(limit)));
    }

    #[tokio::test(start_paused = true)]
    async fn infallible_operations_give_none_when_late() {
        let limit = Duration::from_millis(10);
        assert_eq!(within_or_none(limit, async { 3 }).await, Some(3));
        let late = within_or_none(limit, tokio::time::sleep(Duration::from_secs(1))).await;
        assert_eq!(late, None);
    }
}
