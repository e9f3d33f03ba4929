//! The mailbox writer: a pooled IMAP client that logs in to Dovecot as the master user on
//! behalf of a user and stores mail and contacts there (DESIGN §2). The delivery hook and
//! the peer links use it; it is the proxy's only way to write into a mailbox itself.
//!
//! # Login
//!
//! `AUTHENTICATE PLAIN` (RFC 4616) with authzid = the user and authcid = the master user
//! (Dovecot's `master = yes` passdb), the initial response inline when Dovecot advertises
//! SASL-IR. The master password is sent only there and never logged. Dovecot must
//! advertise UIDPLUS after login ([`WriterError::Unsupported`] otherwise), so that every
//! APPEND is confirmed with the UID it got.
//!
//! # Durability
//!
//! A write counts only when Dovecot's own tagged OK arrived (SECURITY-CASES §4 rule 7);
//! every `Ok` of this module is one. An APPEND body is streamed as a literal, never
//! buffered, and its last bytes are held back until the body has ended at exactly the
//! announced length; otherwise the connection is cut mid-literal, so Dovecot discards
//! the APPEND and no truncated message is ever stored.
//!
//! # Pool
//!
//! [`MailboxWriter::session`] checks out a logged-in connection for a user: an idle one
//! of that user if one is alive, else a new one. At most `max_connections` exist at once
//! (idle ones included); when all are taken, the oldest idle connection of another user
//! is closed to make room, or the caller waits up to the connect timeout. A
//! [`WriterSession`] goes back to the pool when dropped, and is kept only if it is clean:
//! no command was left half-done (an error, or a cancelled future), Dovecot did not say
//! BYE, it is younger than `max_lifetime`, and the user has fewer than
//! `max_idle_per_user` idle connections. Idle connections are closed after
//! `idle_timeout`, checked whenever the pool is used, and one that received anything
//! while idle (a BYE at shutdown) or was closed is never handed out. (One that dies
//! between that check and its use fails the operation with a transient error.)
//!
//! Operations never pipeline: one command at a time, each with its own tag, each reply
//! awaited under the reply timeout. Untagged responses an operation does not need are
//! skipped, literals included, without being buffered.

mod config;
mod conn;
mod error;
mod ops;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use tokio::io::AsyncRead;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tokio::time::{timeout_at, Instant};
use tracing::debug;

pub use self::config::{
    MasterPassword, WriterConfig, WriterTls, DEFAULT_CONNECT_TIMEOUT, DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_IDLE_PER_USER, DEFAULT_MAX_LIFETIME,
    DEFAULT_MAX_RESPONSE_BYTES, DEFAULT_REPLY_TIMEOUT,
};
pub use self::error::{
    BodyError, ProtocolViolation, Refusal, RefusalStatus, ResponseCode, WriterError,
};
pub use crate::proto::imap::client::{AppendUid, ArgumentError, InternalDate, SearchKey};

use self::conn::Conn;

/// The pool of connections to Dovecot. Create one per process with [`MailboxWriter::new`]
/// and share the `Arc`.
pub struct MailboxWriter {
    config: WriterConfig,
    /// One permit per open connection, idle or in use.
    slots: Arc<Semaphore>,
    /// Idle connections per user, most recently used last.
    idle: Mutex<HashMap<String, Vec<Conn>>>,
    /// Callers waiting for a slot: while any wait, returned connections are closed
    /// rather than kept idle, so the slot goes to them.
    waiting: AtomicUsize,
    counters: Counters,
}

impl MailboxWriter {
    /// Creates the pool. No connection is opened until the first session.
    pub fn new(config: WriterConfig) -> Arc<MailboxWriter> {
        // Zero would make every session wait for a slot that never comes.
        let slots = config.max_connections.max(1);
        Arc::new(MailboxWriter {
            config,
            slots: Arc::new(Semaphore::new(slots)),
            idle: Mutex::new(HashMap::new()),
            waiting: AtomicUsize::new(0),
            counters: Counters::default(),
        })
    }

