//! The operations of a [`WriterSession`](super::WriterSession), each one command with its
//! own tag and its reply.

use bytes::Bytes;
use tokio::io::AsyncRead;

use super::conn::{want_none, Conn};
use super::error::{ProtocolViolation, WriterError};
use super::{CreateOutcome, SelectedMailbox};
use crate::proto::imap::client::{self, AppendUid, InternalDate, SearchKey};
use crate::proto::imap::response::{
    list_delimiter, metadata_response, response_head, search_numbers,
};
use crate::proto::imap::response::{ResponseHead, Status};

pub(super) async fn create(
    conn: &mut Conn,
    mailbox: &str,
    subscribe: bool,
) -> Result<CreateOutcome, WriterError> {
    let (tag, mut command) = conn.command("CREATE");
    command.sp().mailbox(mailbox)?;
    let completion = conn
        .run("CREATE", &tag, command, want_none, &mut |_| Ok(()))
        .await?;
    let exists = completion.status == Status::No
        && completion
            .code
            .as_ref()
            .is_some_and(|c| c.is("ALREADYEXISTS"));
    let outcome = if exists {
        CreateOutcome::Existed
    } else {
        completion.ok("CREATE")?;
        CreateOutcome::Created
    };
    if subscribe {
        // Idempotent: subscribing twice is no error.
        let (tag, mut command) = conn.command("SUBSCRIBE");
        command.sp().mailbox(mailbox)?;
        conn.run("SUBSCRIBE", &tag, command, want_none, &mut |_| Ok(()))
            .await?
            .ok("SUBSCRIBE")?;
    }
    Ok(outcome)
}

pub(super) async fn append(
    conn: &mut Conn,
    mailbox: &str,
    flags: &[&str],
    internal_date: Option<InternalDate>,
    len: u64,
    body: &mut (dyn AsyncRead + Unpin + Send),
) -> Result<AppendUid, WriterError> {
    let flag_list = client::flag_list(flags)?;
    let date = internal_date.map(client::date_time).transpose()?;
    let (tag, mut command) = conn.command("APPEND");
    command.sp().mailbox(mailbox)?.sp().raw(&flag_list);
    if let Some(date) = date {
        command.sp().raw(date.as_bytes());
    }
    command.sp();
    let completion = conn.append(&tag, command, len, body).await?.ok("APPEND")?;
    // Dovecot's tagged OK is what makes the message stored; without APPENDUID (which
    // UIDPLUS, checked at login, promises) the caller cannot name it, and a retry may
    // store a duplicate, which receivers de-duplicate.
    completion
        .code
        .as_ref()
        .filter(|c| c.is("APPENDUID"))
        .and_then(|c| client::append_uid(c.args.as_bytes()))
        .ok_or(WriterError::Protocol(ProtocolViolation::MissingAppendUid))
}

pub(super) async fn select(
    conn: &mut Conn,
    mailbox: &str,
    read_only: bool,
) -> Result<SelectedMailbox, WriterError> {
    let name = if read_only { "EXAMINE" } else { "SELECT" };
    let (tag, mut command) = conn.command(name);
    command.sp().mailbox(mailbox)?;
    let mut selected = SelectedMailbox {
        exists: 0,
        uid_validity: None,
        uid_next: None,
        read_only,
    };
    let completion = conn
        .run(
            name,
            &tag,
            command,
            |h| {
                matches!(
                    h,
                    ResponseHead::Numbered { .. } | ResponseHead::UntaggedStatus { .. }
                )
            },
            &mut |data| {
                match response_head(&data) {
                    Ok(ResponseHead::Numbered { number, name }) if name == b"EXISTS" => {
                        selected.exists = number;
                    }
                    Ok(ResponseHead::UntaggedStatus {
                        status: Status::Ok,
                        code: Some(code),
                    }) => {
                        if code.is("UIDVALIDITY") {
                            selected.uid_validity = client::nz_number(code.args);
                        } else if code.is("UIDNEXT") {
                            selected.uid_next = client::nz_number(code.args);
                        }
                    }
                    _ => {}
                }
                Ok(())
            },
        )
        .await?
        .ok(name)?;
    if completion.code.as_ref().is_some_and(|c| c.is("READ-ONLY")) {
        selected.read_only = true;
    }
    Ok(selected)
}

pub(super) async fn uid_search(
    conn: &mut Conn,
    criteria: &[SearchKey],
) -> Result<Vec<u32>, WriterError> {
    let (tag, mut command) = conn.command("UID SEARCH");
    client::search_program(&mut command, criteria)?;
    let mut uids = Vec::new();
    conn.run(
        "UID SEARCH",
        &tag,
        command,
        |h| matches!(h, ResponseHead::Data { name, .. } if name.eq_ignore_ascii_case(b"SEARCH")),
        &mut |data| {
            let Ok(ResponseHead::Data { rest, .. }) = response_head(&data) else {
                return Err(WriterError::Protocol(ProtocolViolation::MalformedSearch));
            };
            let numbers = search_numbers(rest)
                .ok_or(WriterError::Protocol(ProtocolViolation::MalformedSearch))?;
            uids.extend(numbers);
            Ok(())
        },
    )
    .await?
    .ok("UID SEARCH")?;
    uids.sort_unstable();
    uids.dedup();
    Ok(uids)
}

