//! Is a message a chat message? The stateless rules 1–3 of COI-PROTOCOL.md §1.4, a
//! superset of COI (§1.1, Dovecot's `coi_mail_is_chat`, §1.2) and Delta Chat (§1.3),
//! over the top-level header block only (SECURITY-CASES case 44: a nested
//! `message/rfc822` part or the body never makes a message chat).
//!
//! First match wins:
//! 1. a `Chat-Version` field, whatever its value ([`ChatReason::ChatVersion`]);
//! 2. the first msg-id of the first `Message-ID`, else of the first `References`, starts
//!    with `chat$` (COI);
//! 3. either starts with `Gr.` or `Mr.` (legacy Delta Chat).
//!
//! Rule 4 (a reply to a known chat Message-ID) needs per-user state and is not here.
//! Prefixes are case-sensitive, as in Dovecot; field names are not. `In-Reply-To` is not
//! consulted (Dovecot removed it on purpose).
//!
//! The sub-classes are facts about the header, computed for every message; they matter
//! for chat messages (push suppression, UI):
//! - `mdn`: the outer `Content-Type` is `multipart/report` with
//!   `report-type=disposition-notification`, or the message is chat with
//!   `Auto-Submitted: auto-replied` (an encrypted MDN or a Secure-Join reply, equally
//!   silent);
//! - `machine`: `Auto-Submitted: auto-generated`, or a visible `Secure-Join` field;
//! - `group`: a `chat$group.` or `Gr.` id (Message-ID or first References id), or a
//!   visible `Chat-Group-ID`.

use std::borrow::Cow;

use super::headers::{skip_cfws, HeaderBlock};

/// Which rule made a message chat.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChatReason {
    /// Rule 1: a `Chat-Version` field.
    ChatVersion,
    /// Rule 2: the Message-ID starts with `chat$`.
    CoiMessageId,
    /// Rule 2: the first References id starts with `chat$`.
    CoiReferences,
    /// Rule 3: the Message-ID starts with `Gr.` or `Mr.`.
    LegacyMessageId,
    /// Rule 3: the first References id starts with `Gr.` or `Mr.`.
    LegacyReferences,
}

/// The verdict on one message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Classification {
    /// A chat message; `reason` is `Some` exactly when this is true.
    pub chat: bool,
    pub reason: Option<ChatReason>,
    /// A read receipt (or an equally silent auto-reply of a chat client).
    pub mdn: bool,
    /// Machine-generated: `Auto-Submitted: auto-generated` or Secure-Join.
    pub machine: bool,
    /// A group message.
    pub group: bool,
}

/// COI id prefix (COI-PROTOCOL §1.1), and the group form (`chat$group.<id>.<unique>`).
const COI_PREFIX: &[u8] = b"chat$";
const COI_GROUP_PREFIX: &[u8] = b"chat$group.";
/// Legacy Delta Chat prefixes: groups and 1:1 chats.
const LEGACY_GROUP_PREFIX: &[u8] = b"Gr.";
const LEGACY_SINGLE_PREFIX: &[u8] = b"Mr.";

