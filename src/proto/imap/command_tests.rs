use super::*;

#[test]
fn head_of_ordinary_and_uid_commands() {
    let head = command_head(b"a1 NOOP").unwrap();
    assert_eq!(
        (head.tag, head.name, head.uid, head.args),
        (&b"a1"[..], CommandName::Noop, false, &b""[..])
    );
    let head = command_head(b"x.y uid fetch 1:* (FLAGS)").unwrap();
    assert_eq!(
        (head.name, head.uid, head.args),
        (CommandName::Fetch, true, &b"1:* (FLAGS)"[..])
    );
    let head = command_head(b"t XAPPLEPUSHSERVICE aps-version 2").unwrap();
    assert_eq!(head.name, CommandName::Other);
}

#[test]
fn gibberish_instead_of_command() {
    assert_eq!(command_head(b"gibberish"), Err(CommandError::BadTag));
    assert_eq!(command_head(b""), Err(CommandError::BadTag));
    assert_eq!(command_head(b"+tag NOOP"), Err(CommandError::BadTag));
    assert_eq!(command_head(b"a (NOOP)"), Err(CommandError::BadCommandName));
    assert_eq!(
        command_head(b"a NOOP(x)"),
        Err(CommandError::BadCommandName)
    );
    assert_eq!(command_head(b"a UID"), Err(CommandError::BadCommandName));
}

#[test]
fn nul_or_cr_outside_literals_is_refused() {
    assert_eq!(
        command_head(b"a LOGIN \"us\0er\" pw"),
        Err(CommandError::ControlCharacter)
    );
    assert_eq!(
        command_head(b"a LOGIN \"a\rb\" pw"),
        Err(CommandError::ControlCharacter)
    );
    assert!(
        command_head(b"a LOGIN \"caf\xc3\xa9\" pw").is_ok(),
        "UTF-8 is allowed"
    );
}

#[test]
fn salvaged_tags_are_valid_tags_only() {
    assert_eq!(salvage_tag(b"a1 LOGIN \"x\0\""), Some(&b"a1"[..]));
    assert_eq!(
        salvage_tag(b"gibberish"),
        Some(&b"gibberish"[..]),
        "a lone word is a tag"
    );
    assert_eq!(salvage_tag(b""), None);
    assert_eq!(salvage_tag(b"(x) y"), None);
    assert_eq!(salvage_tag(b"a{ NOOP"), None);
}

#[test]
fn getmetadata_forms() {
    assert_eq!(
        intercepted(
            CommandName::GetMetadata,
            b"(DEPTH 1) \"\" (/private/vendor/vendor.dovecot/coi/config)"
        )
        .unwrap(),
        Intercepted::GetMetadata {
            depth: MetadataDepth::One,
            maxsize: None,
            mailbox: b"".to_vec(),
            entries: vec![b"/private/vendor/vendor.dovecot/coi/config".to_vec()],
        }
    );
    assert_eq!(
        intercepted(
            CommandName::GetMetadata,
            b"(MAXSIZE 100 DEPTH infinity) INBOX (/a /b)"
        )
        .unwrap(),
        Intercepted::GetMetadata {
            depth: MetadataDepth::Infinity,
            maxsize: Some(100),
            mailbox: b"INBOX".to_vec(),
            entries: vec![b"/a".to_vec(), b"/b".to_vec()],
        }
    );
    assert_eq!(
        intercepted(CommandName::GetMetadata, b"inbox /a").unwrap(),
        Intercepted::GetMetadata {
            depth: MetadataDepth::Zero,
            maxsize: None,
            mailbox: b"INBOX".to_vec(),
            entries: vec![b"/a".to_vec()]
        }
    );
    assert_eq!(
        intercepted(CommandName::GetMetadata, b"\"\""),
        Err(CommandError::BadArguments)
    );
    assert_eq!(
        intercepted(CommandName::GetMetadata, b"(DEPTH 2) \"\" /a"),
        Err(CommandError::BadArguments)
    );
}

#[test]
fn setmetadata_with_literal_quoted_and_nil_values() {
    assert_eq!(
        intercepted(
            CommandName::SetMetadata,
            b"\"\" (/private/a {3}\r\nyes /private/b NIL /private/c \"x y\")"
        )
        .unwrap(),
        Intercepted::SetMetadata {
            mailbox: b"".to_vec(),
            entries: vec![
                (b"/private/a".to_vec(), Some(b"yes".to_vec())),
                (b"/private/b".to_vec(), None),
                (b"/private/c".to_vec(), Some(b"x y".to_vec())),
            ],
        }
    );
    assert_eq!(
        intercepted(CommandName::SetMetadata, b"\"\" ()"),
        Err(CommandError::BadArguments)
    );
    assert_eq!(
        intercepted(CommandName::SetMetadata, b"\"\" (/a {5}\r\nyes)"),
        Err(CommandError::BadArguments),
        "short literal"
    );
}

