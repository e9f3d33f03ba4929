//! COI on the IMAP side (COI-PROTOCOL.md §2.2–2.5): the configuration METADATA entries
//! and the side effects of CREATE, DELETE and RENAME of the Chats folder.
//!
//! Each handler runs at a barrier (no other client command in flight) and talks to
//! Dovecot with the proxy's own commands. Values are persisted in Dovecot's METADATA
//! under [`STORAGE_PREFIX`](crate::coi::config::STORAGE_PREFIX), so any proxy replica,
//! and the same one after a restart, reads the same configuration.

use crate::coi::config::{self, Change, Entry, MessageFilter, UserConfig};

use crate::error::SessionError;
use crate::metrics::{CommandClass, CommandOutcome};
use crate::proto::imap::command::{self, Intercepted, MetadataDepth};
use crate::proto::imap::encode::{self, LiteralStyle};
use crate::proto::imap::response::{self, ResponseHead, Status};

use super::session::{InternalReply, Session};

type Result<T> = std::result::Result<T, SessionError>;

/// Handles an intercepted command. `forward` is the client's command in canonical wire
/// form (`tag SP name SP args`), used when the command goes to Dovecot unchanged.
pub(super) async fn run(
    session: &mut Session,
    tag: &[u8],
    forward: &[u8],
    parsed: Intercepted,
) -> Result<()> {
    let unchanged = &forward[tag.len() + 1..];
    match parsed {
        Intercepted::GetMetadata {
            depth,
            maxsize,
            mailbox,
            entries,
        } if mailbox.is_empty() => get_metadata(session, tag, depth, maxsize, &entries).await,
        Intercepted::SetMetadata { mailbox, entries } if mailbox.is_empty() => {
            set_metadata(session, tag, &entries).await
        }
        Intercepted::GetMetadata { .. } | Intercepted::SetMetadata { .. } => {
            relay(session, tag, CommandClass::Metadata, unchanged).await
        }
        Intercepted::Create { mailbox } => {
            if mailbox != chats(session).await? {
                return relay(session, tag, CommandClass::Other, unchanged).await;
            }
            // Create first, then enable: the order Dovecot's plugin uses.
            let reply = session.upstream_command(unchanged).await?;
            enable_after(session, tag, reply, true).await
        }
        Intercepted::Delete { mailbox } => {
            if mailbox != chats(session).await? {
                return relay(session, tag, CommandClass::Other, unchanged).await;
            }
            disable_then_relay(session, tag, unchanged).await
        }
        Intercepted::Rename { from, to } => {
            let chats = chats(session).await?;
            if from == chats {
                if !under_trash(session, &to).await? {
                    session.reply_local(
                        tag,
                        CommandClass::Other,
                        "NO",
                        "[CANNOT] COI mailbox can't be renamed",
                    );
                    return Ok(());
                }
                return disable_then_relay(session, tag, unchanged).await;
            }
            let reply = session.upstream_command(unchanged).await?;
            enable_after(session, tag, reply, to == chats).await
        }
    }
}

/// Finishes a command that created Chats (CREATE, or RENAME onto it): when it succeeded
/// and `created_chats`, COI is enabled first (COI-PROTOCOL §2.5).
async fn enable_after(
    session: &mut Session,
    tag: &[u8],
    reply: InternalReply,
    created_chats: bool,
) -> Result<()> {
    if reply.status == Status::Ok && created_chats {
        let enable = [Change {
            entry: Entry::Enabled,
            value: Some("yes"),
        }];
        if let Err(no) = apply(session, &enable).await? {
            return finish(session, tag, CommandClass::Other, &no);
        }
    }
    finish(session, tag, CommandClass::Other, &reply)
}

/// Removing Chats (DELETE, or RENAME into the trash) disables COI first, then runs.
async fn disable_then_relay(session: &mut Session, tag: &[u8], command: &[u8]) -> Result<()> {
    let disable = [Change {
        entry: Entry::Enabled,
        value: None,
    }];
    if let Err(no) = store(session, &disable).await? {
        return finish(session, tag, CommandClass::Other, &no);
    }
    relay(session, tag, CommandClass::Other, command).await
}

