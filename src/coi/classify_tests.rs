use proptest::prelude::*;

use super::*;
use crate::coi::headers::MAX_HEADER_BLOCK;

fn verdict(fields: &str) -> Classification {
    let message = format!("{fields}\r\n\r\nbody\r\n");
    let (header, _) = HeaderBlock::parse_message(message.as_bytes(), MAX_HEADER_BLOCK).unwrap();
    classify(&header)
}

fn reason(fields: &str) -> Option<ChatReason> {
    let v = verdict(fields);
    assert_eq!(v.chat, v.reason.is_some(), "{fields:?}");
    v.reason
}

#[test]
fn chat_rules_known_answers() {
    use ChatReason::*;
    let cases: &[(&str, Option<ChatReason>)] = &[
        // Rule 1: Chat-Version, any value, any case of the name.
        ("Chat-Version: 1.0", Some(ChatVersion)),
        ("chat-version:", Some(ChatVersion)),
        ("CHAT-VERSION : 1.0;foo=bar", Some(ChatVersion)),
        ("Chat-Version:\r\n 1.0", Some(ChatVersion)),
        (
            "Message-ID: <chat$x@y>\r\nChat-Version: 1.0",
            Some(ChatVersion),
        ),
        // Rule 2: chat$ in the Message-ID or the first References id.
        ("Message-ID: <chat$abc@example.org>", Some(CoiMessageId)),
        ("Message-Id:<chat$abc@example.org>", Some(CoiMessageId)),
        (
            "message-id: (comment) <chat$abc@example.org> (c)",
            Some(CoiMessageId),
        ),
        ("Message-ID:\r\n <chat$abc@example.org>", Some(CoiMessageId)),
        ("Message-ID: < chat$abc@example.org >", Some(CoiMessageId)),
        ("Message-ID: chat$abc@example.org", Some(CoiMessageId)),
        (
            "Message-ID: <chat$group.abcdefghijkl.x@y>",
            Some(CoiMessageId),
        ),
        ("References: <chat$root@x> <other@y>", Some(CoiReferences)),
        (
            "References:\r\n <chat$root@x>\r\n <other@y>",
            Some(CoiReferences),
        ),
        (
            "Message-ID: <a@b>\r\nReferences: <chat$r@x>",
            Some(CoiReferences),
        ),
        // Only the first References id counts.
        ("References: <other@y> <chat$root@x>", None),
        // Only the first Message-ID / References field counts.
        ("Message-ID: <a@b>\r\nMessage-ID: <chat$x@y>", None),
        ("References: <a@b>\r\nReferences: <chat$x@y>", None),
        // Case-sensitive prefix, as in Dovecot.
        ("Message-ID: <Chat$abc@x>", None),
        ("Message-ID: <CHAT$abc@x>", None),
        // Rule 3: legacy Delta Chat.
        (
            "Message-ID: <Gr.abcdefghij.xyz@example.org>",
            Some(LegacyMessageId),
        ),
        (
            "Message-ID: <Mr.abc.def@example.org>",
            Some(LegacyMessageId),
        ),
        ("References: <Gr.abc.def@x>", Some(LegacyReferences)),
        ("References: <Mr.abc.def@x> <y@z>", Some(LegacyReferences)),
        ("Message-ID: <gr.abc@x>", None),
        ("Message-ID: <mr.abc@x>", None),
        // COI wins over legacy, the Message-ID over References.
        (
            "References: <chat$r@x>\r\nMessage-ID: <Gr.a.b@x>",
            Some(CoiReferences),
        ),
        (
            "References: <Gr.a.b@x>\r\nMessage-ID: <chat$a@x>",
            Some(CoiMessageId),
        ),
        // Not chat: In-Reply-To is not consulted, @localhost is no marker.
        ("In-Reply-To: <chat$x@y>", None),
        (
            "Message-ID: <0f1e2d3c-aaaa-bbbb-cccc-ddddeeeeffff@localhost>",
            None,
        ),
        ("Subject: chat$ Chat-Version", None),
        ("X-Chat-Version: 1.0", None),
        ("Chat-Version-Extra: 1.0", None),
        ("Message-ID: <>", None),
        ("Message-ID:", None),
        ("Message-ID: (only a comment)", None),
    ];
    for (fields, expected) in cases {
        assert_eq!(reason(fields), *expected, "{fields:?}");
    }
}