pub(super) async fn hierarchy_separator(conn: &mut Conn) -> Result<Option<u8>, WriterError> {
    let (tag, mut command) = conn.command("LIST");
    command.raw(b" \"\" \"\"");
    let mut separator = None;
    conn.run(
        "LIST",
        &tag,
        command,
        |h| matches!(h, ResponseHead::Data { name, .. } if name.eq_ignore_ascii_case(b"LIST")),
        &mut |data| {
            separator = separator.or(list_delimiter(&data));
            Ok(())
        },
    )
    .await?
    .ok("LIST")?;
    Ok(separator)
}

pub(super) async fn uid_fetch_bodies(
    conn: &mut Conn,
    uids: &[u32],
    max_total: usize,
) -> Result<Vec<(u32, Bytes)>, WriterError> {
    if uids.is_empty() {
        return Ok(Vec::new());
    }
    let set = client::uid_set(uids)?;
    let (tag, mut command) = conn.command("UID FETCH");
    command.sp().raw(&set).raw(b" (UID BODY.PEEK[])");
    let mut bodies = Vec::new();
    let mut total = 0usize;
    let mut too_large = false;
    conn.run(
        "UID FETCH",
        &tag,
        command,
        |h| matches!(h, ResponseHead::Numbered { name, .. } if name.eq_ignore_ascii_case(b"FETCH")),
        &mut |data| {
            let fetched = client::fetch_data(&data)
                .map_err(|_| WriterError::Protocol(ProtocolViolation::MalformedFetch))?;
            // Unsolicited FETCHes (flag changes) carry no body and are ignored, as is
            // anything for a UID not asked for.
            if let (Some(uid), Some(body)) = (fetched.uid, fetched.body) {
                if uids.contains(&uid) && !too_large {
                    total = total.saturating_add(body.len());
                    if total > max_total {
                        too_large = true;
                        bodies.clear();
                    } else {
                        bodies.push((uid, body));
                    }
                }
            }
            Ok(())
        },
    )
    .await?
    .ok("UID FETCH")?;
    if too_large {
        return Err(WriterError::ResponseTooLarge { limit: max_total });
    }
    bodies.sort_by_key(|(uid, _)| *uid);
    bodies.dedup_by_key(|(uid, _)| *uid);
    Ok(bodies)
}

pub(super) async fn uid_store_add_flags(
    conn: &mut Conn,
    uids: &[u32],
    flags: &[&str],
) -> Result<(), WriterError> {
    let set = client::uid_set(uids)?;
    let flag_list = client::flag_list(flags)?;
    let (tag, mut command) = conn.command("UID STORE");
    command
        .sp()
        .raw(&set)
        .raw(b" +FLAGS.SILENT ")
        .raw(&flag_list);
    conn.run("UID STORE", &tag, command, want_none, &mut |_| Ok(()))
        .await?
        .ok("UID STORE")?;
    Ok(())
}

pub(super) async fn uid_expunge(conn: &mut Conn, uids: &[u32]) -> Result<(), WriterError> {
    let set = client::uid_set(uids)?;
    let (tag, mut command) = conn.command("UID EXPUNGE");
    command.sp().raw(&set);
    conn.run("UID EXPUNGE", &tag, command, want_none, &mut |_| Ok(()))
        .await?
        .ok("UID EXPUNGE")?;
    Ok(())
}

pub(super) async fn get_metadata(
    conn: &mut Conn,
    mailbox: &str,
    entries: &[&str],
) -> Result<Vec<(String, Option<Bytes>)>, WriterError> {
    let mut values: Vec<(String, Option<Bytes>)> =
        entries.iter().map(|e| ((*e).to_owned(), None)).collect();
    if entries.is_empty() {
        return Ok(values);
    }
    let (tag, mut command) = conn.command("GETMETADATA");
    command.sp().mailbox(mailbox)?.raw(b" (");
    for (i, entry) in entries.iter().enumerate() {
        if i > 0 {
            command.sp();
        }
        command.entry(entry)?;
    }
    command.raw(b")");
    conn.run(
        "GETMETADATA",
        &tag,
        command,
        |h| matches!(h, ResponseHead::Data { name, .. } if name.eq_ignore_ascii_case(b"METADATA")),
        &mut |data| {
            let malformed = WriterError::Protocol(ProtocolViolation::MalformedMetadata);
            let Ok(ResponseHead::Data { rest, .. }) = response_head(&data) else {
                return Err(malformed);
            };
            let (_, got) = metadata_response(rest).ok_or(malformed)?;
            for (entry, value) in got {
                // Entry names are case-insensitive (RFC 5464 §3.2).
                if let Some(slot) = values
                    .iter_mut()
                    .find(|(e, _)| e.as_bytes().eq_ignore_ascii_case(&entry))
                {
                    slot.1 = value.map(Bytes::from);
                }
            }
            Ok(())
        },
    )
    .await?
    .ok("GETMETADATA")?;
    Ok(values)
}

pub(super) async fn set_metadata(
    conn: &mut Conn,
    mailbox: &str,
    entries: &[(&str, Option<&[u8]>)],
) -> Result<(), WriterError> {
    if entries.is_empty() {
        return Ok(());
    }
    let (tag, mut command) = conn.command("SETMETADATA");
    command.sp().mailbox(mailbox)?.raw(b" (");
    for (i, (entry, value)) in entries.iter().enumerate() {
        if i > 0 {
            command.sp();
        }
        command.entry(entry)?.sp().nstring(*value);
    }
    command.raw(b")");
    conn.run("SETMETADATA", &tag, command, want_none, &mut |_| Ok(()))
        .await?
        .ok("SETMETADATA")?;
    Ok(())
}