#[test]
fn mailbox_management() {
    assert_eq!(
        intercepted(CommandName::Create, b"\"COI/Chats\"").unwrap(),
        Intercepted::Create {
            mailbox: b"COI/Chats".to_vec()
        }
    );
    assert_eq!(
        intercepted(CommandName::Create, b"x (USE (\\Drafts))").unwrap(),
        Intercepted::Create {
            mailbox: b"x".to_vec()
        }
    );
    assert_eq!(
        intercepted(CommandName::Delete, b"{9}\r\nCOI/Chats").unwrap(),
        Intercepted::Delete {
            mailbox: b"COI/Chats".to_vec()
        }
    );
    for smuggled in [
        &b"x {5}\r\nhello"[..],
        b"x garbage",
        b"x (USE (\\Drafts)) more",
        b"x (a\0b)",
        b"x ({3}\r\nabc)",
    ] {
        assert_eq!(
            intercepted(CommandName::Create, smuggled),
            Err(CommandError::BadArguments),
            "{smuggled:?}"
        );
    }
    assert!(intercepted(CommandName::Create, b"x (USE (\\Drafts \\Sent) X (y))").is_ok());
    assert_eq!(
        intercepted(CommandName::Rename, b"COI/Chats Trash/old").unwrap(),
        Intercepted::Rename {
            from: b"COI/Chats".to_vec(),
            to: b"Trash/old".to_vec()
        }
    );
}

#[test]
fn login_and_authenticate_arguments() {
    assert_eq!(login_userid(b"alice \"pw x\"").unwrap(), b"alice");
    assert_eq!(login_userid(b"{5}\r\nalice {2}\r\npw").unwrap(), b"alice");
    assert_eq!(login_userid(b"alice"), Err(CommandError::BadArguments));
    assert_eq!(authenticate(b"PLAIN").unwrap(), (&b"PLAIN"[..], None));
    assert_eq!(
        authenticate(b"PLAIN AGFsaWNlAHB3").unwrap(),
        (&b"PLAIN"[..], Some(&b"AGFsaWNlAHB3"[..]))
    );
    assert_eq!(
        authenticate(b"PLAIN ="),
        Ok((&b"PLAIN"[..], Some(&b"="[..])))
    );
    assert_eq!(authenticate(b"PLAIN a b"), Err(CommandError::BadArguments));
}

#[test]
fn quoted_strings_refuse_nul_cr_lf() {
    assert!(quoted(b"\"a\0b\"").is_err());
    assert!(quoted(b"\"a\rb\"").is_err());
    assert!(
        quoted(b"\"a\\x\"").is_err(),
        "only \\\" and \\\\ are escapes"
    );
    assert_eq!(quoted(b"\"a\\\"b\"").unwrap().1, b"a\"b");
}

#[test]
fn store_that_adds_seen() {
    assert!(store_adds_seen(b"1:3 +FLAGS (\\Seen)"));
    assert!(store_adds_seen(b"4 +flags.silent \\seen"));
    assert!(store_adds_seen(b"2 FLAGS (\\Answered \\Seen)"));
    assert!(store_adds_seen(b"1 (UNCHANGEDSINCE 12) +FLAGS (\\Seen)"));
    assert!(store_adds_seen(b"$ +FLAGS (\\Seen)"));
    assert!(!store_adds_seen(b"1 -FLAGS (\\Seen)"));
    assert!(!store_adds_seen(b"1 +FLAGS (\\Flagged)"));
    assert!(!store_adds_seen(b"1 +FLAGS ($SeenX)"));
    assert!(!store_adds_seen(b"x +FLAGS (\\Seen)"));
}

#[test]
fn fetch_that_sets_seen_implicitly() {
    assert!(fetch_sets_seen(b"1 BODY[]"));
    assert!(fetch_sets_seen(b"1:* (FLAGS BODY[TEXT])"));
    assert!(fetch_sets_seen(b"1 rfc822"));
    assert!(fetch_sets_seen(b"1 (RFC822.TEXT)"));
    assert!(fetch_sets_seen(b"1 BINARY[1]"));
    assert!(!fetch_sets_seen(b"1 BODY.PEEK[]"));
    assert!(!fetch_sets_seen(
        b"1 (RFC822.HEADER RFC822.SIZE BODY BODYSTRUCTURE)"
    ));
    assert!(!fetch_sets_seen(b"1 BINARY.PEEK[1]"));
    assert!(!fetch_sets_seen(b"1 FULL"));
}
