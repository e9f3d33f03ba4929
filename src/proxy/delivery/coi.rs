//! The COI side of the delivery hook: a recipient's COI configuration (cached), the
//! mailbox writer's APPEND of chat messages, and the capture of tokens into Contacts.

use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::{debug, info, warn};

use crate::coi::address::NormalizedAddress;
use crate::coi::config::{Entry, UserConfig};
use crate::coi::contacts::{merge_duplicates, Contact, FromHash, Stored, FROM_HASH_FIELD};
use crate::coi::delivery::{Folder, CHAT_KEYWORD};
use crate::coi::token::Token;
use crate::config::UserName;
use crate::metrics::CaptureOutcome;
use crate::net::spool::Spool;
use crate::proto::smtp::command::Path;
use crate::proto::smtp::reply::Reply;
use crate::proxy::state::UserStates;
use crate::proxy::writer::{
    AppendUid, BodyError, MailboxWriter, SearchKey, WriterError, WriterSession,
};

/// What the hook needs to act for COI users.
pub struct HookCoi {
    writer: Arc<MailboxWriter>,
    /// `coi.mailbox_root`.
    root: String,
    states: Arc<UserStates>,
    user_name: UserName,
    /// The hierarchy separator, learned from the backend once: it is a setting of the
    /// server's namespace, the same for every user.
    separator: OnceLock<u8>,
}

impl HookCoi {
    pub fn new(
        writer: Arc<MailboxWriter>,
        root: String,
        states: Arc<UserStates>,
        user_name: UserName,
    ) -> Self {
        Self {
            writer,
            root,
            states,
            user_name,
            separator: OnceLock::new(),
        }
    }

    /// The Dovecot user a recipient path names.
    pub fn user_of(&self, to: &Path) -> Option<String> {
        super::user_of(self.user_name, to)
    }

    /// The user's COI configuration: from the cache, else from the backend (the truth;
    /// DESIGN.md §1.2). `None` when it cannot be read: the message then takes the plain
    /// LMTP path, which loses nothing (at most the `$Chat` keyword).
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
                info!(error = %e, "cannot read a recipient's COI configuration; relaying by LMTP");
                None
            }
        }
    }

    /// Appends the spooled message for `user` with `$Chat`; the reply for that
    /// recipient comes from the APPEND's result. On success also the mailbox it went to
    /// (wire form), for the IDLE wake.
    pub async fn append(
        &self,
        user: &str,
        folder: Folder,
        spool: &mut Spool,
    ) -> (Reply, Option<String>) {
        let result = async {
            let mut session = self.writer.session(user).await?;
            let mailbox = match folder {
                Folder::Inbox => "INBOX".to_owned(),
                Folder::Chats => self.folder_name(&mut session, "Chats").await?,
            };
            let first = append_spool(&mut session, &mailbox, spool).await;
            // Chats normally exists (enabling COI creates it): CREATE only when the APPEND
            // says it is missing (RFC 9051 §6.3.12 TRYCREATE), then once more.
            let uid = match first {
                Err(e)
                    if folder == Folder::Chats
                        && e.response_code().is_some_and(|c| c.is("TRYCREATE")) =>
                {
                    session.create_if_missing(&mailbox, true).await?;
                    append_spool(&mut session, &mailbox, spool).await?
                }
                other => other?,
            };
            Ok::<_, WriterError>((uid, mailbox))
        }
        .await;
        match result {
            Ok((uid, mailbox)) => {
                debug!(uid = uid.uid, "chat message stored");
                (
                    Reply::new(250, Some((2, 0, 0)), "Saved chat message"),
                    Some(mailbox),
                )
            }
            Err(e) if e.is_transient() => {
                info!(error = %e, "storing a chat message failed");
                let reply = Reply::new(
                    451,
                    Some((4, 2, 0)),
                    "Temporary failure storing the message",
                );
                (reply, None)
            }
            Err(e) => {
                warn!(error = %e, "storing a chat message was refused");
                (
                    Reply::new(550, Some((5, 2, 0)), "Mailbox unavailable"),
                    None,
                )
            }
        }
    }

    /// Stores `token` as a `COI-TokenOut` for `sender` in `user`'s Contacts: one contact
    /// message per contact, updated (new APPEND, old expunged), never duplicated. Failures
    /// are logged, not reported: the message itself is delivered either way (like
    /// Dovecot's LMTP plugin), and the next chat message brings a fresh token.
    pub async fn capture(
        &self,
        user: &str,
        owner: &NormalizedAddress,
        sender: &NormalizedAddress,
        token: Token,
    ) -> CaptureOutcome {
        let now = unix_now();
        match self.update_contact(user, owner, sender, token, now).await {
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

    async fn update_contact(
        &self,
        user: &str,
        owner: &NormalizedAddress,
        sender: &NormalizedAddress,
        token: Token,
        now: u64,
    ) -> Result<bool, CaptureError> {
        let mut session = self.writer.session(user).await?;
        let contacts = self.folder_name(&mut session, "Contacts").await?;
        session.create_if_missing(&contacts, false).await?;
        session.select(&contacts).await?;
        let hash = FromHash::of(sender);
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
        let (contact, expunge, changed) = match merge_duplicates(found, now) {
            None => {
                let unique = format!("{now}.{}", &hash.hex[..16]);
                let mut contact = Contact::new(owner, sender, now, &unique)
                    .map_err(|_| CaptureError::Contact("cannot create the contact"))?;
                let _ = contact
                    .add_token_out(token)
                    .map_err(|_| CaptureError::Contact("token too long"))?;
                (contact, Vec::new(), true)
            }
            Some(mut merged) => {
                let change = merged.change
                    | merged
                        .contact
                        .add_token_out(token)
                        .map_err(|_| CaptureError::Contact("token too long"))?;
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

/// Appends the spooled message with `$Chat`.
async fn append_spool(
    session: &mut WriterSession,
    mailbox: &str,
    spool: &mut Spool,
) -> Result<AppendUid, WriterError> {
    let reader = spool
        .reader()
        .await
        .map_err(|e| WriterError::Body(BodyError::Read(e)))?;
    session
        .append(mailbox, &[CHAT_KEYWORD], None, spool.len(), reader)
        .await
}

/// Why a capture failed.
#[derive(Debug, thiserror::Error)]
enum CaptureError {
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
