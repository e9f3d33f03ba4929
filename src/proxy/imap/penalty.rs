//! Per-address authentication penalty (SECURITY-CASES case 30).
//!
//! Behind the proxy every login reaches Dovecot from the proxy's own address unless
//! Dovecot trusts it for `x-originating-ip`; and the proxy answers some refusals itself.
//! So the proxy applies Dovecot's rule itself: after a failed authentication, the next
//! attempt from the same client address waits, 2 s doubling up to 15 s by default. The
//! table is bounded and forgets addresses that stopped failing; it is a cache, so losing
//! it on restart only resets penalties.

use std::net::IpAddr;
use std::time::Duration;

use dashmap::DashMap;
use tokio::time::Instant;

/// The largest wait, as Dovecot's anvil caps its auth penalty.
pub const MAX_PENALTY: Duration = Duration::from_secs(15);

/// An address without failures for this long starts from scratch again.
const FORGET_AFTER: Duration = Duration::from_secs(300);

/// Addresses tracked at once; beyond it, stale entries are dropped first, and new
/// addresses go untracked (the per-session limit still applies to them).
const MAX_ADDRESSES: usize = 100_000;

#[derive(Clone, Copy, Debug)]
struct Failures {
    count: u32,
    last: Instant,
}

/// The penalty table shared by all sessions of the IMAP front.
#[derive(Debug)]
pub struct AuthPenalties {
    base: Duration,
    table: DashMap<IpAddr, Failures>,
}

impl AuthPenalties {
    pub fn new(base: Duration) -> Self {
        Self {
            base,
            table: DashMap::new(),
        }
    }

    /// Until when the next authentication from `ip` must wait, if it must.
    pub fn wait_until(&self, ip: IpAddr, now: Instant) -> Option<Instant> {
        let failures = *self.table.get(&ip)?;
        if now.duration_since(failures.last) >= FORGET_AFTER {
            self.table.remove(&ip);
            return None;
        }
        let until = failures.last + self.penalty(failures.count);
        (until > now).then_some(until)
    }

    /// Records a failed authentication from `ip`.
    pub fn failed(&self, ip: IpAddr, now: Instant) {
        if self.table.len() >= MAX_ADDRESSES && !self.table.contains_key(&ip) {
            self.table
                .retain(|_, f| now.duration_since(f.last) < FORGET_AFTER);
            if self.table.len() >= MAX_ADDRESSES {
                tracing::warn!("authentication penalty table full; address not tracked");
                return;
            }
        }
        let mut entry = self.table.entry(ip).or_insert(Failures {
            count: 0,
            last: now,
        });
        entry.count = entry.count.saturating_add(1);
        entry.last = now;
    }

    /// A successful authentication clears the address.
    pub fn succeeded(&self, ip: IpAddr) {
        self.table.remove(&ip);
    }

    /// `base · 2^(failures − 1)`, capped at [`MAX_PENALTY`].
    fn penalty(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(16);
        self.base.saturating_mul(1 << doublings).min(MAX_PENALTY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[tokio::test(start_paused = true)]
    async fn penalty_doubles_per_failure_up_to_the_cap() {
        let table = AuthPenalties::new(Duration::from_secs(2));
        let now = Instant::now();
        assert_eq!(table.wait_until(ip(1), now), None, "no failures, no wait");
        let mut expected = Vec::new();
        for _ in 0..6 {
            table.failed(ip(1), now);
            expected.push(table.wait_until(ip(1), now).map(|t| t - now));
        }
        let secs = |s| Some(Duration::from_secs(s));
        assert_eq!(
            expected,
            vec![secs(2), secs(4), secs(8), secs(15), secs(15), secs(15)]
        );
        assert_eq!(
            table.wait_until(ip(2), now),
            None,
            "other addresses are not affected"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_wait_ends_and_success_or_time_forgets() {
        let table = AuthPenalties::new(Duration::from_secs(2));
        let start = Instant::now();
        table.failed(ip(1), start);
        assert_eq!(
            table.wait_until(ip(1), start + Duration::from_secs(3)),
            None,
            "penalty over"
        );
        table.failed(ip(1), start);
        table.succeeded(ip(1));
        assert_eq!(table.wait_until(ip(1), start), None, "success clears");
        table.failed(ip(2), start);
        table.failed(ip(2), start);
        let later = start + FORGET_AFTER;
        assert_eq!(table.wait_until(ip(2), later), None);
        table.failed(ip(2), later);
        assert_eq!(
            table.wait_until(ip(2), later),
            Some(later + Duration::from_secs(2)),
            "counting starts over"
        );
    }
}
