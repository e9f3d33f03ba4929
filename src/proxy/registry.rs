//! The session registry (DESIGN.md §2, §6): which authenticated IMAP sessions of this
//! process exist per user, and which mailbox each of them idles on, so that the proxy
//! can wake them when it stored a message itself (the IDLE wake).
//!
//! A session registers once the backend accepted its login
//! ([`SessionRegistry::register`]) and is forgotten when its [`Registration`] is dropped.
//! While its client idles it says on which mailbox ([`Registration::set_idle`]). A store
//! calls [`SessionRegistry::wake`], which never blocks: it signals each matching session
//! through a one-slot channel, so wakes that arrive faster than a session acts on them
//! coalesce into one.
//!
//! Names: users are compared lower-cased (as [`crate::proxy::state::UserStates`] does;
//! Dovecot's usual passdbs are case-insensitive), as the IMAP client logged in and as
//! the hook derives them from the recipient (`delivery.user_name`): a deployment where
//! the two differ (clients log in with the address, the hook uses local parts) gets no
//! wakes, only Dovecot's delayed notifications. Mailboxes are compared in the form
//! both sides put on the wire towards Dovecot, i.e. the `astring` decoded but still in
//! modified UTF-7 (RFC 3501 §5.1.3): the IMAP front keeps the name the client SELECTed
//! with its quoting or literal removed, and the delivery hook names `INBOX` or
//! `<root><sep>Chats`, which the mailbox writer sends as it is. `INBOX` matches in any
//! case (RFC 9051 §5.1); every other name only byte for byte, so a client that spells a
//! mailbox differently from the hook (another case on a case-insensitive server, another
//! encoding) is not woken and simply sees Dovecot's own, delayed, notification.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use dashmap::DashMap;
use tokio::sync::mpsc;

/// Sessions of one process at most, unless [`SessionRegistry::new`] is given another
/// bound: the IMAP front's own session limits keep the real number lower.
pub const DEFAULT_MAX_SESSIONS: usize = 100_000;

/// The authenticated IMAP sessions of this process, by user.
#[derive(Debug)]
pub struct SessionRegistry {
    users: DashMap<String, Vec<Arc<Entry>>>,
    /// Registered sessions, at most `max_sessions`.
    count: AtomicUsize,
    max_sessions: usize,
    next_id: AtomicU64,
}

/// One registered session, as the registry sees it.
#[derive(Debug)]
struct Entry {
    id: u64,
    /// The mailbox the session's client idles on, in wire form; `None` when not idling.
    idle: Mutex<Option<Box<[u8]>>>,
    /// Capacity one: a wake that finds the slot full is already pending.
    wake: mpsc::Sender<()>,
}

impl Entry {
    fn idles_on(&self, mailbox: &[u8]) -> bool {
        // A poisoned lock only means a panic elsewhere while holding it; the value is a
        // plain name and stays meaningful.
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.as_deref().is_some_and(|m| same_mailbox(m, mailbox))
    }
}

impl SessionRegistry {
    /// A registry for at most `max_sessions` sessions (at least one).
    pub fn new(max_sessions: usize) -> Self {
        Self {
            users: DashMap::new(),
            count: AtomicUsize::new(0),
            max_sessions: max_sessions.max(1),
            next_id: AtomicU64::new(1),
        }
    }

    /// Registers a session of `user`. `None` when the registry is full: the session
    /// then works as before, without wakes.
    pub fn register(self: &Arc<Self>, user: &str) -> Option<Registration> {
        let reserved = self
            .count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_sessions).then_some(n + 1)
            });
        if reserved.is_err() {
            return None;
        }
        let (wake, wakes) = mpsc::channel(1);
        let entry = Arc::new(Entry {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            idle: Mutex::new(None),
            wake,
        });
        let key = user.to_lowercase();
        self.users
            .entry(key.clone())
            .or_default()
            .push(entry.clone());
        Some(Registration {
            registry: self.clone(),
            user: key,
            entry,
            wakes,
        })
    }

    /// Wakes every session of `user` that idles on `mailbox` (wire form, see the module
    /// documentation); returns how many were signalled (a wake already pending counts).
    /// Never blocks beyond a map lookup.
    pub fn wake(&self, user: &str, mailbox: &str) -> usize {
        let Some(sessions) = self.users.get(&user.to_lowercase()) else {
            return 0;
        };
        let mut woken = 0;
        for entry in sessions.iter() {
            if !entry.idles_on(mailbox.as_bytes()) {
                continue;
            }
            match entry.wake.try_send(()) {
                Ok(()) | Err(mpsc::error::TrySendError::Full(())) => woken += 1,
                // The session is ending; its registration goes with it.
                Err(mpsc::error::TrySendError::Closed(())) => {}
            }
        }
        woken
    }

    /// Registered sessions.
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn deregister(&self, user: &str, id: u64) {
        let removed = self
            .users
            .get_mut(user)
            .map(|mut sessions| {
                let before = sessions.len();
                sessions.retain(|e| e.id != id);
                before != sessions.len()
            })
            .unwrap_or(false);
        self.users
            .remove_if(user, |_, sessions| sessions.is_empty());
        if removed {
            self.count.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Default for SessionRegistry {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_SESSIONS)
    }
}