    /// The configuration the pool was created with.
    pub fn config(&self) -> &WriterConfig {
        &self.config
    }

    /// A logged-in connection for `user`: an idle one if one is alive, else a new one.
    ///
    /// Errors: [`WriterError::InvalidArgument`] for an empty user name or one with
    /// control characters; [`WriterError::PoolTimeout`] when no slot frees up within the
    /// connect timeout; otherwise the connect or login failure.
    pub async fn session(self: &Arc<Self>, user: &str) -> Result<WriterSession, WriterError> {
        if user.is_empty() || user.chars().any(char::is_control) {
            return Err(WriterError::InvalidArgument(ArgumentError::InvalidUser));
        }
        if let Some(conn) = self.take_idle(user).await {
            self.counters.reused.fetch_add(1, Ordering::Relaxed);
            return Ok(self.wrap(user, conn));
        }
        let slot = self.slot().await?;
        match Conn::open(&self.config, user, slot).await {
            Ok(conn) => {
                self.counters.opened.fetch_add(1, Ordering::Relaxed);
                debug!(user, "mailbox writer connection opened");
                Ok(self.wrap(user, conn))
            }
            Err(error) => {
                self.counters.open_failures.fetch_add(1, Ordering::Relaxed);
                debug!(user, %error, "mailbox writer connection failed");
                Err(error)
            }
        }
    }

    /// A snapshot of the pool's counters.
    pub fn stats(&self) -> WriterStats {
        let idle = self.lock_idle().values().map(Vec::len).sum();
        let slots = self.config.max_connections.max(1);
        WriterStats {
            connections_opened: self.counters.opened.load(Ordering::Relaxed),
            connections_reused: self.counters.reused.load(Ordering::Relaxed),
            connections_closed: self.counters.closed.load(Ordering::Relaxed),
            open_failures: self.counters.open_failures.load(Ordering::Relaxed),
            open: slots.saturating_sub(self.slots.available_permits()),
            idle,
        }
    }

    /// Closes every idle connection (at shutdown, or after the backend was replaced).
    pub fn close_idle(&self) {
        let closed: Vec<Conn> = self.lock_idle().drain().flat_map(|(_, c)| c).collect();
        self.count_closed(closed.len());
    }

    fn wrap(self: &Arc<Self>, user: &str, conn: Conn) -> WriterSession {
        WriterSession {
            writer: Arc::clone(self),
            user: user.to_owned(),
            conn: Some(conn),
        }
    }

    /// Takes a usable idle connection of `user`, closing stale and dead ones on the way.
    async fn take_idle(&self, user: &str) -> Option<Conn> {
        loop {
            let mut conn = self.pop_idle(user)?;
            // Lets the runtime poll its I/O driver first: a BYE or close that arrived
            // while the connection sat idle is only seen once the driver has noticed it.
            tokio::task::yield_now().await;
            if conn.idle_and_alive() {
                return Some(conn);
            }
            debug!(user, "idle mailbox writer connection was closed by Dovecot");
            drop(conn);
            self.count_closed(1);
        }
    }

    /// The most recently used idle connection of `user`, after closing expired ones.
    fn pop_idle(&self, user: &str) -> Option<Conn> {
        let now = Instant::now();
        let mut closed = Vec::new();
        let found = {
            let mut idle = self.lock_idle();
            self.prune(&mut idle, now, &mut closed);
            let found = idle.get_mut(user).and_then(Vec::pop);
            if idle.get(user).is_some_and(Vec::is_empty) {
                idle.remove(user);
            }
            found
        };
        // Sockets are closed outside the lock.
        self.count_closed(closed.len());
        drop(closed);
        found
    }