/// Sends the command to Dovecot unchanged and relays its replies under the client's tag.
async fn relay(
    session: &mut Session,
    tag: &[u8],
    class: CommandClass,
    command: &[u8],
) -> Result<()> {
    let reply = session.upstream_command(command).await?;
    for untagged in &reply.untagged {
        session.send_client_line(untagged);
    }
    finish(session, tag, class, &reply)
}

/// Sends the tagged reply of an internal command to the client under the client's tag.
fn finish(
    session: &mut Session,
    tag: &[u8],
    class: CommandClass,
    reply: &InternalReply,
) -> Result<()> {
    let mut line = tag.to_vec();
    line.push(b' ');
    line.extend_from_slice(&reply.line_after_tag);
    session.send_client_line(&line);
    let outcome = match reply.status {
        Status::Ok => CommandOutcome::Ok,
        Status::No => CommandOutcome::No,
        _ => CommandOutcome::Bad,
    };
    session.record(class, outcome);
    Ok(())
}

/// `GETMETADATA "" entries`: COI entries are answered by the proxy, the rest by Dovecot
/// with the proxy's own storage filtered out.
async fn get_metadata(
    session: &mut Session,
    tag: &[u8],
    depth: MetadataDepth,
    maxsize: Option<u64>,
    entries: &[Vec<u8>],
) -> Result<()> {
    // (entry, named exactly): RFC 5464 §4.2.2 returns NIL only for entries asked for by
    // name; entries reached through DEPTH appear only if they exist.
    let mut coi_entries: Vec<(Entry, bool)> = Vec::new();
    let mut passed: Vec<&[u8]> = Vec::new();
    for requested in entries {
        for entry in config::selected_by(
            requested,
            depth == MetadataDepth::One,
            depth == MetadataDepth::Infinity,
        ) {
            let named = Entry::from_client_path(requested) == Some(entry);
            match coi_entries.iter_mut().find(|(e, _)| *e == entry) {
                Some((_, n)) => *n |= named,
                None => coi_entries.push((entry, named)),
            }
        }
        if !config::is_reserved(requested) {
            passed.push(requested);
        }
    }
    if !passed.is_empty() {
        let mut command = b"GETMETADATA (DEPTH ".to_vec();
        command.extend_from_slice(match depth {
            MetadataDepth::Zero => b"0",
            MetadataDepth::One => b"1",
            MetadataDepth::Infinity => b"infinity",
        });
        if let Some(max) = maxsize {
            command.extend_from_slice(format!(" MAXSIZE {max}").as_bytes());
        }
        command.extend_from_slice(b") \"\" (");
        for (i, entry) in passed.iter().enumerate() {
            if i > 0 {
                command.push(b' ');
            }
            encode::astring(&mut command, entry, LiteralStyle::NonSync);
        }
        command.push(b')');
        let reply = session.upstream_command(&command).await?;
        if reply.status != Status::Ok {
            return finish(session, tag, CommandClass::Metadata, &reply);
        }
        for untagged in &reply.untagged {
            match metadata_entries(untagged) {
                // The proxy's own storage stays hidden; everything else goes out as
                // Dovecot wrote it.
                Some(found) if found.iter().any(|(e, _)| config::is_reserved(e)) => {
                    let visible: Vec<_> = found
                        .into_iter()
                        .filter(|(e, _)| !config::is_reserved(e))
                        .collect();
                    if !visible.is_empty() {
                        session.send_client_line(&metadata_line(&visible));
                    }
                }
                _ => session.send_client_line(untagged),
            }
        }
        if coi_entries.is_empty() {
            return finish(session, tag, CommandClass::Metadata, &reply);
        }
    }
    if !coi_entries.is_empty() {
        let stored = read_stored(session).await?;
        let mut values = Vec::new();
        for (entry, named) in coi_entries {
            let value = match entry {
                Entry::Enabled => stored.0.clone(),
                Entry::MessageFilter => stored.1.clone(),
                Entry::MailboxRoot => Some(session.shared_mailbox_root().into_bytes()),
            };
            // RFC 5464 §4.2.1: entries larger than MAXSIZE are left out.
            if matches!((&value, maxsize), (Some(v), Some(max)) if v.len() as u64 > max)
                || (value.is_none() && !named)
            {
                continue;
            }
            values.push((entry.client_path().into_bytes(), value));
        }
        if !values.is_empty() {
            session.send_client_line(&metadata_line(&values));
        }
    }
    session.reply_local(tag, CommandClass::Metadata, "OK", "Getmetadata completed.");
    Ok(())
}