#[test]
fn sub_classes_known_answers() {
    // (fields, mdn, machine, group)
    let cases: &[(&str, bool, bool, bool)] = &[
        ("Chat-Version: 1.0", false, false, false),
        (
            "Chat-Version: 1.0\r\nContent-Type: multipart/report; report-type=disposition-notification; boundary=x",
            true,
            false,
            false,
        ),
        (
            "Content-Type: Multipart/Report;\r\n\tboundary=\"x\"; Report-Type=\"disposition-notification\"",
            true,
            false,
            false,
        ),
        (
            "Content-Type: multipart/report (c); report-type = disposition-notification (c)",
            true,
            false,
            false,
        ),
        (
            "Content-Type: multipart/report; report-type=delivery-status",
            false,
            false,
            false,
        ),
        (
            "Content-Type: multipart/mixed; report-type=disposition-notification",
            false,
            false,
            false,
        ),
        // Encrypted MDN: chat + auto-replied.
        (
            "Chat-Version: 1.0\r\nAuto-Submitted: auto-replied",
            true,
            false,
            false,
        ),
        ("Chat-Version: 1.0\r\nAuto-Submitted: Auto-Replied (x)", true, false, false),
        // Not chat: auto-replied alone is no MDN.
        ("Auto-Submitted: auto-replied", false, false, false),
        ("Chat-Version: 1.0\r\nAuto-Submitted: auto-generated", false, true, false),
        ("Auto-Submitted: auto-generated; owner-email=x@y", false, true, false),
        ("Auto-Submitted: no", false, false, false),
        ("Chat-Version: 1.0\r\nSecure-Join: vc-request", false, true, false),
        ("Message-ID: <chat$group.abcdefghijkl.x@y>", false, false, true),
        ("References: <chat$group.abcdefghijkl.x@y>", false, false, true),
        ("Message-ID: <Gr.abcdefghijkl.x@y>", false, false, true),
        ("Message-ID: <Mr.abc.def@y>", false, false, false),
        ("Chat-Version: 1.0\r\nChat-Group-ID: abcdefghijkl", false, false, true),
        ("Message-ID: <chat$abc@y>", false, false, false),
    ];
    for (fields, mdn, machine, group) in cases {
        let v = verdict(fields);
        assert_eq!(
            (v.mdn, v.machine, v.group),
            (*mdn, *machine, *group),
            "{fields:?}"
        );
    }
}

/// The outer headers of a real Delta Chat message and of a Delta Chat MDN.
#[test]
fn delta_chat_messages() {
    let message = b"MIME-Version: 1.0\r\n\
        Message-ID: <0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0@localhost>\r\n\
        From: <alice@example.org>\r\n\
        To: hidden-recipients:;\r\n\
        Subject: [...]\r\n\
        Date: Tue, 01 Jul 2025 10:00:00 +0000\r\n\
        Chat-Version: 1.0\r\n\
        Autocrypt: addr=alice@example.org; prefer-encrypt=mutual; keydata=\r\n xsDNBF...\r\n\
        Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\";\r\n\
        \tboundary=\"xyz\"\r\n\r\n--xyz\r\n";
    let (header, _) = HeaderBlock::parse_message(message, MAX_HEADER_BLOCK).unwrap();
    let v = classify(&header);
    assert_eq!(v.reason, Some(ChatReason::ChatVersion));
    assert!(!v.mdn && !v.machine && !v.group);

    let mdn = b"Chat-Version: 1.0\r\nAuto-Submitted: auto-replied\r\n\
        Subject: Receipt Notification\r\n\
        Content-Type: multipart/report; report-type=disposition-notification;\r\n\
        \tboundary=\"b\"\r\n\r\n--b\r\n";
    let (header, _) = HeaderBlock::parse_message(mdn, MAX_HEADER_BLOCK).unwrap();
    assert!(classify(&header).mdn);
}

