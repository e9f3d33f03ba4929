use proptest::prelude::*;

use super::*;
use crate::coi::address;
use crate::coi::token::{issue, Secret, Secrets, TokenKind};

/// COI-PROTOCOL §6.3 V1: issued by Bob's server for Alice → Bob (Bob's TokenIn).
const V1: &str = "1-created:1577836800-validity:31536000-hash:TdHUhOQ7ODVMjIHvrButNUNYwPWiGb8maGg8jKuFw4k-secret:2gOGPjhKTwAic/FIxxsRdCBo21SGgbte4D004oIXHRY";
/// §6.3 V5: issued by Alice's server for Bob → Alice (Bob's TokenOut).
const V5: &str = "1-created:1577836800-validity:31536000-hash:Wjt8eq0Za1LhDTH9RyH4c0FwwHOrYmd0rR5WdYzkaM0-secret:Qv0///JjJ2OY84N7VS+rs8OWlqiMt3KwRBm5v6aFjPw";
/// §6.3 V2: temporary, valid at 1700300000, expired at 1700604801.
const V2: &str = "1-created:1700000000-validity:604800-hash:6qBSL/BDAMqGoyZDH0YGEaqrnJSKSS5dyE0VQV1IK1Y-secret:FDxDsgidfPeiiYBAL0o1Wld7xiZ0BYHDPQa4IZVDR0U";

const JAN_2020: u64 = 1_577_836_800;

/// §6.2: `alice@example.org:bob@example.net` and its reverse.
const PAIR_ALICE_BOB: &str = "TdHUhOQ7ODVMjIHvrButNUNYwPWiGb8maGg8jKuFw4k";
const PAIR_BOB_ALICE: &str = "Wjt8eq0Za1LhDTH9RyH4c0FwwHOrYmd0rR5WdYzkaM0";

/// §6.2: From-Hash of `alice@example.org`, both forms.
const ALICE_B64: &str = "xAxnjQtFYigt1naoByWwAO7dWeb9GovCTXN2GOWdHyM";
const ALICE_HEX: &str = "c40c678d0b4562282dd676a80725b000eedd59e6fd1a8bc24d737618e59d1f23";

/// §6.2: the client spec's example, `john.doe@coi-dev.org`.
const JOHN_HEX: &str = "74b3c446c189580045a942b90b7461128bc334b3b67e9f63c0c06189248c9bb0";
const JOHN_B64: &str = "dLPERsGJWABFqUK5C3RhEovDNLO2fp9jwMBhiSSMm7A";

fn addr(path: &str) -> NormalizedAddress {
    address::normalize(path).unwrap()
}

fn tok(text: &str) -> Token {
    Token::parse(text).unwrap()
}

/// A genuine permanent token for `hash`.
fn token(created: u64, validity: u64, hash: &str) -> Token {
    let secrets = Secrets {
        temporary: Vec::new(),
        permanent: vec![Secret::new("perm-secret-1").unwrap()],
    };
    issue(TokenKind::Permanent, created, validity, hash, &[], &secrets).unwrap()
}

fn parse(message: &[u8]) -> Contact {
    Contact::parse(message).unwrap()
}

fn stored(uid: u32, message: &str) -> Stored {
    Stored {
        uid,
        contact: parse(message.as_bytes()),
    }
}

/// A well-formed token string of exactly `len` characters.
fn token_of_len(len: usize) -> String {
    let frame = "1-created:1-validity:1-hash:h-x:-secret:s";
    let token = format!(
        "1-created:1-validity:1-hash:h-x:{}-secret:s",
        "a".repeat(len - frame.len())
    );
    assert_eq!(token.len(), len);
    token
}

fn empty_contact() -> Contact {
    parse(b"Subject: Contact\r\n\r\n")
}

// === parse ===

#[test]
fn dovecot_written_contact() {
    // What Dovecot's LMTP writes into Bob's Contacts for Alice (COI-PROTOCOL §4.9, §4.10):
    // the hash, the subject, the tokens at the end of the header, an empty body.
    let message = format!(
        "COI-From-Hash: {ALICE_B64}\r\nSubject: Contact\r\n\
         COI-TokenIn: {V1}\r\nCOI-TokenOut: {V5}\r\n\r\n"
    );
    let contact = parse(message.as_bytes());
    assert_eq!(contact.from_hashes(), [ALICE_B64]);
    assert_eq!(contact.token_in(), [tok(V1)]);
    assert_eq!(contact.token_out(), [tok(V5)]);
    assert!(!contact.is_blocked());
    assert_eq!(contact.date(), None);
    assert_eq!(contact.discarded(), Discarded::default());
    assert_eq!(
        contact.header_without_tokens(),
        format!("COI-From-Hash: {ALICE_B64}\r\nSubject: Contact\r\n").as_bytes()
    );
    assert_eq!(contact.body(), b"");
    assert!(contact.belongs_to(&addr("Alice@Example.ORG")));
    assert!(!contact.belongs_to(&addr("bob@example.net")));
    assert_eq!(contact.newest_token_in(PAIR_ALICE_BOB), Some(&tok(V1)));
    assert_eq!(contact.newest_token_out(PAIR_BOB_ALICE), Some(&tok(V5)));
    assert_eq!(contact.newest_token_out(PAIR_ALICE_BOB), None);
    // Dovecot's layout is ours: rendered unchanged, byte for byte.
    assert_eq!(contact.render(), message.as_bytes());
}