/// `SETMETADATA "" (...)`: COI entries are validated all at once, then the other entries
/// go to Dovecot, then the COI values are stored and their side effects applied.
async fn set_metadata(
    session: &mut Session,
    tag: &[u8],
    entries: &[(Vec<u8>, Option<Vec<u8>>)],
) -> Result<()> {
    let mut changes = Vec::new();
    let mut passed = Vec::new();
    for (path, value) in entries {
        match Entry::from_client_path(path) {
            Some(entry) => match config::validate_set(entry, value.as_deref()) {
                Ok(change) => changes.push(change),
                Err(e) => {
                    session.reply_local(
                        tag,
                        CommandClass::Metadata,
                        "NO",
                        &format!("[CANNOT] {e}"),
                    );
                    return Ok(());
                }
            },
            None if config::is_reserved(path) => {
                session.reply_local(
                    tag,
                    CommandClass::Metadata,
                    "NO",
                    "[CANNOT] Reserved metadata entry",
                );
                return Ok(());
            }
            None => passed.push((path, value)),
        }
    }
    if !passed.is_empty() {
        let mut command = b"SETMETADATA \"\" (".to_vec();
        for (i, (path, value)) in passed.iter().enumerate() {
            if i > 0 {
                command.push(b' ');
            }
            encode::astring(&mut command, path, LiteralStyle::NonSync);
            command.push(b' ');
            encode::nstring(&mut command, value.as_deref(), LiteralStyle::NonSync);
        }
        command.push(b')');
        let reply = session.upstream_command(&command).await?;
        if reply.status != Status::Ok || changes.is_empty() {
            return finish(session, tag, CommandClass::Metadata, &reply);
        }
    }
    if let Err(no) = apply(session, &changes).await? {
        return finish(session, tag, CommandClass::Metadata, &no);
    }
    session.reply_local(tag, CommandClass::Metadata, "OK", "Setmetadata completed.");
    Ok(())
}

/// Stores COI changes and applies their side effects (COI-PROTOCOL §2.4): enabling
/// creates Contacts and a subscribed Chats; an `active` or `seen` filter needs Chats.
/// `Ok(Err(reply))` carries Dovecot's refusal for the client.
async fn apply(
    session: &mut Session,
    changes: &[Change],
) -> Result<std::result::Result<(), InternalReply>> {
    if let Err(no) = store(session, changes).await? {
        return Ok(Err(no));
    }
    // This session's cached view follows its own writes at once.
    session.state.coi = None;
    let enabling = changes
        .iter()
        .any(|c| c.entry == Entry::Enabled && c.value == Some("yes"));
    let filtering = changes.iter().any(|c| {
        c.entry == Entry::MessageFilter && matches!(c.value, Some(v) if MessageFilter::parse(v.as_bytes()) != Some(MessageFilter::None))
    });
    if enabling {
        let contacts = folder(session, "Contacts").await?;
        if let Err(no) = ensure_mailbox(session, &contacts, false).await? {
            return Ok(Err(no));
        }
    }
    if enabling || filtering {
        let chats = chats(session).await?;
        if let Err(no) = ensure_mailbox(session, &chats, true).await? {
            return Ok(Err(no));
        }
    }
    Ok(Ok(()))
}

/// Writes COI values to the proxy's storage entries in Dovecot.
async fn store(
    session: &mut Session,
    changes: &[Change],
) -> Result<std::result::Result<(), InternalReply>> {
    let mut command = b"SETMETADATA \"\" (".to_vec();
    for (i, change) in changes.iter().enumerate() {
        if i > 0 {
            command.push(b' ');
        }
        command.extend_from_slice(change.entry.storage_path().as_bytes());
        command.push(b' ');
        encode::nstring(
            &mut command,
            change.value.map(str::as_bytes),
            LiteralStyle::NonSync,
        );
    }
    command.push(b')');
    let reply = session.upstream_command(&command).await?;
    session.state.coi = None;
    // The delivery hook's cached copy is stale now, whatever Dovecot answered.
    if let Some(user) = &session.state.user {
        session.shared.states.invalidate(user);
    }
    Ok(if reply.status == Status::Ok {
        Ok(())
    } else {
        Err(reply)
    })
}