/// SECURITY-CASES case 44: only the top-level header block counts.
#[test]
fn nested_parts_and_body_never_count() {
    let message = b"From: a@x\r\nTo: b@y\r\nMessage-ID: <plain@x>\r\n\
        Content-Type: multipart/mixed; boundary=b\r\n\r\n\
        --b\r\nContent-Type: message/rfc822\r\n\r\n\
        Chat-Version: 1.0\r\nMessage-ID: <chat$x@y>\r\nChat-Group-ID: abcdefghijkl\r\n\
        Auto-Submitted: auto-generated\r\n\r\ninner\r\n--b--\r\n";
    let (header, _) = HeaderBlock::parse_message(message, MAX_HEADER_BLOCK).unwrap();
    assert_eq!(classify(&header), Classification::default());
    // Nor a continuation line that only mentions a chat field.
    assert_eq!(reason("Subject: hi\r\n Chat-Version: 1.0"), None);
}

#[test]
fn msg_id_parser() {
    let cases: &[(&[u8], Option<&[u8]>)] = &[
        (b"<a@b>", Some(b"a@b")),
        (b"  <a@b>  <c@d>", Some(b"a@b")),
        (b"(x (nested) y) <a@b>", Some(b"a@b")),
        (b"\r\n <a@b>", Some(b"a@b")),
        (b"<a@b", Some(b"a@b")),
        (b"a@b <c@d>", Some(b"a@b")),
        (b"a@b(c)", Some(b"a@b")),
        (b"", None),
        (b"  ", None),
        (b"<>", None),
        (b"(unclosed <a@b>", None),
    ];
    for (value, expected) in cases {
        assert_eq!(first_msg_id(value), *expected, "{value:?}");
    }
}

proptest! {
    /// Whatever precedes or follows, a Chat-Version field in the top-level block makes
    /// the message chat, and one in the body never does.
    #[test]
    fn chat_version_anywhere_in_the_header_only(
        before in prop::collection::vec("[A-Za-z-]{1,10}: [ -~]{0,20}", 0..5),
        after in prop::collection::vec("[A-Za-z-]{1,10}: [ -~]{0,20}", 0..5),
        in_header in any::<bool>(),
    ) {
        let before: Vec<_> = before.into_iter().filter(|f| !f.to_ascii_lowercase().starts_with("chat-version")).collect();
        let after: Vec<_> = after.into_iter().filter(|f| !f.to_ascii_lowercase().starts_with("chat-version")).collect();
        let mut fields = before.join("\r\n");
        if in_header {
            if !fields.is_empty() { fields.push_str("\r\n"); }
            fields.push_str("Chat-Version: 1.0");
        }
        for f in &after {
            if !fields.is_empty() { fields.push_str("\r\n"); }
            fields.push_str(f);
        }
        let mut message = fields.clone();
        if !message.is_empty() { message.push_str("\r\n"); }
        message.push_str("\r\nChat-Version: 1.0\r\n\r\n");
        let (header, _) = HeaderBlock::parse_message(message.as_bytes(), MAX_HEADER_BLOCK).unwrap();
        let v = classify(&header);
        if in_header {
            prop_assert_eq!(v.reason, Some(ChatReason::ChatVersion));
        } else {
            prop_assert_ne!(v.reason, Some(ChatReason::ChatVersion));
        }
    }

    #[test]
    fn fuzz_body_holds_on_random_input(data in prop::collection::vec(any::<u8>(), 0..300)) {
        fuzz_classify(&data);
    }
}

#[test]
fn fuzz_body_holds_on_samples() {
    fuzz_classify(b"Chat-Version: 1.0\r\n\r\nbody");
    fuzz_classify(b"Message-ID: <chat$x@y>\r\n");
    fuzz_classify(b"\r\n");
    fuzz_classify(b"");
    fuzz_classify(
        b"Content-Type: multipart/report; report-type=\"disposition-notification\r\n\r\n",
    );
}