const HCARD_BODY: &str = "<div class=\"h-card\">\r\n\
    <span class=\"p-name\">John Doe</span>\r\n\
    <a class=\"u-email\" href=\"mailto:john.doe@coi-dev.org\">john.doe@coi-dev.org</a>\r\n\
    <span class=\"p-notification\">enabled=yes;types=all</span>\r\n\
    </div>\r\n\
    COI-TokenIn: in the body, not a field\r\n\
    a bare\nLF and a NUL \0 in the body\r\n";

const ENCRYPTED_BODY: &str = "--b1\r\nContent-Type: application/pgp-encrypted\r\n\r\n\
    Version: 1\r\n--b1\r\nContent-Type: application/octet-stream\r\n\r\n\
    -----BEGIN PGP MESSAGE-----\r\n\r\nhQEMA1234\r\n=abcd\r\n-----END PGP MESSAGE-----\r\n--b1--\r\n";

#[test]
fn client_written_contact_survives_an_update() {
    let old_out = token(JAN_2020, 31_536_000, PAIR_BOB_ALICE);
    let new_out = token(JAN_2020 + 3600, 31_536_000, PAIR_BOB_ALICE);
    for (content_type, body) in [
        ("text/html; charset=utf-8", HCARD_BODY),
        (
            "multipart/encrypted; protocol=\"application/pgp-encrypted\";\r\n boundary=\"b1\"",
            ENCRYPTED_BODY,
        ),
    ] {
        // Token fields in the middle (one folded, one in lower case), a folded field, a
        // display name, COI-Blocked.
        let kept = [
            "From: Bob <bob@example.net>\r\n".to_owned(),
            "To: John <john.doe@coi-dev.org>\r\n".to_owned(),
            "Subject: Contact\r\n".to_owned(),
            "Date: Sat, 01 Feb 2020 10:00:00 +0100\r\n".to_owned(),
            "Message-ID: <chat$contact.1234@example.net>\r\n".to_owned(),
            "Chat-Version: 1.0\r\n".to_owned(),
            "MIME-Version: 1.0\r\n".to_owned(),
            "Chat-Content: contact\r\n".to_owned(),
            format!("COI-From-Hash: {JOHN_HEX}\r\n"),
            "X-Folded: first\r\n\t second\r\n".to_owned(),
            "COI-Blocked: yes\r\n".to_owned(),
            format!("Content-Type: {content_type}\r\n"),
        ];
        let mut message = String::new();
        for (i, line) in kept.iter().enumerate() {
            message.push_str(line);
            match i {
                5 => message.push_str(&format!("COI-TokenOut: {}\r\n", old_out.render())),
                9 => message.push_str(&format!("coi-tokenin:\r\n {V1}\r\n")),
                _ => {}
            }
        }
        message.push_str("\r\n");
        message.push_str(body);

        let mut contact = parse(message.as_bytes());
        assert_eq!(contact.from_hashes(), [JOHN_HEX]);
        assert!(contact.belongs_to(&addr("John.Doe@coi-dev.org")));
        assert!(contact.is_blocked());
        assert_eq!(contact.date(), Some(1_580_547_600));
        assert_eq!(contact.token_in(), [tok(V1)]);
        assert_eq!(contact.token_out(), std::slice::from_ref(&old_out));
        assert_eq!(contact.header_without_tokens(), kept.concat().as_bytes());
        assert_eq!(contact.body(), body.as_bytes());

        assert_eq!(contact.add_token_out(new_out.clone()), Ok(Change::Changed));
        let expected = format!(
            "{}COI-TokenIn: {V1}\r\nCOI-TokenOut: {}\r\n\r\n{body}",
            kept.concat(),
            new_out.render()
        );
        assert_eq!(
            String::from_utf8_lossy(&contact.render()),
            expected.as_str()
        );
        let back = parse(&contact.render());
        assert_eq!(back, contact);
    }
}

#[test]
fn malformed_token_fields_are_counted_and_dropped() {
    let with_hash_algo = V1.replace("-secret:", "-hash_algo:sha3-secret:");
    let overlong = token_of_len(MAX_CONTACT_TOKEN_LEN + 1);
    assert!(
        Token::parse(&overlong).is_ok(),
        "a token, but too long for a line"
    );
    let mut message = Vec::new();
    for line in [
        "Subject: Contact".to_owned(),
        "COI-TokenIn: garbage".to_owned(),
        "COI-TokenIn:".to_owned(),
        "COI-TokenIn:  \t ".to_owned(),
        format!("COI-TokenOut: {V1} {V5}"),
        format!("COI-TokenIn: {with_hash_algo}"),
        format!("COI-TokenOut: {}", V5.replacen('1', "2", 1)),
        format!("COI-TokenOut: <{V5}>"),
        format!("COI-TokenIn: {overlong}"),
        // Valid ones: any case, folded, surrounded by WSP.
        format!("coi-TOKENIN: \t{V1} "),
        format!("COI-TokenOut:\r\n\t{V5}"),
        // A line that is not a field is kept as it is, and is no token.
        format!("COI-TokenIn {V1}"),
    ] {
        message.extend_from_slice(line.as_bytes());
        message.extend_from_slice(b"\r\n");
    }
    message.extend_from_slice(b"COI-TokenIn: \xff\xfe\r\n\r\nbody\r\n");
    let contact = parse(&message);
    assert_eq!(contact.token_in(), [tok(V1)]);
    assert_eq!(contact.token_out(), [tok(V5)]);
    assert_eq!(
        contact.discarded(),
        Discarded {
            malformed: 9,
            over_limit: 0
        }
    );
    assert_eq!(
        String::from_utf8_lossy(&contact.render()),
        format!(
            "Subject: Contact\r\nCOI-TokenIn {V1}\r\n\
             COI-TokenIn: {V1}\r\nCOI-TokenOut: {V5}\r\n\r\nbody\r\n"
        )
    );

    // The longest storable token makes a line of exactly 998 octets.
    let longest = token_of_len(MAX_CONTACT_TOKEN_LEN);
    let mut contact = empty_contact();
    assert_eq!(contact.add_token_out(tok(&longest)), Ok(Change::Changed));
    let rendered = contact.render();
    let line = rendered
        .split(|&b| b == b'\n')
        .find(|l| l.starts_with(b"COI-TokenOut"))
        .unwrap();
    assert_eq!(line.len(), MAX_LINE + 1, "998 octets and the CR");
    assert_eq!(parse(&rendered), contact);
    assert_eq!(contact.add_token_out(tok(&overlong)), Err(TokenTooLong));
    assert_eq!(contact.add_token_in(tok(&overlong), 1), Err(TokenTooLong));
}