    /// Moves expired idle connections into `closed`.
    fn prune(&self, idle: &mut HashMap<String, Vec<Conn>>, now: Instant, closed: &mut Vec<Conn>) {
        idle.retain(|_, list| {
            let (keep, expired): (Vec<Conn>, Vec<Conn>) = std::mem::take(list)
                .into_iter()
                .partition(|c| self.fresh(c, now));
            closed.extend(expired);
            *list = keep;
            !list.is_empty()
        });
    }

    fn fresh(&self, conn: &Conn, now: Instant) -> bool {
        now.duration_since(conn.opened) < self.config.max_lifetime
            && now.duration_since(conn.idle_since) < self.config.idle_timeout
    }

    /// A slot for a new connection: free, or freed by closing the oldest idle
    /// connection, or released by another session within the connect timeout.
    async fn slot(&self) -> Result<OwnedSemaphorePermit, WriterError> {
        let deadline = Instant::now() + self.config.connect_timeout;
        // Counted before looking, so a connection returned meanwhile is closed (and its
        // slot freed) rather than parked idle while we wait.
        let _waiting = Waiting::new(&self.waiting);
        loop {
            match Arc::clone(&self.slots).try_acquire_owned() {
                Ok(slot) => return Ok(slot),
                Err(TryAcquireError::NoPermits) => {}
                // The semaphore is never closed.
                Err(TryAcquireError::Closed) => return Err(WriterError::PoolTimeout),
            }
            if self.close_oldest_idle() {
                continue;
            }
            return match timeout_at(deadline, Arc::clone(&self.slots).acquire_owned()).await {
                Ok(Ok(slot)) => Ok(slot),
                Ok(Err(_)) | Err(_) => Err(WriterError::PoolTimeout),
            };
        }
    }

    /// Closes the idle connection unused the longest; false if there is none.
    fn close_oldest_idle(&self) -> bool {
        let oldest = {
            let mut idle = self.lock_idle();
            let Some((user, index)) = idle
                .iter()
                .flat_map(|(user, list)| list.iter().enumerate().map(move |(i, c)| (user, i, c)))
                .min_by_key(|(_, _, c)| c.idle_since)
                .map(|(user, i, _)| (user.clone(), i))
            else {
                return false;
            };
            let Some(list) = idle.get_mut(&user) else {
                return false;
            };
            let conn = list.remove(index);
            if list.is_empty() {
                idle.remove(&user);
            }
            conn
        };
        drop(oldest);
        self.count_closed(1);
        true
    }

    /// Takes a connection back from a dropped session.
    fn give_back(&self, user: String, mut conn: Conn) {
        let now = Instant::now();
        let reusable = !conn.in_flight
            && !conn.saw_bye()
            && now.duration_since(conn.opened) < self.config.max_lifetime
            && self.config.max_idle_per_user > 0
            && self.waiting.load(Ordering::Relaxed) == 0;
        if !reusable {
            debug!(
                user,
                in_flight = conn.in_flight,
                bye = conn.saw_bye(),
                "mailbox writer connection closed"
            );
            drop(conn);
            self.count_closed(1);
            return;
        }
        conn.idle_since = now;
        let mut closed = Vec::new();
        {
            let mut idle = self.lock_idle();
            self.prune(&mut idle, now, &mut closed);
            let list = idle.entry(user).or_default();
            if list.len() < self.config.max_idle_per_user {
                list.push(conn);
            } else {
                closed.push(conn);
            }
        }
        self.count_closed(closed.len());
    }

    fn count_closed(&self, n: usize) {
        self.counters.closed.fetch_add(n as u64, Ordering::Relaxed);
    }

    fn lock_idle(&self) -> MutexGuard<'_, HashMap<String, Vec<Conn>>> {
        // The map stays consistent even if a holder panicked: every change is a single
        // push, pop or remove.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for MailboxWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailboxWriter")
            .field("config", &self.config)
            .field("stats", &self.stats())
            .finish()
    }
}

