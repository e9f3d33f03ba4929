//! The COI side of the mailboxes, shared by the delivery hook and the peer links: a
//! user's COI configuration (cached), the APPEND of chat messages with their
//! de-duplication key, and the tokens kept in the users' Contacts.

use std::sync::{Arc, OnceLock};

use dashmap::DashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::{debug, info};

use crate::coi::address::NormalizedAddress;
use crate::coi::config::{Entry, UserConfig};
use crate::coi::contacts::{
    merge_duplicates, Change, Contact, FromHash, Stored, TokenTooLong, FROM_HASH_FIELD,
};
use crate::coi::dedup::{self, DELIVERY_KEY_FIELD};
use crate::coi::delivery::{Folder, CHAT_KEYWORD};
use crate::coi::token::{Secret, Token};
use crate::config::UserName;
use crate::metrics::CaptureOutcome;
use crate::net::spool::Spool;
use crate::proto::smtp::command::Path;
use crate::proxy::state::UserStates;
use crate::proxy::writer::{
    AppendUid, BodyError, MailboxWriter, SearchKey, WriterError, WriterSession,
};

/// How storing one copy ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreOutcome {
    /// Dovecot's tagged OK to the APPEND: durably stored (Dovecot's `mail_fsync`).
    Stored { mailbox: String, uid: AppendUid },
    /// A copy with the same delivery key is already in the mailbox: nothing stored.
    Duplicate { mailbox: String, uid: u32 },
    /// Not stored; a retry may succeed.
    TempFail,
    /// Not stored; a retry fails the same way.
    Refused,
}

impl StoreOutcome {
    /// Stored now or before.
    pub fn is_delivered(&self) -> bool {
        matches!(self, Self::Stored { .. } | Self::Duplicate { .. })
    }

    /// The mailbox now holding the copy, for the IDLE wake: only a new copy wakes.
    pub fn stored_in(&self) -> Option<&str> {
        match self {
            Self::Stored { mailbox, .. } => Some(mailbox),
            _ => None,
        }
    }

    /// An opaque id of the stored copy for logs and the peer's receipt: UIDVALIDITY and
    /// UID.
    pub fn receipt(&self) -> Option<String> {
        match self {
            Self::Stored { uid, .. } => Some(format!("{}/{}", uid.uid_validity, uid.uid)),
            Self::Duplicate { uid, .. } => Some(format!("dup/{uid}")),
            _ => None,
        }
    }
}

/// What the proxy needs to act in COI users' mailboxes.
pub struct Mailboxes {
    writer: Arc<MailboxWriter>,
    /// `coi.mailbox_root`.
    root: String,
    states: Arc<UserStates>,
    user_name: UserName,
    /// Keys the de-duplication hash ([`dedup::delivery_key`]).
    dedup_secret: Option<Secret>,
    /// The hierarchy separator, learned from the backend once: it is a setting of the
    /// server's namespace, the same for every user.
    separator: OnceLock<u8>,
    /// Delivery keys being stored now: the search and the APPEND of one key run one at a
    /// time in this process, so two copies arriving together (a replayed stream, a mail
    /// copy racing the link's) are stored once without a second APPEND. Other replicas
    /// do not see this table: [`keep_first_copy`] settles a race between processes.
    in_flight: DashMap<String, Arc<tokio::sync::Mutex<()>>>,
}

impl Mailboxes {
    pub fn new(
        writer: Arc<MailboxWriter>,
        root: String,
        states: Arc<UserStates>,
        user_name: UserName,
        dedup_secret: Option<Secret>,
    ) -> Self {
        Self {
            writer,
            root,
            states,
            user_name,
            dedup_secret,
            separator: OnceLock::new(),
            in_flight: DashMap::new(),
        }
    }

    /// The Dovecot user a recipient path names.
    pub fn user_of(&self, to: &Path) -> Option<String> {
        super::delivery::user_of(self.user_name, to)
    }

    /// The Dovecot user of a (normalised) address.
    pub fn user_of_address(&self, address: &NormalizedAddress) -> String {
        match self.user_name {
            UserName::Address => address.as_str().to_owned(),
            UserName::LocalPart => address.local_part().to_owned(),
        }
    }