#[test]
fn oversize_messages_are_refused() {
    let header = b"Subject: Contact\r\n\r\n";
    let mut message = header.to_vec();
    message.resize(MAX_CONTACT_MESSAGE, b'x');
    let contact = parse(&message);
    assert_eq!(contact.body().len(), MAX_CONTACT_MESSAGE - header.len());
    message.push(b'x');
    assert_eq!(
        Contact::parse(&message),
        Err(ContactError::TooLarge {
            limit: MAX_CONTACT_MESSAGE
        })
    );
    // All header, no blank line, at exactly the limit: still read.
    let mut all_header = b"X-Long: ".to_vec();
    all_header.resize(MAX_CONTACT_MESSAGE - 2, b'a');
    all_header.extend_from_slice(b"\r\n");
    assert!(Contact::parse(&all_header).is_ok());
    // Too many fields is the header parser's limit.
    let many = "A: b\r\n".repeat(5000) + "\r\n";
    assert_eq!(
        Contact::parse(many.as_bytes()),
        Err(ContactError::Header(HeaderError::TooManyFields))
    );
}

#[test]
fn header_line_endings_must_be_crlf() {
    let bad: &[&[u8]] = &[
        // Stored with LF only: no CRLF anywhere.
        b"Subject: Contact\nCOI-TokenIn: x\n\nbody\n",
        b"Subject: Contact\nCOI-TokenIn: x\r\n\r\n",
        b"Subject: Con\rtact\r\n\r\n",
        b"Subject: Contact",
    ];
    for message in bad {
        assert!(
            matches!(Contact::parse(message), Err(ContactError::Header(_))),
            "{:?}",
            String::from_utf8_lossy(message)
        );
    }
    assert_eq!(
        Contact::parse(b"Subject: a\nCOI-TokenIn: x\r\n\r\n"),
        Err(ContactError::Header(HeaderError::BareLineEnding))
    );
    // The body is not parsed: bare line ends pass through.
    let message = b"Subject: Contact\r\n\r\nline\nline\rline\r\n";
    let contact = parse(message);
    assert_eq!(contact.render(), message);
    // No blank line: all header, written back without one; empty message.
    let contact = parse(b"Subject: Contact\r\n");
    assert_eq!(contact.render(), b"Subject: Contact\r\n");
    assert_eq!(parse(b"").render(), b"");
    assert_eq!(parse(b"\r\nbody").render(), b"\r\nbody");
}

// === new contacts and hashes ===

#[test]
fn new_contact_has_the_client_spec_headers() {
    let owner = addr("Bob@Example.NET");
    let mut contact =
        Contact::new(&owner, &addr("Alice@Example.ORG"), JAN_2020, "0123abcd").unwrap();
    let header = format!(
        "From: bob@example.net\r\n\
         Subject: Contact\r\n\
         Date: Wed, 01 Jan 2020 00:00:00 +0000\r\n\
         Message-ID: <chat$contact.0123abcd@example.net>\r\n\
         Chat-Version: 1.0\r\n\
         Chat-Content: contact\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         COI-From-Hash: {ALICE_HEX}\r\n\
         COI-From-Hash: {ALICE_B64}\r\n"
    );
    assert_eq!(
        String::from_utf8(contact.render()).unwrap(),
        format!("{header}\r\n")
    );
    assert_eq!(parse(&contact.render()), contact);
    assert_eq!(contact.date(), Some(i64::try_from(JAN_2020).unwrap()));
    assert_eq!(contact.from_hashes(), [ALICE_HEX, ALICE_B64]);
    assert!(contact.belongs_to(&addr("alice@example.org")));

    assert_eq!(contact.add_token_in(tok(V1), JAN_2020), Ok(Change::Changed));
    assert_eq!(contact.add_token_out(tok(V5)), Ok(Change::Changed));
    let rendered = contact.render();
    assert_eq!(
        String::from_utf8(rendered.clone()).unwrap(),
        format!("{header}COI-TokenIn: {V1}\r\nCOI-TokenOut: {V5}\r\n\r\n")
    );
    assert_eq!(parse(&rendered), contact);
    // A chat message by the proxy's own classifier.
    let (block, _) = HeaderBlock::parse_message(&rendered, usize::MAX).unwrap();
    assert!(crate::coi::classify::classify(&block).chat);

    // A quoted owner is written as normalised; the domain is the A-label.
    let contact = Contact::new(
        &addr("\"John Doe\"@Bücher.example"),
        &addr("alice@example.org"),
        0,
        "x",
    )
    .unwrap();
    let rendered = String::from_utf8(contact.render()).unwrap();
    assert!(rendered.starts_with("From: \"john doe\"@xn--bcher-kva.example\r\n"));
    assert!(rendered.contains("Date: Thu, 01 Jan 1970 00:00:00 +0000\r\n"));
    assert!(rendered.contains("Message-ID: <chat$contact.x@xn--bcher-kva.example>\r\n"));
}