/// Reads the stored `enabled` and `message-filter` values.
async fn read_stored(session: &mut Session) -> Result<(Option<Vec<u8>>, Option<Vec<u8>>)> {
    let command = format!(
        "GETMETADATA \"\" ({} {})",
        Entry::Enabled.storage_path(),
        Entry::MessageFilter.storage_path()
    );
    let reply = session.upstream_command(command.as_bytes()).await?;
    let mut enabled = None;
    let mut filter = None;
    for untagged in &reply.untagged {
        for (path, value) in metadata_entries(untagged).unwrap_or_default() {
            if path.eq_ignore_ascii_case(Entry::Enabled.storage_path().as_bytes()) {
                enabled = value;
            } else if path.eq_ignore_ascii_case(Entry::MessageFilter.storage_path().as_bytes()) {
                filter = value;
            }
        }
    }
    Ok((enabled, filter))
}

/// The user's COI configuration as stored in the backend, read once per selected
/// mailbox (and updated by this session's own SETMETADATA).
async fn user_config(session: &mut Session) -> Result<UserConfig> {
    if let Some(config) = &session.state.coi {
        return Ok(config.clone());
    }
    let (enabled, filter) = read_stored(session).await?;
    let config = UserConfig::from_stored(enabled.as_deref(), filter.as_deref());
    session.state.coi = Some(config.clone());
    Ok(config)
}

/// The seen filter, step 1 (COI-PROTOCOL §2.6): before a STORE or FETCH that may set
/// `\Seen` in INBOX, the sequence numbers of the unseen `$Chat` messages it covers.
/// A non-UID SEARCH is used because no EXPUNGE may be sent during it (RFC 9051
/// §7.4.1), so the numbers stay valid until the move runs: every command that allows
/// EXPUNGE runs the pending moves first.
pub(super) async fn seen_candidates(
    session: &mut Session,
    head: &command::CommandHead<'_>,
) -> Result<Vec<u32>> {
    if user_config(session).await?.effective_filter() != MessageFilter::Seen {
        return Ok(Vec::new());
    }
    let Some(set) = command::sequence_set(head.args) else {
        return Ok(Vec::new());
    };
    let mut search = b"SEARCH UNSEEN KEYWORD $Chat ".to_vec();
    if head.uid {
        search.extend_from_slice(b"UID ");
    }
    search.extend_from_slice(set);
    let reply = session.upstream_command(&search).await?;
    Ok(search_result(&reply))
}

/// The seen filter, step 2: moves those candidates that are now `\Seen` to Chats.
/// Runs at the start of a command during which EXPUNGE responses may be sent, so the
/// client learns of the move in the normal way, as other clients do.
pub(super) async fn move_seen(session: &mut Session, candidates: &[u32]) -> Result<()> {
    if candidates.is_empty() || session.state.selected.as_deref() != Some(b"INBOX".as_slice()) {
        return Ok(());
    }
    let set = sequence_set(candidates);
    let reply = session
        .upstream_command(format!("UID SEARCH SEEN KEYWORD $Chat {set}").as_bytes())
        .await?;
    let uids = search_result(&reply);
    if uids.is_empty() {
        return Ok(());
    }
    let uids = sequence_set(&uids);
    let chats = chats(session).await?;
    for attempt in 0..2 {
        let mut command = format!("UID MOVE {uids} ").into_bytes();
        encode::astring(&mut command, &chats, LiteralStyle::NonSync);
        let reply = session.upstream_command(&command).await?;
        match reply.status {
            Status::Ok => return Ok(()),
            Status::No if attempt == 0 && contains_code(&reply.line_after_tag, b"TRYCREATE") => {
                if let Err(no) = ensure_mailbox(session, &chats, true).await? {
                    tracing::warn!(reply = %String::from_utf8_lossy(&no.line_after_tag), "seen filter: cannot create Chats");
                    return Ok(());
                }
            }
            // A backend without MOVE (RFC 6851): copy, flag and expunge exactly these UIDs.
            Status::Bad => return copy_flag_expunge(session, &uids, &chats).await,
            _ => {
                tracing::warn!(reply = %String::from_utf8_lossy(&reply.line_after_tag), "seen filter: move refused");
                return Ok(());
            }
        }
    }
    Ok(())
}