    /// The user's COI configuration: from the cache, else from the backend (the truth;
    /// DESIGN.md §1.2). `None` when it cannot be read: the message then takes the plain
    /// path, which loses nothing (at most the `$Chat` keyword).
    pub async fn user_config(&self, user: &str) -> Option<UserConfig> {
        if let Some(config) = self.states.get(user) {
            return Some(config);
        }
        let entries = [
            Entry::Enabled.storage_path(),
            Entry::MessageFilter.storage_path(),
        ];
        let names: Vec<&str> = entries.iter().map(String::as_str).collect();
        let read = async {
            let mut session = self.writer.session(user).await?;
            session.get_metadata("", &names).await
        };
        match read.await {
            Ok(values) => {
                let value = |i: usize| values.get(i).and_then(|(_, v)| v.as_deref());
                let config = UserConfig::from_stored(value(0), value(1));
                self.states.put(user, config.clone());
                Some(config)
            }
            Err(e) => {
                info!(error = %e, "cannot read a recipient's COI configuration");
                None
            }
        }
    }

    /// The de-duplication key of one copy ([`dedup::delivery_key`]).
    pub fn delivery_key(
        &self,
        peer_domain: &str,
        message_id: &str,
        recipient: &NormalizedAddress,
        body_hash: &[u8; 32],
    ) -> String {
        dedup::delivery_key(
            self.dedup_secret.as_ref(),
            peer_domain,
            message_id,
            recipient,
            body_hash,
        )
    }

    /// Stores the spooled message for `user` in `folder` with `$Chat`, unless a copy with
    /// `key` is there already (then nothing is stored). With a key, the stored copy
    /// carries it in a [`DELIVERY_KEY_FIELD`] header, so that a later copy finds it.
    pub async fn store(
        &self,
        user: &str,
        folder: Folder,
        key: Option<&str>,
        spool: &mut Spool,
    ) -> StoreOutcome {
        let entry = key.map(|key| format!("{user}\0{key}"));
        let lock = entry
            .as_ref()
            .map(|entry| self.in_flight.entry(entry.clone()).or_default().clone());
        let _guard = match &lock {
            Some(lock) => Some(lock.lock().await),
            None => None,
        };
        let outcome = self.store_unlocked(user, folder, key, spool).await;
        if let Some(entry) = &entry {
            // The last one out removes the entry (the table holds one reference).
            self.in_flight
                .remove_if(entry, |_, l| Arc::strong_count(l) <= 2);
        }
        outcome
    }

    async fn store_unlocked(
        &self,
        user: &str,
        folder: Folder,
        key: Option<&str>,
        spool: &mut Spool,
    ) -> StoreOutcome {
        let result = async {
            let mut session = self.writer.session(user).await?;
            let chats = self.folder_name(&mut session, "Chats").await?;
            let mailbox = match folder {
                Folder::Inbox => "INBOX".to_owned(),
                Folder::Chats => chats.clone(),
            };
            if let Some(key) = key {
                // A copy filed into INBOX may since have moved to Chats (filter `seen`).
                for candidate in [&mailbox, &chats] {
                    if let Some(uid) = find_key(&mut session, candidate, key).await? {
                        return Ok((mailbox.clone(), None, Some(uid)));
                    }
                    if folder == Folder::Chats {
                        break;
                    }
                }
            }
            let prefix = key.map(dedup::key_field).unwrap_or_default();
            let first = append_spool(&mut session, &mailbox, &prefix, spool).await;
            // Chats normally exists (enabling COI creates it): CREATE only when the APPEND
            // says it is missing (RFC 9051 §6.3.12 TRYCREATE), then once more.
            let uid = match first {
                Err(e)
                    if folder == Folder::Chats
                        && e.response_code().is_some_and(|c| c.is("TRYCREATE")) =>
                {
                    session.create_if_missing(&mailbox, true).await?;
                    append_spool(&mut session, &mailbox, &prefix, spool).await?
                }
                other => other?,
            };
            if let Some(key) = key {
                // The copy is stored: a failure from here on leaves at most a duplicate,
                // never turns the delivery into a failure.
                match keep_first_copy(&mut session, &mailbox, key, uid.uid).await {
                    Ok(Some(first)) => return Ok((mailbox, None, Some(first))),
                    Ok(None) => {}
                    Err(e) => {
                        info!(error = %e, "cannot check for a copy stored at the same instant")
                    }
                }
            }
            Ok::<_, WriterError>((mailbox, Some(uid), None))
        }
        .await;
        match result {
            Ok((mailbox, Some(uid), _)) => {
                debug!(uid = uid.uid, "chat message stored");
                StoreOutcome::Stored { mailbox, uid }
            }
            Ok((mailbox, None, Some(uid))) => {
                debug!(uid, "chat message already stored");
                StoreOutcome::Duplicate { mailbox, uid }
            }
            Ok((_, None, None)) => StoreOutcome::TempFail,
            Err(e) if e.is_transient() => {
                info!(error = %e, "storing a chat message failed");
                StoreOutcome::TempFail
            }
            Err(e) => {
                info!(error = %e, "storing a chat message was refused");
                StoreOutcome::Refused
            }
        }
    }