#[test]
fn new_contact_refuses_bad_arguments() {
    let (owner, other) = (addr("bob@example.net"), addr("alice@example.org"));
    let new = |date, unique: &str| Contact::new(&owner, &other, date, unique).map(|_| ());
    for unique in ["a", "a.b", "A-z_0.9", "x".repeat(MAX_UNIQUE_LEN).as_str()] {
        assert_eq!(new(JAN_2020, unique), Ok(()), "{unique}");
    }
    for unique in [
        "",
        ".a",
        "a.",
        "a..b",
        "a b",
        "a@b",
        "<a>",
        "a\r\nB: c",
        "ä",
        "x".repeat(MAX_UNIQUE_LEN + 1).as_str(),
    ] {
        assert_eq!(
            new(JAN_2020, unique),
            Err(NewContactError::InvalidUnique),
            "{unique:?}"
        );
    }
    assert_eq!(new(MAX_RENDERED_TIME, "a"), Ok(()));
    assert_eq!(
        new(MAX_RENDERED_TIME + 1, "a"),
        Err(NewContactError::DateOutOfRange)
    );
    assert_eq!(new(u64::MAX, "a"), Err(NewContactError::DateOutOfRange));
}

#[test]
fn from_hash_vectors() {
    let alice = FromHash::of(&addr("alice@example.org"));
    assert_eq!(alice.base64, ALICE_B64);
    assert_eq!(alice.hex, ALICE_HEX);
    assert_eq!(alice.search_values(), [ALICE_B64, ALICE_HEX]);
    let john = FromHash::of(&addr("john.doe@coi-dev.org"));
    assert_eq!(
        (john.base64.as_str(), john.hex.as_str()),
        (JOHN_B64, JOHN_HEX)
    );
    assert_eq!(
        FromHash::of(&addr("john.doe@example.com")).hex,
        "834d1654133366cef4d81e81a7099f413b1b85b9fc9dd62140491303dec56532"
    );

    // A quoted local part: Dovecot hashes the quoted form, the client spec the unquoted.
    let quoted = FromHash::of(&addr("\"John Doe\"@Example.com"));
    assert_eq!(quoted.base64, "PUV5jGnUXSq5tcmFihJwWZPIq9S16p3g4t1lwE6V7Xk");
    let client_form = "48b8217f2ca7e0ec72c86332de7574881d91c3a4e0387d457f21b780419ac3ac";
    let quoted_form = "3d45798c69d45d2ab9b5c9858a12705993c8abd4b5ea9de0e2dd65c04e95ed79";
    assert_eq!(quoted.hex, client_form);
    assert_eq!(
        quoted.search_values(),
        [quoted.base64.as_str(), client_form, quoted_form]
    );
    for value in [quoted.base64.as_str(), client_form, quoted_form] {
        assert!(quoted.matches(value), "{value}");
    }
    assert_eq!(unquote("\"q\\\"uote\""), "q\"uote");

    // Hex in any case, base64 exactly.
    assert!(alice.matches(&ALICE_HEX.to_ascii_uppercase()));
    assert!(!alice.matches(&ALICE_B64.to_ascii_lowercase()));
    assert!(!alice.matches(&ALICE_B64[..42]));
    assert!(!alice.matches(""));
    assert!(!alice.matches(JOHN_HEX));
    let contact = parse(
        format!(
            "COI-From-Hash:\r\n   {}  \r\n\r\n",
            ALICE_HEX.to_ascii_uppercase()
        )
        .as_bytes(),
    );
    assert!(contact.belongs_to(&addr("ALICE@example.org")));
    assert!(contact.has_from_hash(&alice));
    assert!(!contact.has_from_hash(&john));
    // Several addresses, both forms, duplicates once.
    let contact = parse(
        format!(
            "COI-From-Hash: {JOHN_B64}\r\ncoi-from-hash: {ALICE_HEX}\r\n\
             COI-From-Hash: {JOHN_B64}\r\nCOI-From-Hash:\r\n\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(contact.from_hashes(), [JOHN_B64, ALICE_HEX]);
    assert!(contact.has_from_hash(&alice) && contact.has_from_hash(&john));
}

// === updates ===

#[test]
fn token_out_keeps_the_newest_per_pair_hash() {
    let mut contact = empty_contact();
    let old = token(JAN_2020, 1000, PAIR_BOB_ALICE);
    let newer = token(JAN_2020 + 10, 1000, PAIR_BOB_ALICE);
    let other_pair = token(JAN_2020, 1000, PAIR_ALICE_BOB);
    assert_eq!(contact.add_token_out(old.clone()), Ok(Change::Changed));
    assert_eq!(contact.add_token_out(newer.clone()), Ok(Change::Changed));
    assert_eq!(contact.token_out(), std::slice::from_ref(&newer));
    // Older than the one held: not stored.
    assert_eq!(contact.add_token_out(old), Ok(Change::Unchanged));
    assert_eq!(
        contact.add_token_out(other_pair.clone()),
        Ok(Change::Changed)
    );
    assert_eq!(contact.token_out(), [newer.clone(), other_pair.clone()]);
    // Same `created`, another token: the one handed over now wins.
    let tie = token(JAN_2020 + 10, 2000, PAIR_BOB_ALICE);
    assert_eq!(contact.add_token_out(tie.clone()), Ok(Change::Changed));
    assert_eq!(contact.token_out(), [other_pair, tie.clone()]);
    assert_eq!(contact.newest_token_out(PAIR_BOB_ALICE), Some(&tie));
    // TokenOut never touches TokenIn.
    assert!(contact.token_in().is_empty());

    // A stored contact holding two TokenOut for one pair is tidied by the next add.
    let mut contact = parse(
        format!(
            "COI-TokenOut: {}\r\nCOI-TokenOut: {}\r\n\r\n",
            newer.render(),
            token(JAN_2020, 5, PAIR_BOB_ALICE).render()
        )
        .as_bytes(),
    );
    assert_eq!(contact.token_out().len(), 2);
    assert_eq!(contact.newest_token_out(PAIR_BOB_ALICE), Some(&newer));
    let newest = token(JAN_2020 + 20, 1000, PAIR_BOB_ALICE);
    assert_eq!(contact.add_token_out(newest.clone()), Ok(Change::Changed));
    assert_eq!(contact.token_out(), [newest]);
}

#[test]
fn adding_what_is_there_is_a_no_op() {
    let message = format!(
        "Subject: Contact\r\nCOI-TokenOut: {V5}\r\nCOI-TokenIn: {V1}\r\nX-After: kept\r\n\r\nbody"
    );
    let mut contact = parse(message.as_bytes());
    let before = contact.clone();
    assert_eq!(contact.add_token_out(tok(V5)), Ok(Change::Unchanged));
    assert_eq!(
        contact.add_token_in(tok(V1), JAN_2020),
        Ok(Change::Unchanged)
    );
    assert_eq!(contact.prune_expired(JAN_2020), Change::Unchanged);
    assert_eq!(contact, before);
    // Unchanged, although rendering would move the token lines: the caller skips the
    // write, the stored message stays as it is.
    assert_ne!(contact.render(), message.as_bytes());
    assert_eq!(
        merge_duplicates(
            vec![Stored {
                uid: 1,
                contact: contact.clone()
            }],
            JAN_2020
        )
        .unwrap()
        .change,
        Change::Unchanged
    );
    assert_eq!(Change::Unchanged | Change::Unchanged, Change::Unchanged);
    assert_eq!(Change::Unchanged | Change::Changed, Change::Changed);
    assert_eq!(Change::Changed | Change::Unchanged, Change::Changed);
    assert!(Change::Changed.is_changed() && !Change::Unchanged.is_changed());
}

#[test]
fn token_in_keeps_all_but_the_expired() {
    let mut contact = empty_contact();
    let a = token(JAN_2020, 100, PAIR_ALICE_BOB);
    let b = token(JAN_2020 + 50, 100, PAIR_ALICE_BOB);
    assert_eq!(
        contact.add_token_in(a.clone(), JAN_2020),
        Ok(Change::Changed)
    );
    assert_eq!(
        contact.add_token_in(b.clone(), JAN_2020 + 60),
        Ok(Change::Changed)
    );
    assert_eq!(contact.token_in(), [a.clone(), b.clone()], "both kept");
    assert_eq!(contact.newest_token_in(PAIR_ALICE_BOB), Some(&b));
    // At JAN_2020 + 100, `a` is valid still (boundary inclusive).
    assert_eq!(
        contact.add_token_in(b.clone(), JAN_2020 + 100),
        Ok(Change::Unchanged)
    );
    // One second later it has expired: adding `b` again prunes it.
    assert_eq!(
        contact.add_token_in(b.clone(), JAN_2020 + 101),
        Ok(Change::Changed)
    );
    assert_eq!(contact.token_in(), std::slice::from_ref(&b));
    // An expired token is not stored.
    assert_eq!(
        contact.add_token_in(a, JAN_2020 + 101),
        Ok(Change::Unchanged)
    );
    // Created more than a day ahead: not valid, not expired either, kept.
    let future = token(JAN_2020 + 10 * 86_400, 100, PAIR_BOB_ALICE);
    assert_eq!(
        contact.add_token_in(future.clone(), JAN_2020 + 101),
        Ok(Change::Changed)
    );
    assert_eq!(contact.prune_expired(JAN_2020 + 150), Change::Unchanged);
    assert_eq!(contact.prune_expired(JAN_2020 + 151), Change::Changed);
    assert_eq!(contact.token_in(), [future]);

    // The §6.3 V2 vector's boundaries, and TokenOut pruned too.
    let mut contact = empty_contact();
    assert_eq!(
        contact.add_token_in(tok(V2), 1_700_300_000),
        Ok(Change::Changed)
    );
    assert_eq!(contact.add_token_out(tok(V2)), Ok(Change::Changed));
    assert_eq!(contact.prune_expired(1_700_604_800), Change::Unchanged);
    assert_eq!(contact.prune_expired(1_700_604_801), Change::Changed);
    assert!(contact.token_in().is_empty() && contact.token_out().is_empty());
    assert_eq!(
        contact.add_token_in(tok(V2), 1_700_604_801),
        Ok(Change::Unchanged)
    );
}

#[test]
fn the_oldest_tokens_beyond_the_limit_are_dropped() {
    let extra = 8;
    let count = MAX_TOKENS_PER_CONTACT + extra;
    let hash = |i: usize| format!("pair{i}");
    let mut message = String::from("Subject: Contact\r\n");
    // Oldest in the middle of the list, to check the order of the rest is kept.
    let created = |i: usize| JAN_2020 + ((i + count / 2) % count) as u64;
    for i in 0..count {
        let t = token(created(i), 1000, &hash(i));
        message.push_str(&format!(
            "COI-TokenIn: {}\r\nCOI-TokenOut: {}\r\n",
            t.render(),
            t.render()
        ));
    }
    message.push_str("\r\n");
    let mut contact = parse(message.as_bytes());
    assert_eq!(contact.discarded().over_limit, 2 * extra);
    let expected: Vec<Token> = (0..count)
        .filter(|&i| created(i) >= JAN_2020 + extra as u64)
        .map(|i| token(created(i), 1000, &hash(i)))
        .collect();
    assert_eq!(contact.token_in(), expected.as_slice());
    assert_eq!(contact.token_out(), expected.as_slice());

    // A newer token pushes the oldest out; one older than all is dropped at once.
    let newest = token(JAN_2020 + 1000, 1000, "fresh");
    assert_eq!(contact.add_token_out(newest.clone()), Ok(Change::Changed));
    assert_eq!(contact.token_out().len(), MAX_TOKENS_PER_CONTACT);
    assert!(contact.token_out().contains(&newest));
    let oldest_kept = JAN_2020 + extra as u64;
    assert!(!contact
        .token_out()
        .iter()
        .any(|t| t.created() == oldest_kept));
    let ancient = token(JAN_2020 - 1, 1000, "old");
    assert_eq!(
        contact.add_token_in(ancient, JAN_2020),
        Ok(Change::Unchanged)
    );
    assert_eq!(contact.token_in(), expected.as_slice());
}

// === merging duplicates ===

fn contact_message(
    date: Option<&str>,
    subject: &str,
    token_in: &[&Token],
    token_out: &[&Token],
) -> String {
    let mut message = format!("COI-From-Hash: {ALICE_B64}\r\nSubject: {subject}\r\n");
    if let Some(date) = date {
        message.push_str(&format!("Date: {date}\r\n"));
    }
    for t in token_in {
        message.push_str(&format!("COI-TokenIn: {}\r\n", t.render()));
    }
    for t in token_out {
        message.push_str(&format!("COI-TokenOut: {}\r\n", t.render()));
    }
    message.push_str(&format!("\r\nbody of {subject}\r\n"));
    message
}

#[test]
fn merge_takes_headers_from_the_newest_and_unites_tokens() {
    let now = JAN_2020 + 500;
    let in_1 = token(JAN_2020, 1000, PAIR_ALICE_BOB);
    let in_2 = token(JAN_2020 + 100, 1000, PAIR_ALICE_BOB);
    let in_expired = token(JAN_2020, 10, PAIR_ALICE_BOB);
    let out_old = token(JAN_2020, 1000, PAIR_BOB_ALICE);
    let out_new = token(JAN_2020 + 100, 1000, PAIR_BOB_ALICE);
    let out_other = token(JAN_2020, 1000, "other");
    let found = vec![
        stored(
            10,
            &contact_message(
                Some("Wed, 01 Jan 2020 00:00:00 +0000"),
                "a",
                &[&in_1],
                &[&out_new],
            ),
        ),
        // Newest Date despite the lowest UID.
        stored(
            5,
            &contact_message(
                Some("Thu, 02 Jan 2020 00:00:00 +0000"),
                "b",
                &[&in_2, &in_expired],
                &[&out_old],
            ),
        ),
        // No Date: the oldest.
        stored(20, &contact_message(None, "c", &[&in_1], &[&out_other])),
    ];
    let merged = merge_duplicates(found, now).unwrap();
    assert_eq!(merged.base_uid, 5);
    assert_eq!(merged.others, [10, 20]);
    assert_eq!(merged.change, Change::Changed);
    let contact = &merged.contact;
    assert!(String::from_utf8_lossy(contact.header_without_tokens()).contains("Subject: b\r\n"));
    assert_eq!(contact.body(), b"body of b\r\n");
    assert_eq!(contact.token_in(), [in_2, in_1]);
    assert_eq!(contact.token_out(), [out_new, out_other]);
}

#[test]
fn merge_breaks_date_ties_by_uid() {
    let date = Some("Wed, 01 Jan 2020 00:00:00 +0000");
    // The same instant in another zone is the same Date.
    let same = Some("Tue, 31 Dec 2019 19:00:00 -0500");
    let out_a = token(JAN_2020, 1000, PAIR_BOB_ALICE);
    let out_b = token(JAN_2020, 2000, PAIR_BOB_ALICE);
    let merged = merge_duplicates(
        vec![
            stored(8, &contact_message(same, "higher uid", &[], &[&out_b])),
            stored(7, &contact_message(date, "lower uid", &[], &[&out_a])),
        ],
        JAN_2020,
    )
    .unwrap();
    assert_eq!((merged.base_uid, merged.others.as_slice()), (8, &[7][..]));
    // A `created` tie between TokenOut goes to the newer mail's.
    assert_eq!(merged.contact.token_out(), std::slice::from_ref(&out_b));
    // Its token set is the base's: nothing to write, only UID 7 to expunge.
    assert_eq!(merged.change, Change::Unchanged);

    // Neither has a Date: the higher UID.
    let merged = merge_duplicates(
        vec![
            stored(3, &contact_message(None, "x", &[], &[&out_a])),
            stored(9, &contact_message(None, "y", &[], &[&out_b])),
        ],
        JAN_2020,
    )
    .unwrap();
    assert_eq!(merged.base_uid, 9);
    assert_eq!(merged.contact.token_out(), [out_b]);
    // An unparseable Date counts as none.
    let merged = merge_duplicates(
        vec![
            stored(3, &contact_message(Some("yesterday"), "x", &[], &[])),
            stored(2, &contact_message(date, "y", &[], &[])),
        ],
        JAN_2020,
    )
    .unwrap();
    assert_eq!(merged.base_uid, 2);
    assert_eq!(merge_duplicates(Vec::new(), JAN_2020), None);
}

#[test]
fn merge_of_one_contact_tidies_it() {
    let in_1 = token(JAN_2020, 1000, PAIR_ALICE_BOB);
    let out_old = token(JAN_2020, 1000, PAIR_BOB_ALICE);
    let out_new = token(JAN_2020 + 1, 1000, PAIR_BOB_ALICE);
    let message = contact_message(None, "s", &[&in_1, &in_1], &[&out_new, &out_old]);
    let merged = merge_duplicates(vec![stored(1, &message)], JAN_2020).unwrap();
    assert_eq!(merged.change, Change::Changed);
    assert!(merged.others.is_empty());
    assert_eq!(merged.contact.token_in(), std::slice::from_ref(&in_1));
    assert_eq!(merged.contact.token_out(), std::slice::from_ref(&out_new));
    let message = contact_message(None, "s", &[&in_1], &[&out_new]);
    let merged = merge_duplicates(vec![stored(1, &message)], JAN_2020).unwrap();
    assert_eq!(merged.change, Change::Unchanged);
    assert_eq!(merged.contact.render(), message.as_bytes());
}

// === dates ===

#[test]
fn dates_known_answers() {
    let jan = Some(JAN_2020 as i64);
    let cases: &[(&str, Option<i64>)] = &[
        ("Wed, 01 Jan 2020 00:00:00 +0000", jan),
        ("1 Jan 2020 00:00 +0000", jan),
        ("wed,01 jan 2020 00:00:00 +0000", jan),
        ("Wed, 01 Jan 2020 01:00:00 +0100", jan),
        ("Tue, 31 Dec 2019 19:00:00 EST", jan),
        ("Tue, 31 Dec 2019 16:00:00 pst", jan),
        ("Wed, 01 Jan 20 00:00:00 GMT", jan),
        ("01 Jan 120 00:00:00 UT", jan),
        ("Wed, 01 Jan 2020 00:00:00 Z", jan),
        ("Wed, 01 Jan 2020 00:00:00 -0000", jan),
        (
            "(c) Wed, 01 (x (nested)) Jan 2020\r\n 00:00:00 +0000 (UTC)",
            jan,
        ),
        ("Mon, 01 Jan 99 00:00:00 +0000", Some(915_148_800)),
        ("Thu, 01 Jan 1970 00:00:00 +0000", Some(0)),
        ("Wed, 31 Dec 1969 23:59:59 +0000", Some(-1)),
        ("Mon, 01 Jan 1900 00:00:00 +0000", Some(-2_208_988_800)),
        ("Tue, 29 Feb 2000 00:00:00 +0000", Some(951_782_400)),
        (
            "Wed, 01 Jan 2020 00:00:60 +0000",
            Some(JAN_2020 as i64 + 60),
        ),
        (
            "Fri, 31 Dec 9999 23:59:59 +0000",
            Some(MAX_RENDERED_TIME as i64),
        ),
        // Not dates.
        ("", None),
        ("yesterday", None),
        ("Wed, 01 Jan 2020 00:00:00", None),
        ("Wed, 01 Jan 2020 00:00:00 +0000 extra", None),
        ("Wed, 01 Foo 2020 00:00:00 +0000", None),
        ("Wed, 32 Jan 2020 00:00:00 +0000", None),
        ("Wed, 00 Jan 2020 00:00:00 +0000", None),
        ("Thu, 29 Feb 2100 00:00:00 +0000", None),
        ("Wed, 01 Jan 1899 00:00:00 +0000", None),
        ("Wed, 01 Jan 10000 00:00:00 +0000", None),
        ("Wed, 01 Jan 2020 24:00:00 +0000", None),
        ("Wed, 01 Jan 2020 00:60:00 +0000", None),
        ("Wed, 01 Jan 2020 00:00:61 +0000", None),
        ("Wed, 01 Jan 2020 0:00:00 +0000", None),
        ("Wed, 01 Jan 2020 00:00:00:00 +0000", None),
        ("Wed, 01 Jan 2020 00:00:00 +0060", None),
        ("Wed, 01 Jan 2020 00:00:00 +000", None),
        ("Wed, 01 Jan 2020 00:00:00 0000", None),
        ("Wed, 01 Jan 2020 00:00:00 U+T", None),
        ("Wed, 001 Jan 2020 00:00:00 +0000", None),
        ("Wed, 01 Jan 2020 00:00:00 \u{ff0b}0000", None),
    ];
    for (text, expected) in cases {
        assert_eq!(parse_date(text.as_bytes()), *expected, "{text:?}");
    }
    assert_eq!(parse_date(b"Wed, 01 Jan 2020 00:00:00 +0000\xff"), None);
    for (unix, text) in [
        (0, "Thu, 01 Jan 1970 00:00:00 +0000"),
        (JAN_2020, "Wed, 01 Jan 2020 00:00:00 +0000"),
        (951_782_400, "Tue, 29 Feb 2000 00:00:00 +0000"),
        (1_580_547_600, "Sat, 01 Feb 2020 09:00:00 +0000"),
        (MAX_RENDERED_TIME, "Fri, 31 Dec 9999 23:59:59 +0000"),
    ] {
        assert_eq!(format_date(unix).as_deref(), Some(text));
    }
    assert_eq!(format_date(MAX_RENDERED_TIME + 1), None);
}

// === fuzz body and properties ===

#[test]
fn fuzz_body_accepts_the_fixtures() {
    let owner = addr("bob@example.net");
    let mut new = Contact::new(&owner, &addr("alice@example.org"), JAN_2020, "u").unwrap();
    let _ = new.add_token_in(tok(V1), JAN_2020);
    let _ = new.add_token_out(tok(V5));
    let inputs: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"\r\n".to_vec(),
        b"COI-TokenIn: x".to_vec(),
        b"COI-TokenIn: x\r\n".to_vec(),
        b"\xff\r\n\r\n\xff".to_vec(),
        format!("COI-From-Hash: {ALICE_B64}\r\nSubject: Contact\r\nCOI-TokenIn: {V1}\r\nCOI-TokenOut: {V5}\r\n\r\n").into_bytes(),
        format!("COI-TokenOut: {V2}\r\nCOI-TokenIn: {V2}\r\nDate: Wed, 15 Nov 2023 00:00:00 +0000\r\n\r\n{HCARD_BODY}").into_bytes(),
        new.render(),
    ];
    for input in inputs {
        fuzz_contacts(&input);
    }
}

/// One header line of a generated contact.
#[derive(Clone, Debug)]
enum Line {
    Other(String),
    In(Token),
    Out(Token),
}

fn line_strategy() -> impl Strategy<Value = Line> {
    let names = prop::sample::select(vec![
        "Subject",
        "From",
        "To",
        "Date",
        "X-Thing",
        "Chat-Content",
        "COI-From-Hash",
        "COI-Blocked",
        "COI-Token",
        "COI-TokenInX",
    ]);
    let other = (names, "[ -~]{0,30}", proptest::option::of("[ -~]{1,20}")).prop_map(
        |(name, value, fold)| match fold {
            Some(more) => Line::Other(format!("{name}: {value}\r\n {more}\r\n")),
            None => Line::Other(format!("{name}: {value}\r\n")),
        },
    );
    let token = (
        1..=2_000_000_000u64,
        1..=100_000_000u64,
        prop::sample::select(vec!["h1", "h2", "h3", "h4"]),
        "[A-Za-z0-9+/]{1,43}",
    )
        .prop_map(|(created, validity, hash, secret)| {
            tok(&format!(
                "1-created:{created}-validity:{validity}-hash:{hash}-secret:{secret}"
            ))
        });
    prop_oneof![
        3 => other,
        1 => token.clone().prop_map(Line::In),
        1 => token.prop_map(Line::Out),
    ]
}

proptest! {
    /// Whatever the other fields, tokens and body: the tokens are read in order, the rest
    /// is kept byte for byte, and render → parse gives the same contact back.
    #[test]
    fn contacts_round_trip(
        lines in proptest::collection::vec(line_strategy(), 0..24),
        body in proptest::collection::vec(proptest::num::u8::ANY, 0..120),
        blank_line in proptest::bool::ANY,
    ) {
        let mut message = Vec::new();
        let (mut kept, mut token_in, mut token_out) = (Vec::new(), Vec::new(), Vec::new());
        for line in &lines {
            match line {
                Line::Other(text) => {
                    message.extend_from_slice(text.as_bytes());
                    kept.extend_from_slice(text.as_bytes());
                }
                Line::In(t) => {
                    message.extend_from_slice(format!("COI-TokenIn: {}\r\n", t.render()).as_bytes());
                    token_in.push(t.clone());
                }
                Line::Out(t) => {
                    message.extend_from_slice(format!("COI-TokenOut: {}\r\n", t.render()).as_bytes());
                    token_out.push(t.clone());
                }
            }
        }
        let body = if blank_line { body } else { Vec::new() };
        if blank_line {
            message.extend_from_slice(b"\r\n");
            message.extend_from_slice(&body);
        }
        let contact = Contact::parse(&message).unwrap();
        prop_assert_eq!(contact.token_in(), token_in.as_slice());
        prop_assert_eq!(contact.token_out(), token_out.as_slice());
        prop_assert_eq!(contact.header_without_tokens(), kept.as_slice());
        prop_assert_eq!(contact.body(), body.as_slice());
        prop_assert_eq!(contact.discarded(), Discarded::default());
        let back = Contact::parse(&contact.render()).unwrap();
        prop_assert_eq!(&back, &contact);
        fuzz_contacts(&message);
    }

    #[test]
    fn dates_round_trip(unix in 0..=MAX_RENDERED_TIME) {
        let text = format_date(unix).unwrap();
        prop_assert_eq!(parse_date(text.as_bytes()), Some(unix as i64));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
        fuzz_contacts(&bytes);
    }

    #[test]
    fn header_like_input_never_panics(
        lines in proptest::collection::vec(
            prop_oneof![
                "COI-Token(In|Out): [-:0-9a-z/+ ]{0,60}",
                "(COI-From-Hash|Date|COI-Blocked|X): [ -~]{0,40}",
                "[ \t][ -~]{0,20}",
                Just(format!("COI-TokenIn: {V1}")),
                Just(format!("COI-TokenOut: {V2}")),
                Just(String::new()),
            ],
            0..16,
        ),
        crlf in proptest::bool::ANY,
    ) {
        let end = if crlf { "\r\n" } else { "\n" };
        fuzz_contacts(lines.join(end).as_bytes());
        fuzz_contacts((lines.join(end) + end).as_bytes());
    }
}
