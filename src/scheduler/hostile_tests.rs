//! The scheduler with hostile values (issue 9, case 5): a server-given
//! delay of any size, an interval or a backoff base of any size, never
//! panics, and what a server asks for is clamped to [`MAX_SERVER_DELAY`].

use super::*;

const HOSTILE: [Duration; 6] = [
    Duration::ZERO,
    Duration::from_nanos(1),
    Duration::from_secs(260_000_000_000),
    Duration::from_secs(u64::MAX),
    Duration::MAX,
    Duration::new(u64::MAX / 2, 999_999_999),
];

#[test]
fn jitter_and_first_delay_are_total() {
    for d in HOSTILE {
        for r in [0, 1, 1000, 2000, 2001, u64::MAX, u64::MAX - 1] {
            let j = jitter(d, r);
            // Within ± 10 %, saturating at Duration::MAX.
            assert!(j >= d.mul_f64(0.89).min(d), "{d:?} {r} -> {j:?}");
            let f = first_delay(d, r);
            assert!(f <= FIRST_RUN_SPREAD, "{d:?} {r} -> {f:?}");
        }
    }
}

#[test]
fn a_server_delay_is_clamped_to_a_day() {
    let i = Duration::from_secs(300);
    for floor in HOSTILE {
        let r = failing(FailureKind::Transient, Some(floor))("a");
        for n in [0, 1, 2, 17, u32::MAX] {
            let d = next_delay(i, &r, n);
            assert!(
                d <= MAX_SERVER_DELAY.max(BACKOFF_CAP),
                "{floor:?} {n} -> {d:?}"
            );
            assert!(d >= floor.min(MAX_SERVER_DELAY), "{floor:?} {n} -> {d:?}");
        }
        let ok = Report {
            retry_after: Some(floor),
            ..Report::default()
        };
        assert_eq!(
            next_delay(i, &ok, 0),
            i.max(floor.min(MAX_SERVER_DELAY)),
            "{floor:?}"
        );
    }
    assert_eq!(server_floor(Some(Duration::MAX)), Some(MAX_SERVER_DELAY));
    assert_eq!(server_floor(None), None);
}

#[test]
fn a_huge_interval_or_backoff_base_does_not_panic() {
    for d in HOSTILE {
        let b = Backoff::scaled(d);
        let fail = failing(FailureKind::Transient, None)("a");
        let perm = failing(FailureKind::Permanent, None)("a");
        for n in [1, 40, u32::MAX] {
            b.next_delay(d, &fail, n);
            b.next_delay(d, &perm, n);
        }
        b.next_delay(d, &Report::default(), 0);
    }
}

/// Records the `next_in` of every finished pass.
#[derive(Default)]
struct NextIn(Mutex<Vec<Duration>>);
impl Observer for NextIn {
    fn finished(&self, _: Arc<Account>, _: Report, _: u32, next_in: Duration) -> BoxFuture<()> {
        self.0.lock().expect("lock").push(next_in);
        Box::pin(async {})
    }
}

/// A runner that asks for a wait of `u64::MAX` seconds (a LOGIN-DELAY of
/// 18446744073709551615, had the POP3 side not clamped it) keeps its task
/// alive: the account runs again after a day (and a tenth, with jitter).
#[tokio::test(start_paused = true)]
async fn an_endless_login_delay_waits_a_day_and_polls_again() {
    for ask in [Duration::from_secs(u64::MAX), Duration::MAX] {
        let script = Script::new(Duration::ZERO, move |_| Report {
            retry_after: Some(ask),
            ..Report::default()
        });
        let seen = Arc::new(NextIn::default());
        let mut s = Scheduler::new(Arc::new(ScriptRunner(script.clone())), seen.clone(), 1);
        s.apply(&[account("delay", "1m")]);
        tokio::time::sleep(MAX_SERVER_DELAY.mul_f64(2.5)).await;
        s.shutdown(Duration::from_secs(1)).await;
        let runs = script.times("delay").len();
        assert!((2..=3).contains(&runs), "{ask:?}: {runs} runs");
        let next = seen.0.lock().expect("lock").clone();
        assert!(
            next.iter()
                .all(|d| *d >= MAX_SERVER_DELAY && *d <= MAX_SERVER_DELAY.mul_f64(1.1)),
            "{next:?}"
        );
    }
}