    /// Stores `token` as a `COI-TokenOut` for `peer` in `user`'s Contacts (a token that
    /// lets `owner` write to `peer`): one contact message per contact, updated (new
    /// APPEND, old expunged), never duplicated. Failures are logged, not reported: the
    /// message that brought the token is delivered either way (like Dovecot's LMTP
    /// plugin), and the next one brings a fresh token.
    pub async fn capture(
        &self,
        user: &str,
        owner: &NormalizedAddress,
        peer: &NormalizedAddress,
        token: Token,
    ) -> CaptureOutcome {
        let now = unix_now();
        let change = |contact: &mut Contact| contact.add_token_out(token);
        match self.update_contact(user, owner, peer, now, change).await {
            Ok(true) => {
                debug!("token captured into Contacts");
                CaptureOutcome::Stored
            }
            Ok(false) => {
                debug!("token already in Contacts");
                CaptureOutcome::Unchanged
            }
            Err(e) => {
                info!(error = %e, "capturing a token into Contacts failed");
                CaptureOutcome::Failed
            }
        }
    }

    /// Records `token` (a permanent token this proxy issued for `peer` → `owner`) as a
    /// `COI-TokenIn` in `user`'s contact for `peer`: from then on it admits `peer`'s
    /// deliveries, until the user deletes the contact (DESIGN.md §3).
    pub async fn record_token_in(
        &self,
        user: &str,
        owner: &NormalizedAddress,
        peer: &NormalizedAddress,
        token: Token,
        now: u64,
    ) -> Result<(), ContactsError> {
        let change = |contact: &mut Contact| contact.add_token_in(token, now);
        self.update_contact(user, owner, peer, now, change).await?;
        Ok(())
    }