/// A session's place in the registry; dropping it deregisters the session.
#[derive(Debug)]
pub struct Registration {
    registry: Arc<SessionRegistry>,
    /// The key: the user name lower-cased.
    user: String,
    entry: Arc<Entry>,
    wakes: mpsc::Receiver<()>,
}

impl Registration {
    /// Says on which mailbox (wire form) the client idles from now on; `None`: it does
    /// not idle.
    pub fn set_idle(&self, mailbox: Option<&[u8]>) {
        let mut idle = self.entry.idle.lock().unwrap_or_else(|e| e.into_inner());
        *idle = mailbox.map(Box::from);
    }

    /// Waits for the next wake. Cancel-safe (a wake is not lost when the future is
    /// dropped before it completes).
    pub async fn woken(&mut self) {
        // The registry holds the sender for as long as this registration exists, so the
        // channel cannot close under it.
        if self.wakes.recv().await.is_none() {
            std::future::pending::<()>().await;
        }
    }

    /// A wake that is already pending, taken without waiting.
    pub fn take_wake(&mut self) -> bool {
        self.wakes.try_recv().is_ok()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.deregister(&self.user, self.entry.id);
    }
}

/// Whether two wire-form mailbox names name the same mailbox: `INBOX` in any case,
/// everything else byte for byte.
pub fn same_mailbox(a: &[u8], b: &[u8]) -> bool {
    a == b || (a.eq_ignore_ascii_case(b"INBOX") && b.eq_ignore_ascii_case(b"INBOX"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(max: usize) -> Arc<SessionRegistry> {
        Arc::new(SessionRegistry::new(max))
    }

    #[test]
    fn inbox_matches_in_any_case_other_names_exactly() {
        assert!(same_mailbox(b"INBOX", b"inbox"));
        assert!(same_mailbox(b"InBoX", b"INBOX"));
        assert!(same_mailbox(b"COI/Chats", b"COI/Chats"));
        assert!(!same_mailbox(b"COI/Chats", b"coi/chats"));
        assert!(!same_mailbox(b"INBOX/Chats", b"inbox/Chats"));
        assert!(!same_mailbox(b"INBOX", b"INBOX "));
        assert!(!same_mailbox(b"", b"INBOX"));
    }

    #[tokio::test]
    async fn only_sessions_idling_on_the_mailbox_are_woken() {
        let registry = registry(10);
        let mut inbox = registry.register("Bob").unwrap();
        let mut chats = registry.register("bob").unwrap();
        let mut not_idling = registry.register("bob").unwrap();
        let mut other_user = registry.register("carol").unwrap();
        inbox.set_idle(Some(b"INBOX"));
        chats.set_idle(Some(b"COI/Chats"));
        other_user.set_idle(Some(b"INBOX"));

        assert_eq!(registry.wake("BOB", "inbox"), 1);
        assert!(inbox.take_wake());
        assert!(!chats.take_wake());
        assert!(!not_idling.take_wake());
        assert!(!other_user.take_wake());

        assert_eq!(registry.wake("bob", "COI/Chats"), 1);
        assert!(chats.take_wake());
        assert!(!inbox.take_wake());
        // Another case of a name other than INBOX is another mailbox.
        assert_eq!(registry.wake("bob", "coi/chats"), 0);
        assert_eq!(registry.wake("nobody", "INBOX"), 0);

        // No longer idling: no wake.
        inbox.set_idle(None);
        assert_eq!(registry.wake("bob", "INBOX"), 0);
        assert!(!inbox.take_wake());
    }

    #[tokio::test]
    async fn wakes_coalesce_and_never_block() {
        let registry = registry(10);
        let mut session = registry.register("alice").unwrap();
        session.set_idle(Some(b"INBOX"));
        for _ in 0..1000 {
            assert_eq!(registry.wake("alice", "INBOX"), 1);
        }
        assert!(session.take_wake());
        assert!(!session.take_wake(), "a thousand wakes are one");
        registry.wake("alice", "INBOX");
        tokio::time::timeout(std::time::Duration::from_secs(5), session.woken())
            .await
            .expect("a pending wake completes at once");
    }

    #[test]
    fn dropping_a_registration_deregisters_it() {
        let registry = registry(10);
        let first = registry.register("alice").unwrap();
        let second = registry.register("ALICE").unwrap();
        first.set_idle(Some(b"INBOX"));
        second.set_idle(Some(b"INBOX"));
        assert_eq!(registry.len(), 2);
        drop(first);
        assert_eq!(registry.len(), 1);
        assert_eq!(registry.wake("alice", "INBOX"), 1);
        drop(second);
        assert!(registry.is_empty());
        assert!(registry.users.is_empty(), "no empty user entries are kept");
        assert_eq!(registry.wake("alice", "INBOX"), 0);
    }

    #[test]
    fn the_registry_is_bounded() {
        let registry = registry(2);
        let a = registry.register("a").unwrap();
        let _b = registry.register("b").unwrap();
        assert!(registry.register("c").is_none(), "full");
        drop(a);
        let c = registry.register("c").expect("room again");
        c.set_idle(Some(b"INBOX"));
        assert_eq!(registry.wake("c", "INBOX"), 1);
        assert_eq!(registry.len(), 2);
    }

    #[test]
    fn a_zero_bound_still_admits_one_session() {
        let registry = registry(0);
        assert!(registry.register("a").is_some());
    }
}