/// Counters of the pool, for metrics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Connections opened and logged in.
    pub connections_opened: u64,
    /// Sessions served by an idle connection instead of a new one.
    pub connections_reused: u64,
    /// Connections closed: broken, BYE, expired, dead while idle, over the idle limit,
    /// or to make room.
    pub connections_closed: u64,
    /// Connection attempts that failed (connect, TLS, greeting, login).
    pub open_failures: u64,
    /// Connections open now, idle or in use.
    pub open: usize,
    /// Idle connections now.
    pub idle: usize,
}

#[derive(Debug, Default)]
struct Counters {
    opened: AtomicU64,
    reused: AtomicU64,
    closed: AtomicU64,
    open_failures: AtomicU64,
}

/// Counts a caller waiting for a slot, for as long as it lives (cancellation included).
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Waiting(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What [`WriterSession::create_if_missing`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CreateOutcome {
    /// The mailbox was created.
    Created,
    /// It existed already (`NO [ALREADYEXISTS]`).
    Existed,
}

/// What SELECT or EXAMINE reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SelectedMailbox {
    /// Number of messages.
    pub exists: u32,
    /// `UIDVALIDITY`, if reported.
    pub uid_validity: Option<u32>,
    /// `UIDNEXT`, if reported.
    pub uid_next: Option<u32>,
    /// EXAMINE, or SELECT answered `[READ-ONLY]`.
    pub read_only: bool,
}

/// A logged-in connection for one user, checked out of the pool. Dropping it returns the
/// connection (if clean, see the module documentation).
///
/// Every operation is one command whose success is Dovecot's tagged OK. After an error
/// that left the connection in an unknown state it is closed at once, and later
/// operations fail with [`WriterError::SessionBroken`]; a NO or BAD leaves it usable.
pub struct WriterSession {
    writer: Arc<MailboxWriter>,
    user: String,
    conn: Option<Conn>,
}

impl WriterSession {
    /// The user this session is logged in as.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// CREATE, treating `NO [ALREADYEXISTS]` as success; then SUBSCRIBE if `subscribe`
    /// (also when the mailbox existed). `mailbox` is the wire name (modified UTF-7,
    /// hierarchy separator included).
    pub async fn create_if_missing(
        &mut self,
        mailbox: &str,
        subscribe: bool,
    ) -> Result<CreateOutcome, WriterError> {
        let result = ops::create(self.conn()?, mailbox, subscribe).await;
        self.settle(result)
    }

    /// APPEND of a message of exactly `len` bytes read from `body`, streamed as a
    /// literal (non-synchronising when Dovecot advertises LITERAL+). `body` must end
    /// (read returns 0) right after `len` bytes; a body that ends early, goes on, fails
    /// or stalls for the reply timeout is a [`WriterError::Body`], the connection is
    /// cut mid-literal and nothing is stored.
    ///
    /// Returns Dovecot's `APPENDUID`. A missing mailbox is `NO [TRYCREATE]`
    /// ([`WriterError::response_code`]).
    pub async fn append(
        &mut self,
        mailbox: &str,
        flags: &[&str],
        internal_date: Option<InternalDate>,
        len: u64,
        mut body: impl AsyncRead + Unpin + Send,
    ) -> Result<AppendUid, WriterError> {
        let result = ops::append(self.conn()?, mailbox, flags, internal_date, len, &mut body).await;
        self.settle(result)
    }

    /// SELECT (read-write).
    pub async fn select(&mut self, mailbox: &str) -> Result<SelectedMailbox, WriterError> {
        let result = ops::select(self.conn()?, mailbox, false).await;
        self.settle(result)
    }

    /// EXAMINE (read-only: fetching bodies sets no `\Seen`, nothing can be expunged).
    pub async fn examine(&mut self, mailbox: &str) -> Result<SelectedMailbox, WriterError> {
        let result = ops::select(self.conn()?, mailbox, true).await;
        self.settle(result)
    }

    /// The hierarchy separator of the personal namespace, from `LIST "" ""` (RFC 9051
    /// §6.3.9); `None` for a flat namespace (NIL).
    pub async fn hierarchy_separator(&mut self) -> Result<Option<u8>, WriterError> {
        let result = ops::hierarchy_separator(self.conn()?).await;
        self.settle(result)
    }

    /// UID SEARCH in the selected mailbox; the UIDs found, ascending. Keys are ANDed;
    /// `CHARSET UTF-8` is added when a value is not ASCII.
    pub async fn uid_search(&mut self, criteria: &[SearchKey]) -> Result<Vec<u32>, WriterError> {
        let result = ops::uid_search(self.conn()?, criteria).await;
        self.settle(result)
    }

    /// UID FETCH of whole messages (`BODY.PEEK[]`, so `\Seen` is not set), by UID
    /// ascending. UIDs that no longer exist are missing from the result. The bodies
    /// together may be at most `max_response_bytes`, else
    /// [`WriterError::ResponseTooLarge`].
    pub async fn uid_fetch_bodies(
        &mut self,
        uids: &[u32],
    ) -> Result<Vec<(u32, Bytes)>, WriterError> {
        let max = self.writer.config.max_response_bytes;
        let result = ops::uid_fetch_bodies(self.conn()?, uids, max).await;
        self.settle(result)
    }

    /// UID STORE `+FLAGS.SILENT`.
    pub async fn uid_store_add_flags(
        &mut self,
        uids: &[u32],
        flags: &[&str],
    ) -> Result<(), WriterError> {
        let result = ops::uid_store_add_flags(self.conn()?, uids, flags).await;
        self.settle(result)
    }

    /// UID EXPUNGE (RFC 4315): removes those of `uids` that have `\Deleted` set, and
    /// only those, whatever else is marked deleted.
    pub async fn uid_expunge(&mut self, uids: &[u32]) -> Result<(), WriterError> {
        let result = ops::uid_expunge(self.conn()?, uids).await;
        self.settle(result)
    }

    /// GETMETADATA (RFC 5464) of `entries` on `mailbox` (`""` for server annotations):
    /// each entry with its value, in the order asked, `None` for NIL or absent.
    pub async fn get_metadata(
        &mut self,
        mailbox: &str,
        entries: &[&str],
    ) -> Result<Vec<(String, Option<Bytes>)>, WriterError> {
        let result = ops::get_metadata(self.conn()?, mailbox, entries).await;
        self.settle(result)
    }

    /// SETMETADATA (RFC 5464); `None` removes an entry.
    pub async fn set_metadata(
        &mut self,
        mailbox: &str,
        entries: &[(&str, Option<&[u8]>)],
    ) -> Result<(), WriterError> {
        let result = ops::set_metadata(self.conn()?, mailbox, entries).await;
        self.settle(result)
    }

    fn conn(&mut self) -> Result<&mut Conn, WriterError> {
        self.conn.as_mut().ok_or(WriterError::SessionBroken)
    }

    /// Closes the connection now if the operation left it unusable (a command still in
    /// flight after an error, or a BYE), so an aborted APPEND is cut at once.
    fn settle<T>(&mut self, result: Result<T, WriterError>) -> Result<T, WriterError> {
        if self
            .conn
            .as_ref()
            .is_some_and(|c| c.in_flight || c.saw_bye())
        {
            if let Some(conn) = self.conn.take() {
                debug!(
                    user = self.user,
                    "mailbox writer connection closed after an error"
                );
                drop(conn);
                self.writer.count_closed(1);
            }
        }
        result
    }
}

impl Drop for WriterSession {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.writer.give_back(std::mem::take(&mut self.user), conn);
        }
    }
}

impl std::fmt::Debug for WriterSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriterSession")
            .field("user", &self.user)
            .field("connected", &self.conn.is_some())
            .finish()
    }
}