async fn copy_flag_expunge(session: &mut Session, uids: &str, chats: &[u8]) -> Result<()> {
    let mut copy = format!("UID COPY {uids} ").into_bytes();
    encode::astring(&mut copy, chats, LiteralStyle::NonSync);
    if session.upstream_command(&copy).await?.status != Status::Ok {
        tracing::warn!("seen filter: copy to Chats refused");
        return Ok(());
    }
    session
        .upstream_command(format!("UID STORE {uids} +FLAGS.SILENT (\\Deleted)").as_bytes())
        .await?;
    session
        .upstream_command(format!("UID EXPUNGE {uids}").as_bytes())
        .await?;
    Ok(())
}

/// A compact `sequence-set` (RFC 9051): sorted, without duplicates, runs as ranges, so
/// that a "mark all as read" of thousands of messages stays one short line.
fn sequence_set(numbers: &[u32]) -> String {
    let mut sorted = numbers.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out = String::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        while i + 1 < sorted.len() && sorted[i + 1] == sorted[i] + 1 {
            i += 1;
        }
        if !out.is_empty() {
            out.push(',');
        }
        if sorted[i] == start {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}:{}", sorted[i]));
        }
        i += 1;
    }
    out
}

/// The numbers of the `* SEARCH` responses of a reply.
fn search_result(reply: &InternalReply) -> Vec<u32> {
    reply
        .untagged
        .iter()
        .filter_map(|line| match response::response_head(line) {
            Ok(ResponseHead::Data { name, rest }) if name.eq_ignore_ascii_case(b"SEARCH") => {
                response::search_numbers(rest)
            }
            _ => None,
        })
        .flatten()
        .collect()
}

/// Creates a mailbox if it does not exist; optionally subscribes it.
async fn ensure_mailbox(
    session: &mut Session,
    name: &[u8],
    subscribe: bool,
) -> Result<std::result::Result<(), InternalReply>> {
    let mut command = b"CREATE ".to_vec();
    encode::astring(&mut command, name, LiteralStyle::NonSync);
    let reply = session.upstream_command(&command).await?;
    let exists =
        reply.status == Status::Ok || contains_code(&reply.line_after_tag, b"ALREADYEXISTS");
    if !exists {
        return Ok(Err(reply));
    }
    if subscribe {
        let mut command = b"SUBSCRIBE ".to_vec();
        encode::astring(&mut command, name, LiteralStyle::NonSync);
        let reply = session.upstream_command(&command).await?;
        if reply.status != Status::Ok {
            return Ok(Err(reply));
        }
    }
    Ok(Ok(()))
}

fn contains_code(line_after_tag: &[u8], code: &[u8]) -> bool {
    let mut needle = b"[".to_vec();
    needle.extend_from_slice(code);
    line_after_tag
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(&needle))
}

/// `<root><sep>Chats`.
async fn chats(session: &mut Session) -> Result<Vec<u8>> {
    folder(session, "Chats").await
}

async fn folder(session: &mut Session, leaf: &str) -> Result<Vec<u8>> {
    let separator = separator(session).await?;
    let mut name = session.shared_mailbox_root().into_bytes();
    name.push(separator);
    name.extend_from_slice(leaf.as_bytes());
    Ok(name)
}

/// The hierarchy separator, from `LIST "" ""` (RFC 9051 §6.3.9), learned once.
async fn separator(session: &mut Session) -> Result<u8> {
    if let Some(separator) = session.separator {
        return Ok(separator);
    }
    let reply = session.upstream_command(b"LIST \"\" \"\"").await?;
    let separator = reply
        .untagged
        .iter()
        .find_map(|line| response::list_delimiter(line))
        .unwrap_or(b'/');
    session.separator = Some(separator);
    Ok(separator)
}

/// Whether `name` lies under the trash: below `Trash<sep>` or below a mailbox with the
/// `\Trash` special use (COI-PROTOCOL §2.5, as Dovecot decides it).
async fn under_trash(session: &mut Session, name: &[u8]) -> Result<bool> {
    let separator = separator(session).await?;
    let mut trash = b"Trash".to_vec();
    trash.push(separator);
    if name.len() > trash.len() && name[..trash.len()].eq_ignore_ascii_case(&trash) {
        return Ok(true);
    }
    let reply = session
        .upstream_command(b"LIST (SPECIAL-USE) \"\" \"*\"")
        .await?;
    Ok(reply
        .untagged
        .iter()
        .filter_map(|line| special_use_trash(line))
        .any(|trash| {
            name.len() > trash.len() && name.starts_with(&trash) && name[trash.len()] == separator
        }))
}