    /// `user`'s contact for `peer` (duplicates merged), read without changing anything;
    /// `None` when there is none.
    pub async fn contact(
        &self,
        user: &str,
        peer: &NormalizedAddress,
    ) -> Result<Option<Contact>, ContactsError> {
        let mut session = self.writer.session(user).await?;
        let contacts = self.folder_name(&mut session, "Contacts").await?;
        match session.examine(&contacts).await {
            Ok(_) => {}
            // No Contacts folder: no contacts.
            Err(WriterError::Refused { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let found = find_contacts(&mut session, peer).await?;
        Ok(merge_duplicates(found, unix_now()).map(|merged| merged.contact))
    }

    async fn update_contact(
        &self,
        user: &str,
        owner: &NormalizedAddress,
        peer: &NormalizedAddress,
        now: u64,
        change: impl FnOnce(&mut Contact) -> Result<Change, TokenTooLong>,
    ) -> Result<bool, ContactsError> {
        let mut session = self.writer.session(user).await?;
        let contacts = self.folder_name(&mut session, "Contacts").await?;
        session.create_if_missing(&contacts, false).await?;
        session.select(&contacts).await?;
        let found = find_contacts(&mut session, peer).await?;
        let too_long = |_| ContactsError::Contact("token too long");
        let (contact, expunge, changed) = match merge_duplicates(found, now) {
            None => {
                let hash = FromHash::of(peer);
                let unique = format!("{now}.{}", &hash.hex[..16]);
                let mut contact = Contact::new(owner, peer, now, &unique)
                    .map_err(|_| ContactsError::Contact("cannot create the contact"))?;
                let _ = change(&mut contact).map_err(too_long)?;
                (contact, Vec::new(), true)
            }
            Some(mut merged) => {
                let change = merged.change | change(&mut merged.contact).map_err(too_long)?;
                let mut expunge = merged.others.clone();
                if change.is_changed() {
                    expunge.push(merged.base_uid);
                }
                (merged.contact, expunge, change.is_changed())
            }
        };
        if changed {
            let rendered = contact.render();
            let len = rendered.len() as u64;
            session
                .append(&contacts, &["\\Seen"], None, len, &rendered[..])
                .await?;
        }
        if !expunge.is_empty() {
            session
                .uid_store_add_flags(&expunge, &["\\Deleted"])
                .await?;
            session.uid_expunge(&expunge).await?;
        }
        Ok(changed)
    }

    /// `<root><sep><leaf>`, the separator learned from the backend (once).
    async fn folder_name(
        &self,
        session: &mut WriterSession,
        leaf: &str,
    ) -> Result<String, WriterError> {
        let separator = match self.separator.get() {
            Some(&separator) => separator,
            None => {
                let separator = session.hierarchy_separator().await?.unwrap_or(b'/');
                *self.separator.get_or_init(|| separator)
            }
        };
        Ok(format!("{}{}{leaf}", self.root, separator as char))
    }
}

/// Appends `prefix` (header lines, possibly none) and the spooled message with `$Chat`.
async fn append_spool(
    session: &mut WriterSession,
    mailbox: &str,
    prefix: &[u8],
    spool: &mut Spool,
) -> Result<AppendUid, WriterError> {
    use tokio::io::AsyncReadExt;
    let reader = spool
        .reader()
        .await
        .map_err(|e| WriterError::Body(BodyError::Read(e)))?;
    let len = prefix.len() as u64 + spool.len();
    session
        .append(mailbox, &[CHAT_KEYWORD], None, len, prefix.chain(reader))
        .await
}

/// The UID of an undeleted message in `mailbox` whose delivery key is `key`; a missing
/// mailbox holds none.
async fn find_key(
    session: &mut WriterSession,
    mailbox: &str,
    key: &str,
) -> Result<Option<u32>, WriterError> {
    match session.examine(mailbox).await {
        Ok(_) => {}
        // A mailbox Dovecot will not open (missing: `NO [NONEXISTENT]`, or Dovecot 2.3's
        // plain `NO Mailbox doesn't exist`) holds no copy; a real problem shows at the
        // APPEND that follows.
        Err(WriterError::Refused { .. }) => return Ok(None),
        Err(e) => return Err(e),
    }
    Ok(session
        .uid_search(&key_criteria(key))
        .await?
        .first()
        .copied())
}

/// Settles a race between replicas after the APPEND of copy `ours` with `key`: another
/// process may have searched, found nothing and appended the same delivery at the same
/// moment. Of the copies with the key, the lowest UID stays; ours is expunged if another
/// is lower, and that one's UID returned. Both racers reach the same verdict: the later
/// APPEND got the higher UID and, searching after it, sees the earlier one. A client
/// idling on the mailbox may see the duplicate appear and go.
async fn keep_first_copy(
    session: &mut WriterSession,
    mailbox: &str,
    key: &str,
    ours: u32,
) -> Result<Option<u32>, WriterError> {
    // A fresh EXAMINE: the view then holds every APPEND committed before ours.
    session.examine(mailbox).await?;
    let first = session
        .uid_search(&key_criteria(key))
        .await?
        .into_iter()
        .find(|&uid| uid < ours);
    let Some(first) = first else {
        return Ok(None);
    };
    info!(
        first,
        ours, "the same delivery was stored twice at once; removing ours"
    );
    session.select(mailbox).await?;
    session.uid_store_add_flags(&[ours], &["\\Deleted"]).await?;
    session.uid_expunge(&[ours]).await?;
    Ok(Some(first))
}

/// SEARCH criteria for the undeleted copies with delivery key `key`. The key has a fixed
/// length, so a substring match is an exact match.
fn key_criteria(key: &str) -> [SearchKey; 2] {
    [
        SearchKey::Header {
            name: DELIVERY_KEY_FIELD.to_owned(),
            value: key.as_bytes().to_vec(),
        },
        SearchKey::Undeleted,
    ]
}

/// The contact messages of `peer` in the selected Contacts folder.
async fn find_contacts(
    session: &mut WriterSession,
    peer: &NormalizedAddress,
) -> Result<Vec<Stored>, WriterError> {
    let hash = FromHash::of(peer);
    let key = hash
        .search_values()
        .into_iter()
        .map(|value| SearchKey::Header {
            name: FROM_HASH_FIELD.to_owned(),
            value: value.as_bytes().to_vec(),
        })
        .reduce(|a, b| SearchKey::Or(Box::new(a), Box::new(b)));
    let uids = match key {
        Some(key) => session.uid_search(&[key, SearchKey::Undeleted]).await?,
        None => Vec::new(),
    };
    let mut found = Vec::new();
    if !uids.is_empty() {
        for (uid, body) in session.uid_fetch_bodies(&uids).await? {
            // SEARCH is a substring match: confirm the hash.
            if let Ok(contact) = Contact::parse(&body) {
                if contact.has_from_hash(&hash) {
                    found.push(Stored { uid, contact });
                }
            }
        }
    }
    Ok(found)
}

/// Why reading or updating a contact failed.
#[derive(Debug, thiserror::Error)]
pub enum ContactsError {
    #[error(transparent)]
    Writer(#[from] WriterError),
    #[error("{0}")]
    Contact(&'static str),
}

/// Wall-clock seconds (the proxy layer reads the clock; the core is given the value).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