/// Classifies a message by its top-level header block (rules 1–3, sub-classes).
pub fn classify(headers: &HeaderBlock) -> Classification {
    let message_id = first_id_of(headers, "Message-ID");
    let references = first_id_of(headers, "References");
    let ids = [message_id.as_deref(), references.as_deref()];

    let has_prefix = |prefix: &[u8]| ids.map(|id| id.is_some_and(|id| id.starts_with(prefix)));
    let is_legacy = |id: Option<&[u8]>| {
        id.is_some_and(|id| {
            id.starts_with(LEGACY_GROUP_PREFIX) || id.starts_with(LEGACY_SINGLE_PREFIX)
        })
    };
    let reason = if headers.first("Chat-Version").is_some() {
        Some(ChatReason::ChatVersion)
    } else if has_prefix(COI_PREFIX)[0] {
        Some(ChatReason::CoiMessageId)
    } else if has_prefix(COI_PREFIX)[1] {
        Some(ChatReason::CoiReferences)
    } else if is_legacy(ids[0]) {
        Some(ChatReason::LegacyMessageId)
    } else if is_legacy(ids[1]) {
        Some(ChatReason::LegacyReferences)
    } else {
        None
    };
    let chat = reason.is_some();

    let auto_submitted = headers
        .first("Auto-Submitted")
        .map(|f| first_token(&f.unfolded_value()).to_ascii_lowercase());
    let auto = |value: &str| auto_submitted.as_deref() == Some(value.as_bytes());
    let mdn_type = headers
        .first("Content-Type")
        .is_some_and(|f| is_mdn_content_type(&f.unfolded_value()));

    let group = has_prefix(COI_GROUP_PREFIX).contains(&true)
        || has_prefix(LEGACY_GROUP_PREFIX).contains(&true)
        || headers.first("Chat-Group-ID").is_some();

    Classification {
        chat,
        reason,
        mdn: mdn_type || (chat && auto("auto-replied")),
        machine: auto("auto-generated") || headers.first("Secure-Join").is_some(),
        group,
    }
}

/// The first msg-id of the first field named `name`, without its angle brackets.
fn first_id_of(headers: &HeaderBlock, name: &str) -> Option<Vec<u8>> {
    let field = headers.first(name)?;
    let value = field.unfolded_value();
    first_msg_id(&value).map(<[u8]>::to_vec)
}