/// The mailbox name of a `* LIST (... \Trash ...) d name` response.
fn special_use_trash(line: &[u8]) -> Option<Vec<u8>> {
    let ResponseHead::Data { name, rest } = response::response_head(line).ok()? else {
        return None;
    };
    let close = memchr::memchr(b')', rest)?;
    let flags = &rest[..close];
    let is_trash = flags
        .split(|&b| b == b' ' || b == b'(')
        .any(|f| f.eq_ignore_ascii_case(b"\\Trash"));
    if !name.eq_ignore_ascii_case(b"LIST") || !is_trash {
        return None;
    }
    let after = rest.get(close + 2..)?;
    let after_delimiter = match after.first()? {
        b'"' => {
            &after[command::quoted(after).ok()?.0.as_ptr() as usize - after.as_ptr() as usize..]
        }
        _ => after.get(3..)?, // NIL
    };
    command::mailbox(after_delimiter.strip_prefix(b" ")?)
        .ok()
        .map(|(_, m)| m)
}

/// Entries of a collected `* METADATA "" (...)` response.
fn metadata_entries(line: &[u8]) -> Option<response::MetadataEntries> {
    let ResponseHead::Data { name, rest } = response::response_head(line).ok()? else {
        return None;
    };
    if !name.eq_ignore_ascii_case(b"METADATA") {
        return None;
    }
    let (_, entries) = response::metadata_response(rest)?;
    Some(entries)
}

/// `* METADATA "" (entry value ...)`, every string canonically encoded.
fn metadata_line(entries: &[(Vec<u8>, Option<Vec<u8>>)]) -> Vec<u8> {
    let mut line = b"* METADATA \"\" (".to_vec();
    for (i, (entry, value)) in entries.iter().enumerate() {
        if i > 0 {
            line.push(b' ');
        }
        encode::astring(&mut line, entry, LiteralStyle::Response);
        line.push(b' ');
        encode::nstring(&mut line, value.as_deref(), LiteralStyle::Response);
    }
    line.push(b')');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_sets_are_sorted_deduplicated_ranges() {
        assert_eq!(sequence_set(&[5, 1, 2, 3, 3, 9, 10, 7]), "1:3,5,7,9:10");
        assert_eq!(sequence_set(&[4]), "4");
        assert_eq!(sequence_set(&(1..=5000).collect::<Vec<_>>()), "1:5000");
    }

    #[test]
    fn trash_mailboxes_are_found_by_special_use() {
        assert_eq!(
            special_use_trash(b"* LIST (\\HasNoChildren \\Trash) \"/\" Bin"),
            Some(b"Bin".to_vec())
        );
        assert_eq!(
            special_use_trash(b"* LIST (\\Trash) \"/\" \"Deleted Items\""),
            Some(b"Deleted Items".to_vec())
        );
        assert_eq!(
            special_use_trash(b"* LIST (\\HasNoChildren) \"/\" Bin"),
            None
        );
    }

    #[test]
    fn metadata_lines_encode_hostile_values_as_literals() {
        let line = metadata_line(&[
            (
                b"/private/x".to_vec(),
                Some(b"a\r\n* OK [ALERT] b".to_vec()),
            ),
            (b"/private/y".to_vec(), None),
        ]);
        assert_eq!(
            line,
            b"* METADATA \"\" (/private/x {17}\r\na\r\n* OK [ALERT] b /private/y NIL)"
        );
        assert_eq!(
            metadata_entries(&line),
            Some(vec![
                (
                    b"/private/x".to_vec(),
                    Some(b"a\r\n* OK [ALERT] b".to_vec())
                ),
                (b"/private/y".to_vec(), None)
            ])
        );
    }

    #[test]
    fn response_codes_are_found_case_insensitively() {
        assert!(contains_code(
            b"NO [ALREADYEXISTS] Mailbox already exists",
            b"ALREADYEXISTS"
        ));
        assert!(contains_code(b"NO [alreadyexists] x", b"ALREADYEXISTS"));
        assert!(!contains_code(b"NO [CANNOT] x", b"ALREADYEXISTS"));
    }
}
