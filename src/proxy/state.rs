//! The user state cache (DESIGN.md §2): each user's COI configuration as last read from
//! the backend, so that a delivery does not log in to Dovecot just to learn it.
//!
//! The backend is the truth (DESIGN.md §1.2): an entry is dropped when a write of that
//! configuration passes through this proxy's IMAP front, and expires after [`TTL`]
//! anyway, which bounds how long a change made through another replica (or directly in
//! Dovecot) goes unseen. Bounded: at [`MAX_USERS`] entries the cache is cleared rather
//! than grown (a crude but O(1) eviction; the next deliveries refill it).

use std::time::Duration;

use dashmap::DashMap;
use tokio::time::Instant;

use crate::coi::config::UserConfig;

/// How long an entry is trusted without a write through this proxy: a minute of
/// staleness for a change made elsewhere, one backend read per user per minute at most.
pub const TTL: Duration = Duration::from_secs(60);

/// Most users cached: an entry is ~100 bytes, so 100 000 users cost ~10 MB.
pub const MAX_USERS: usize = 100_000;

/// Cached COI configurations by user name (lower-cased: Dovecot user names are
/// case-insensitive in the usual passdbs).
#[derive(Debug, Default)]
pub struct UserStates {
    map: DashMap<String, (UserConfig, Instant)>,
}

impl UserStates {
    pub fn new() -> Self {
        Self::default()
    }

    /// The cached configuration, if fresh.
    pub fn get(&self, user: &str) -> Option<UserConfig> {
        let key = user.to_lowercase();
        let entry = self.map.get(&key)?;
        let (config, stored) = entry.value();
        if stored.elapsed() <= TTL {
            return Some(config.clone());
        }
        drop(entry);
        self.map.remove(&key);
        None
    }

    /// Remembers what was read from the backend.
    pub fn put(&self, user: &str, config: UserConfig) {
        if self.map.len() >= MAX_USERS {
            self.map.clear();
        }
        self.map
            .insert(user.to_lowercase(), (config, Instant::now()));
    }

    /// Forgets a user's entry: its configuration was just changed through this proxy.
    pub fn invalidate(&self, user: &str) {
        self.map.remove(&user.to_lowercase());
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coi::config::MessageFilter;

    fn active() -> UserConfig {
        UserConfig {
            enabled: true,
            message_filter: MessageFilter::Active,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn entries_expire_and_are_invalidated_case_insensitively() {
        let states = UserStates::new();
        states.put("Alice", active());
        assert_eq!(states.get("alice"), Some(active()));
        states.invalidate("ALICE");
        assert_eq!(states.get("alice"), None);
        states.put("bob", active());
        tokio::time::advance(TTL + Duration::from_secs(1)).await;
        assert_eq!(states.get("bob"), None);
        assert!(states.is_empty(), "the stale entry is dropped on read");
    }
}