/// The first `msg-id = [CFWS] "<" id-left "@" id-right ">" [CFWS]` (RFC 5322 §3.6.4)
/// of a field value (`msg-id` or `1*msg-id`), without the brackets and the whitespace
/// inside them. Tolerant, as Dovecot's parser is: comments are skipped, a missing `>`
/// runs to the end of the value, and an id written without brackets is the first word
/// (up to whitespace, `(`, `<` or `,`). `None` if there is nothing.
pub fn first_msg_id(value: &[u8]) -> Option<&[u8]> {
    let start = skip_cfws(value, 0);
    let rest = value.get(start..)?;
    let id = match rest.strip_prefix(b"<") {
        Some(inner) => {
            let end = memchr::memchr(b'>', inner).unwrap_or(inner.len());
            trim(&inner[..end])
        }
        None => {
            let end = rest
                .iter()
                .position(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n' | b'(' | b'<' | b','))
                .unwrap_or(rest.len());
            &rest[..end]
        }
    };
    (!id.is_empty()).then_some(id)
}

/// `multipart/report; report-type=disposition-notification` (RFC 6522, RFC 8098), types
/// and parameter names case-insensitive, the value a token or a quoted string, comments
/// anywhere.
fn is_mdn_content_type(value: &[u8]) -> bool {
    let mut i = skip_cfws(value, 0);
    let (media, next) = mime_token(value, i);
    i = skip_cfws(value, next);
    if !media.eq_ignore_ascii_case(b"multipart") || value.get(i) != Some(&b'/') {
        return false;
    }
    i = skip_cfws(value, i + 1);
    let (subtype, next) = mime_token(value, i);
    if !subtype.eq_ignore_ascii_case(b"report") {
        return false;
    }
    i = next;
    // `*(";" parameter)`, `parameter = attribute "=" value` (RFC 2045 §5.1).
    loop {
        i = skip_cfws(value, i);
        if value.get(i) != Some(&b';') {
            return false;
        }
        i = skip_cfws(value, i + 1);
        let (attribute, next) = mime_token(value, i);
        i = skip_cfws(value, next);
        if value.get(i) != Some(&b'=') {
            return false;
        }
        i = skip_cfws(value, i + 1);
        let (param, next) = parameter_value(value, i);
        i = next;
        if attribute.eq_ignore_ascii_case(b"report-type") {
            return param.eq_ignore_ascii_case(b"disposition-notification");
        }
    }
}

/// `token = 1*<any CHAR except SPACE, CTLs, or tspecials>` (RFC 2045 §5.1), possibly
/// empty here; returns it and the position after it.
fn mime_token(value: &[u8], start: usize) -> (&[u8], usize) {
    let len = value[start.min(value.len())..]
        .iter()
        .take_while(|&&b| {
            b > b' '
                && b < 0x7f
                && !matches!(
                    b,
                    b'(' | b')'
                        | b'<'
                        | b'>'
                        | b'@'
                        | b','
                        | b';'
                        | b':'
                        | b'\\'
                        | b'"'
                        | b'/'
                        | b'['
                        | b']'
                        | b'?'
                        | b'='
                )
        })
        .count();
    let start = start.min(value.len());
    (&value[start..start + len], start + len)
}

/// `value = token / quoted-string`, a quoted string unescaped.
fn parameter_value(value: &[u8], start: usize) -> (Cow<'_, [u8]>, usize) {
    if value.get(start) != Some(&b'"') {
        let (token, next) = mime_token(value, start);
        return (Cow::Borrowed(token), next);
    }
    let mut out = Vec::new();
    let mut i = start + 1;
    while i < value.len() {
        match value[i] {
            b'\\' if i + 1 < value.len() => {
                out.push(value[i + 1]);
                i += 2;
            }
            b'"' => return (Cow::Owned(out), i + 1),
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    (Cow::Owned(out), i)
}

/// The first word of an `Auto-Submitted` value (`auto-replied; ...`, RFC 3834 §5),
/// comments skipped.
fn first_token(value: &[u8]) -> &[u8] {
    let start = skip_cfws(value, 0);
    let len = value[start..]
        .iter()
        .take_while(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n' | b';' | b'('))
        .count();
    &value[start..start + len]
}

fn trim(value: &[u8]) -> &[u8] {
    let is_space = |b: &u8| matches!(b, b' ' | b'\t' | b'\r' | b'\n');
    let start = value
        .iter()
        .position(|b| !is_space(b))
        .unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !is_space(b))
        .map_or(start, |i| i + 1);
    &value[start..end]
}

/// Fuzz body (`coi_classify`): classification never panics; `chat` iff a reason; a
/// `Chat-Version` field always wins; and only the top-level block counts: appending a
/// body full of chat markers, or a blank-line-separated part, changes nothing.
#[doc(hidden)]
pub fn fuzz_classify(data: &[u8]) {
    let Ok((header, body)) = HeaderBlock::parse_message(data, super::headers::MAX_HEADER_BLOCK)
    else {
        return;
    };
    let verdict = classify(&header);
    assert_eq!(verdict.chat, verdict.reason.is_some());
    if header.first("Chat-Version").is_some() {
        assert_eq!(verdict.reason, Some(ChatReason::ChatVersion));
    }
    if verdict.mdn && !verdict.chat {
        assert!(header.first("Content-Type").is_some());
    }
    if let Some(id) = header.first("Message-ID").and_then(|f| {
        let v = f.unfolded_value();
        first_msg_id(&v).map(<[u8]>::to_vec)
    }) {
        assert!(!id.is_empty());
    }
    if !header.has_blank_line() {
        return;
    }
    let smuggled = b"Chat-Version: 1.0\r\nMessage-ID: <chat$x@y>\r\nReferences: <Gr.a.b@c>\r\n\
        Content-Type: multipart/report; report-type=disposition-notification\r\n\
        Auto-Submitted: auto-generated\r\nChat-Group-ID: abcdefghijkl\r\n\r\nbody\r\n";
    let mut message = header.raw().to_vec();
    message.extend_from_slice(body);
    message.extend_from_slice(b"\r\n");
    message.extend_from_slice(smuggled);
    let (again, _) = HeaderBlock::parse_message(&message, super::headers::MAX_HEADER_BLOCK)
        .expect("the same header block parses again");
    assert_eq!(&again, &header);
    assert_eq!(classify(&again), verdict, "the body never counts");
}

#[cfg(test)]
#[path = "classify_tests.rs"]
mod tests;
