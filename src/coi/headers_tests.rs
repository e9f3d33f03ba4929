use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::coi::classify::classify;
use crate::coi::token::{verify, Secret};

const SENDER: &str = "alice@example.org";

fn secrets() -> Secrets {
    Secrets {
        temporary: vec![Secret::new("temp secret").unwrap()],
        permanent: vec![Secret::new("perm secret").unwrap()],
    }
}

fn parse(message: &[u8]) -> (HeaderBlock, &[u8]) {
    HeaderBlock::parse_message(message, MAX_HEADER_BLOCK).unwrap()
}

/// Pushes `message` in the given pieces; returns the header (or error) and the body.
fn scan(pieces: &[&[u8]], limit: usize) -> (Result<HeaderBlock, HeaderError>, Vec<u8>) {
    let mut scanner = HeaderScanner::new(limit);
    let mut header = None;
    let mut body = Vec::new();
    for piece in pieces {
        if header.is_some() {
            body.extend_from_slice(piece);
            continue;
        }
        match scanner.push(Bytes::copy_from_slice(piece)) {
            Ok(Progress::NeedMore) => assert!(scanner.buffered() < limit),
            Ok(Progress::HeaderEnd {
                header: h,
                body_start,
            }) => {
                assert_eq!(scanner.buffered(), 0);
                body.extend_from_slice(&body_start);
                header = Some(Ok(h));
            }
            Err(e) => return (Err(e), body),
        }
    }
    (header.unwrap_or_else(|| scanner.finish()), body)
}

fn injection(recipient: &str) -> Injection {
    let sender = address::normalize(SENDER).unwrap();
    issue_injections(
        &[recipient.to_owned()],
        &sender,
        1_700_000_000,
        86_400,
        &secrets(),
    )
    .unwrap()
    .remove(0)
}

fn render_chat(message: &[u8], server: Option<&str>) -> (Rendered, Vec<Injection>) {
    let (header, _) = parse(message);
    let sender = address::normalize(SENDER).unwrap();
    let injections = issue_injections(
        &visible_recipients(&header),
        &sender,
        1_700_000_000,
        86_400,
        &secrets(),
    )
    .unwrap();
    let rendered = HeaderRewriter::new(server)
        .unwrap()
        .render(&header, Some(&injections))
        .unwrap();
    (rendered, injections)
}

fn token_values(header: &[u8]) -> Vec<String> {
    let (block, _) = HeaderBlock::parse_message(header, usize::MAX).unwrap();
    block
        .all(TOKEN_FIELD)
        .map(|f| String::from_utf8(trim_wsp(&f.unfolded_value()).to_vec()).unwrap())
        .collect()
}

// === scanner: known answers ===

#[test]
fn header_end_known_answers() {
    // (message, header block, body)
    let cases: &[(&[u8], &[u8], &[u8])] = &[
        (b"", b"", b""),
        (b"\r\n", b"\r\n", b""),
        (b"\r\nbody\r\n", b"\r\n", b"body\r\n"),
        (b"\r\n\r\n", b"\r\n", b"\r\n"),
        (b"A: b\r\n", b"A: b\r\n", b""),
        (b"A: b\r\n\r\n", b"A: b\r\n\r\n", b""),
        (b"A: b\r\n\r\nbody\r\n", b"A: b\r\n\r\n", b"body\r\n"),
        (b"A: b\r\n\r\n\r\n", b"A: b\r\n\r\n", b"\r\n"),
        (
            b"A: b\r\n c\r\nD: e\r\n\r\nX-COI-Server: body\r\n\r\n",
            b"A: b\r\n c\r\nD: e\r\n\r\n",
            b"X-COI-Server: body\r\n\r\n",
        ),
        // CRLF CRLF inside the body again: body.
        (
            b"A: b\r\n\r\n\r\n\r\nC: d\r\n",
            b"A: b\r\n\r\n",
            b"\r\n\r\nC: d\r\n",
        ),
    ];
    for (message, header, body) in cases {
        let (block, rest) = parse(message);
        assert_eq!(block.raw().as_ref(), *header, "{message:?}");
        assert_eq!(rest, *body, "{message:?}");
        let (scanned, scanned_body) = scan(&[message], MAX_HEADER_BLOCK);
        assert_eq!(scanned.unwrap(), block, "{message:?}");
        assert_eq!(scanned_body, *body);
    }
}

#[test]
fn fields_are_parsed_with_folding_and_obsolete_space() {
    let (block, _) =
        parse(b"Subject: a\r\n  folded\r\n\tagain\r\nTo : bob@x\r\nbad line\r\nX:\r\n\r\n");
    let fields: Vec<_> = block.fields().collect();
    assert_eq!(fields.len(), 4);
    assert_eq!(fields[0].name(), b"Subject");
    assert_eq!(fields[0].raw(), b"Subject: a\r\n  folded\r\n\tagain\r\n");
    assert_eq!(fields[0].value(), Some(&b" a\r\n  folded\r\n\tagain"[..]));
    assert_eq!(fields[0].unfolded_value().as_ref(), b" a  folded\tagain");
    assert_eq!(fields[1].name(), b"To");
    assert!(fields[1].is("to"));
    assert!(fields[2].is_malformed());
    assert_eq!(fields[2].name(), b"");
    assert_eq!(fields[3].value(), Some(&b""[..]));
    assert_eq!(block.first("TO").unwrap().value(), Some(&b" bob@x"[..]));
    assert!(block.has_blank_line());
}

/// House rule 4: for every prefix pushed whole, `NeedMore` up to one exact length, then
/// the same header and the rest of the prefix as the body start.
#[test]
fn all_prefixes() {
    let message: &[u8] =
        b"From: a@x\r\nTo: b@y,\r\n c@z\r\nSubject: hi\r\n\r\nbody\r\n\r\nmore\r\n";
    let (expected, _) = parse(message);
    let end = expected.len();
    for n in 0..=message.len() {
        let mut scanner = HeaderScanner::new(MAX_HEADER_BLOCK);
        match scanner.push(Bytes::copy_from_slice(&message[..n])).unwrap() {
            Progress::NeedMore => assert!(n < end, "prefix {n}"),
            Progress::HeaderEnd { header, body_start } => {
                assert!(n >= end, "prefix {n}");
                assert_eq!(header, expected);
                assert_eq!(body_start.as_ref(), &message[end..n]);
            }
        }
    }
}

/// The header end is found the same whatever the chunking, and the body comes out
/// byte-identical: every split into two and three pieces, and one byte per push.
#[test]
fn every_split() {
    let messages: &[&[u8]] = &[
        b"\r\nbody",
        b"\r\n",
        b"A: b\r\n\r\n",
        b"A: b\r\n\r\nbody\r\n\r\n",
        b"A: b\r\n c\r\n\r\n\r\n\r\n",
        b"A: \r\n\r\n\r\nx",
        b"A: b\r\nB: c\r\n",
        b"X: \r\r\n\r\n",
        b"X-COI-Temporary-Token: a\r\nTo: b@c\r\n\r\nX-COI-Temporary-Token: b\r\n",
    ];
    for message in messages {
        let (expected, body) = match HeaderBlock::parse_message(message, MAX_HEADER_BLOCK) {
            Ok((h, b)) => (Ok(h), b.to_vec()),
            Err(e) => (Err(e), Vec::new()),
        };
        let bytewise: Vec<&[u8]> = message.chunks(1).collect();
        let (h, b) = scan(&bytewise, MAX_HEADER_BLOCK);
        assert_eq!(h, expected, "{message:?} bytewise");
        if expected.is_ok() {
            assert_eq!(b, body);
        }
        for i in 0..=message.len() {
            for j in i..=message.len() {
                let pieces = [&message[..i], &message[i..j], &message[j..]];
                let (h, b) = scan(&pieces, MAX_HEADER_BLOCK);
                assert_eq!(h, expected, "{message:?} split at {i}, {j}");
                if expected.is_ok() {
                    assert_eq!(b, body, "{message:?} split at {i}, {j}");
                }
            }
        }
    }
}

#[test]
fn size_limit_is_exact_and_independent_of_chunking() {
    let limit = 64;
    let exact = format!("Subject: {}\r\n\r\nbody", "x".repeat(limit - 13));
    assert_eq!(exact.find("\r\n\r\n").unwrap() + 4, limit);
    let over = format!("Subject: {}\r\n\r\nbody", "x".repeat(limit - 12));
    let unended = "Subject: x\r\n".repeat(10);
    for chunk in [1, 3, 7, 64, 1000] {
        let pieces = |s: &'static [u8]| s.chunks(chunk).collect::<Vec<_>>();
        let exact: &'static [u8] = exact.clone().leak().as_bytes();
        let over: &'static [u8] = over.clone().leak().as_bytes();
        let unended: &'static [u8] = unended.clone().leak().as_bytes();
        let (h, b) = scan(&pieces(exact), limit);
        assert_eq!(h.unwrap().len(), limit);
        assert_eq!(b, b"body");
        assert_eq!(
            scan(&pieces(over), limit).0,
            Err(HeaderError::TooLarge { limit })
        );
        assert_eq!(
            scan(&pieces(unended), limit).0,
            Err(HeaderError::TooLarge { limit })
        );
    }
    assert_eq!(
        HeaderBlock::parse_message(over.as_bytes(), limit).unwrap_err(),
        HeaderError::TooLarge { limit }
    );
    // An all-header message shorter than the limit is fine.
    let short = "Subject: x\r\n".repeat(5);
    assert!(HeaderBlock::parse_message(short.as_bytes(), limit).is_ok());
    let (h, _) = scan(&[short.as_bytes()], limit);
    assert!(h.unwrap().fields().count() == 5);
}

#[test]
fn errors_stick_and_say_the_reply() {
    let mut scanner = HeaderScanner::new(8);
    let e = scanner
        .push(Bytes::from_static(b"Subject: long\r\n"))
        .unwrap_err();
    assert_eq!(e, HeaderError::TooLarge { limit: 8 });
    assert_eq!(scanner.buffered(), 0);
    assert_eq!(scanner.push(Bytes::from_static(b"\r\n\r\n")), Err(e));
    assert_eq!(scanner.finish(), Err(e));
    assert!(scanner.is_done());
    assert_eq!(e.reply().code, 552);

    let mut scanner = HeaderScanner::new(MAX_HEADER_BLOCK);
    assert!(matches!(
        scanner.push(Bytes::from_static(b"A: b\r\n\r\n")),
        Ok(Progress::HeaderEnd { .. })
    ));
    assert_eq!(
        scanner.push(Bytes::from_static(b"x")),
        Err(HeaderError::Ended)
    );
    assert_eq!(scanner.finish(), Err(HeaderError::Ended));

    for (message, error) in [
        (
            &b"A: b\nX-COI-Server: x\r\n\r\n"[..],
            HeaderError::BareLineEnding,
        ),
        (b"A: b\rX: y\r\n\r\n", HeaderError::BareLineEnding),
        (b"A: b\r\nC: d", HeaderError::Unterminated),
        (b"A: b\r\nC: d\r", HeaderError::Unterminated),
        // The first CR or LF of a line decides; a CRLF right behind a bare CR does not
        // make it clean, and a bare LF with no CRLF after it leaves the block open.
        (b"A: b\r\r\n\r\n", HeaderError::BareLineEnding),
        (b"A: b\r\nC: d\n", HeaderError::Unterminated),
    ] {
        assert_eq!(
            HeaderBlock::parse_message(message, MAX_HEADER_BLOCK).unwrap_err(),
            error,
            "{message:?}"
        );
        assert_eq!(scan(&[message], MAX_HEADER_BLOCK).0, Err(error));
        assert_eq!(error.reply().code, 554);
    }
    // Bare line endings in the body are not the header's business.
    assert!(HeaderBlock::parse_message(b"A: b\r\n\r\nx\ny\rz", MAX_HEADER_BLOCK).is_ok());
}

#[test]
fn field_count_is_bounded() {
    let ok = "a:b\r\n".repeat(MAX_HEADER_FIELDS) + "\r\n";
    assert!(HeaderBlock::parse_message(ok.as_bytes(), MAX_HEADER_BLOCK).is_ok());
    let too_many = "a:b\r\n".repeat(MAX_HEADER_FIELDS + 1) + "\r\n";
    assert_eq!(
        HeaderBlock::parse_message(too_many.as_bytes(), MAX_HEADER_BLOCK).unwrap_err(),
        HeaderError::TooManyFields
    );
    // Continuation lines do not count as fields.
    let folded = "a:b\r\n".to_owned() + &" c\r\n".repeat(MAX_HEADER_FIELDS * 2) + "\r\n";
    assert!(HeaderBlock::parse_message(folded.as_bytes(), MAX_HEADER_BLOCK).is_ok());
}

/// A 100 MB body streamed in 64 KiB chunks: the scanner holds the header only (never
/// more than its limit), and every body chunk goes out as the very same buffer.
#[test]
fn hundred_megabytes_stream_in_bounded_memory() {
    const CHUNK: usize = 64 * 1024;
    const TOTAL: usize = 100 * 1024 * 1024;
    let head = b"From: alice@example.org\r\nTo: bob@example.net\r\nChat-Version: 1.0\r\n\r\n";
    let mut first = head.to_vec();
    first.resize(CHUNK, b'b');
    let body_chunk = Bytes::from(vec![b'x'; CHUNK]);

    let mut scanner = HeaderScanner::new(MAX_HEADER_BLOCK);
    let mut forwarded = 0usize;
    let mut header = None;
    let mut sent = first.len();
    let chunks = std::iter::once(Bytes::from(first)).chain(std::iter::repeat_n(
        body_chunk.clone(),
        (TOTAL - CHUNK) / CHUNK,
    ));
    for chunk in chunks {
        if header.is_some() {
            // The caller's path after the header end: the chunk itself, untouched.
            assert_eq!(chunk.as_ptr(), body_chunk.as_ptr());
            forwarded += chunk.len();
            continue;
        }
        match scanner.push(chunk).unwrap() {
            Progress::NeedMore => {}
            Progress::HeaderEnd {
                header: h,
                body_start,
            } => {
                forwarded += body_start.len();
                header = Some(h);
            }
        }
        assert!(scanner.buffered() <= MAX_HEADER_BLOCK);
    }
    sent += (TOTAL - CHUNK) / CHUNK * CHUNK;
    let header = header.unwrap();
    assert_eq!(header.len(), head.len());
    assert_eq!(forwarded + header.len(), sent);
    assert_eq!(sent, TOTAL);

    // A "header" that never ends: refused at the limit, having held less than it.
    let mut scanner = HeaderScanner::new(MAX_HEADER_BLOCK);
    let line = Bytes::from("X-Filler: 0123456789\r\n".repeat(CHUNK / 22));
    let mut pushed = 0;
    let error = loop {
        match scanner.push(line.clone()) {
            Ok(Progress::NeedMore) => {
                assert!(scanner.buffered() < MAX_HEADER_BLOCK);
                pushed += line.len();
                assert!(pushed < TOTAL);
            }
            Ok(Progress::HeaderEnd { .. }) => panic!("no blank line was sent"),
            Err(e) => break e,
        }
    };
    assert_eq!(
        error,
        HeaderError::TooLarge {
            limit: MAX_HEADER_BLOCK
        }
    );
    assert_eq!(scanner.buffered(), 0);
}

// === rewriter ===

/// SECURITY-CASES case 42: pre-supplied token and verdict fields are removed, in any
/// case, folded or not, with space before the colon; the rest stays byte for byte.
#[test]
fn client_supplied_coi_fields_are_removed() {
    let message = b"From: alice@example.org\r\n\
        COI-Token: forged\r\n\
        To: bob@example.net\r\n\
        COI-Verified: yes\r\n\
        x-coi-temporary-token: 1-created:1-validity:1-hash:x-secret:y\r\n\
        X-COI-TEMPORARY-TOKEN:\r\n 1-created:1-validity:1-hash:x-secret:y\r\n\
        X-COI-Server : evil.example:25\r\n\
        COI-TokenIn: a\r\n\
        coi-tokenout: b\r\n\
        Subject: folded\r\n  subject\r\n\
        COI-From-Hash: kept\r\n\
        Chat-Version: 1.0\r\n\
        \r\n\
        X-COI-Temporary-Token: in the body\r\n";
    let (header, body) = parse(message);
    let rendered = HeaderRewriter::new(None)
        .unwrap()
        .render(&header, None)
        .unwrap();
    assert_eq!(rendered.removed, 7);
    assert_eq!(rendered.injected, 0);
    assert_eq!(
        rendered.header.as_ref(),
        &b"From: alice@example.org\r\nTo: bob@example.net\r\nSubject: folded\r\n  subject\r\n\
           COI-From-Hash: kept\r\nChat-Version: 1.0\r\n\r\n"[..]
    );
    assert_eq!(body, b"X-COI-Temporary-Token: in the body\r\n");

    // With injection, only the proxy's own remain.
    let (rendered, injections) = render_chat(message, Some("coi.example.org:993"));
    assert_eq!(injections.len(), 1);
    let tokens = token_values(&rendered.header);
    assert_eq!(tokens, vec![injections[0].token.clone()]);
    let (out, _) = HeaderBlock::parse_message(&rendered.header, usize::MAX).unwrap();
    assert_eq!(
        out.all(SERVER_FIELD)
            .map(|f| f.unfolded_value().into_owned())
            .collect::<Vec<_>>(),
        vec![b" coi.example.org:993".to_vec()]
    );
    assert!(out.fields().all(|f| !f.name().starts_with(b"COI-Token")));
    assert!(out.first("COI-Verified").is_none());
}

/// Lines a lenient parser might read as a removed field are removed too.
#[test]
fn lookalike_malformed_lines_are_removed() {
    let message =
        b" X-COI-Temporary-Token: forged\r\nFrom: a@x\r\nCOI-Verified\0: yes\r\nSubject: s\r\n\r\n";
    let (header, _) = parse(message);
    let rendered = HeaderRewriter::new(None)
        .unwrap()
        .render(&header, None)
        .unwrap();
    assert_eq!(rendered.removed, 2);
    assert_eq!(rendered.header.as_ref(), b"From: a@x\r\nSubject: s\r\n\r\n");
}

/// SECURITY-CASES case 44: a token inside an attached message/rfc822 part or the body is
/// body, and stays.
#[test]
fn tokens_in_nested_parts_and_body_stay() {
    let body: &[u8] = b"--b\r\nContent-Type: message/rfc822\r\n\r\n\
        X-COI-Temporary-Token: 1-created:1-validity:1-hash:x-secret:y\r\n\
        COI-Verified: yes\r\n\r\ninner\r\n--b--\r\n";
    let mut message = b"From: alice@example.org\r\nTo: bob@example.net\r\nChat-Version: 1.0\r\n\
        Content-Type: multipart/mixed; boundary=b\r\n\r\n"
        .to_vec();
    message.extend_from_slice(body);
    let (header, rest) = parse(&message);
    assert_eq!(rest, body);
    let (rendered, _) = render_chat(&message, None);
    assert_eq!(rendered.removed, 0);
    assert_eq!(rendered.injected, 1);
    let mut out = rendered.header.to_vec();
    out.extend_from_slice(rest);
    let (back, back_body) = HeaderBlock::parse_message(&out, usize::MAX).unwrap();
    assert_eq!(back_body, body);
    assert_eq!(back.all(TOKEN_FIELD).count(), 1);
    assert_eq!(header.fields().count() + 1, back.fields().count());
}

/// One token per visible recipient (To and Cc, deduplicated after normalisation), none
/// for Bcc, each bound to H(recipient ":" sender).
#[test]
fn one_token_per_visible_recipient() {
    let message = b"From: Alice <alice@example.org>\r\n\
        To: Bob <bob@example.net>, carol@example.com\r\n\
        Cc: \"Dave D.\" <Dave@Example.COM>, BOB@example.net\r\n\
        Bcc: eve@example.org\r\n\
        Chat-Version: 1.0\r\n\r\nhi\r\n";
    let (rendered, injections) = render_chat(message, None);
    let recipients: Vec<_> = injections.iter().map(|i| i.recipient.as_str()).collect();
    assert_eq!(
        recipients,
        ["bob@example.net", "carol@example.com", "dave@example.com"]
    );
    let tokens = token_values(&rendered.header);
    assert_eq!(tokens.len(), 3);
    let sender = address::normalize(SENDER).unwrap();
    for (token, recipient) in tokens.iter().zip(&recipients) {
        let recipient = address::normalize(recipient).unwrap();
        let hash = token::pair_hash(Some(&recipient), &sender);
        assert_eq!(
            verify(token, &hash, 1_700_000_000, &secrets()),
            Ok(TokenKind::Temporary)
        );
    }
    // Bcc stays (Postfix removes it), and gets no token.
    let (out, _) = HeaderBlock::parse_message(&rendered.header, usize::MAX).unwrap();
    assert_eq!(out.first("Bcc").unwrap().raw(), b"Bcc: eve@example.org\r\n");
    let eve = address::normalize("eve@example.org").unwrap();
    let eve_hash = token::pair_hash(Some(&eve), &sender);
    assert!(tokens
        .iter()
        .all(|t| verify(t, &eve_hash, 1_700_000_000, &secrets()).is_err()));

    let bcc_only = b"From: alice@example.org\r\nTo: undisclosed-recipients:;\r\n\
        Bcc: eve@example.org\r\nChat-Version: 1.0\r\n\r\n";
    let (rendered, injections) = render_chat(bcc_only, None);
    assert!(injections.is_empty());
    assert!(token_values(&rendered.header).is_empty());
}

/// The injected fields: folded before the token (the line would exceed 78 columns),
/// after the last field, before the blank line; the server field on one line.
#[test]
fn injected_fields_are_folded_and_placed() {
    let message = b"To: bob@example.net\r\nChat-Version: 1.0\r\n\r\nbody";
    let (rendered, injections) = render_chat(message, Some("coi.example.org:587"));
    let token = &injections[0].token;
    assert!(token.len() > FOLD_COLUMN);
    let expected = format!(
        "To: bob@example.net\r\nChat-Version: 1.0\r\n\
         X-COI-Temporary-Token:\r\n {token}\r\nX-COI-Server: coi.example.org:587\r\n\r\n"
    );
    assert_eq!(rendered.header.as_ref(), expected.as_bytes());
    assert_eq!(rendered.injected, 2);

    // Without a blank line (all header), the fields go at the end all the same.
    let (header, _) = parse(b"To: bob@example.net\r\n");
    let out = HeaderRewriter::default()
        .render(&header, Some(&injections))
        .unwrap();
    assert_eq!(
        out.header.as_ref(),
        format!("To: bob@example.net\r\nX-COI-Temporary-Token:\r\n {token}\r\n").as_bytes()
    );

    // An empty header block: only the injected fields and the blank line.
    let (header, _) = parse(b"\r\nbody");
    let out = HeaderRewriter::default()
        .render(&header, Some(&injections))
        .unwrap();
    assert_eq!(
        out.header.as_ref(),
        format!("X-COI-Temporary-Token:\r\n {token}\r\n\r\n").as_bytes()
    );

    // A short value stays on one line.
    let mut out = BytesMut::new();
    push_field(&mut out, TOKEN_FIELD, "short");
    assert_eq!(out.as_ref(), b"X-COI-Temporary-Token: short\r\n");
}

/// After a malformed line, or after a continuation line at the top (which would
/// otherwise continue the injected field), never inside another field.
#[test]
fn injection_point_around_malformed_lines() {
    let inj = [injection("bob@example.net")];
    let t = &inj[0].token;
    let cases: &[(&[u8], String)] = &[
        (
            b"A: 1\r\nnot a field\r\nB: 2\r\n\r\n",
            format!("A: 1\r\nX-COI-Temporary-Token:\r\n {t}\r\nnot a field\r\nB: 2\r\n\r\n"),
        ),
        (
            b" orphan\r\nA: 1\r\n\r\n",
            format!(" orphan\r\nX-COI-Temporary-Token:\r\n {t}\r\nA: 1\r\n\r\n"),
        ),
        (
            b" X-COI-Server: forged\r\nA: 1\r\n\r\n",
            format!("X-COI-Temporary-Token:\r\n {t}\r\nA: 1\r\n\r\n"),
        ),
    ];
    for (message, expected) in cases {
        let (header, _) = parse(message);
        let out = HeaderRewriter::default()
            .render(&header, Some(&inj))
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.header),
            *expected,
            "{message:?}"
        );
    }
}

#[test]
fn bad_tokens_and_servers_are_refused() {
    let good = injection("bob@example.net");
    let (header, _) = parse(b"To: bob@example.net\r\n\r\n");
    let bad_tokens = [
        String::new(),
        format!("{}\r\nBcc: x@y", good.token),
        format!("{} x", good.token),
        "not a token".to_owned(),
        "2-created:1".to_owned(),
        format!("{}-x:{}", good.token, "a".repeat(900)),
    ];
    for token in bad_tokens {
        let injections = [
            good.clone(),
            Injection {
                recipient: "x@y".into(),
                token,
            },
        ];
        assert_eq!(
            HeaderRewriter::default().render(&header, Some(&injections)),
            Err(RewriteError::InvalidToken(1))
        );
    }
    for server in [
        "coi.example.org",
        "coi.example.org:",
        "coi.example.org:0",
        "coi.example.org:65536",
        "coi example.org:25",
        "coi.example.org:25\r\nBcc: x",
        ":25",
        "[]:25",
        "[fe80::1%eth0]:25",
    ] {
        assert!(HeaderRewriter::new(Some(server)).is_err(), "{server:?}");
    }
    for server in ["coi.example.org:25", "[2001:db8::1]:465", "192.0.2.1:587"] {
        assert!(HeaderRewriter::new(Some(server)).is_ok(), "{server:?}");
    }
}

#[test]
fn non_chat_messages_get_no_injection() {
    let message = b"To: bob@example.net\r\nX-COI-Server: x:1\r\n\r\n";
    let (header, _) = parse(message);
    assert!(!classify(&header).chat);
    let out = HeaderRewriter::new(Some("coi.example.org:25"))
        .unwrap()
        .render(&header, None)
        .unwrap();
    assert_eq!(out.header.as_ref(), b"To: bob@example.net\r\n\r\n");
    assert_eq!((out.removed, out.injected), (1, 0));
}

// === visible recipients ===

#[test]
fn visible_recipient_known_answers() {
    let cases: &[(&str, &[&str])] = &[
        ("To: bob@example.net", &["bob@example.net"]),
        ("To: Bob <bob@example.net>", &["bob@example.net"]),
        (
            "To: \"Bob, the builder\" <bob@example.net>, c@d",
            &["bob@example.net", "c@d"],
        ),
        (
            "To: \"quoted <x@y>\" <bob@example.net>",
            &["bob@example.net"],
        ),
        (
            "To: =?utf-8?q?B=C3=B6b?= <bob@example.net>",
            &["bob@example.net"],
        ),
        (
            "To: bob@example.net (Bob (the) builder)",
            &["bob@example.net"],
        ),
        ("To: (comment) bob(c)@(c)example.net", &["bob@example.net"]),
        ("To: < bob @ example.net >", &["bob@example.net"]),
        (
            "To: \"john doe\"@example.com",
            &["\"john doe\"@example.com"],
        ),
        ("To: a@[192.0.2.1]", &["a@[192.0.2.1]"]),
        ("To: friends: a@x, B <b@y>;, c@z", &["a@x", "b@y", "c@z"]),
        ("To: hidden-recipients:;", &[]),
        ("To: undisclosed-recipients:;", &[]),
        (
            "To: <@route1,@route2:bob@example.net>",
            &["bob@example.net"],
        ),
        ("To: a@x,,b@y,", &["a@x", "b@y"]),
        ("To: a@x, a@x", &["a@x"]),
        ("To: Alice alice@x", &[]),
        ("To: a@x b@y", &[]),
        ("To: bob", &[]),
        ("To: @x", &[]),
        ("To: bob@", &[]),
        ("To: <bob@example.net", &["bob@example.net"]),
        ("To: \"unclosed <a@b>", &[]),
        ("To: ålice@exämple.org", &["ålice@exämple.org"]),
        (
            "To: a@x\r\nCc: b@y\r\nBcc: c@z\r\nCC: d@w",
            &["a@x", "b@y", "d@w"],
        ),
        ("To: a@x,\r\n b@y", &["a@x", "b@y"]),
        ("Resent-To: a@x\r\nReply-To: b@y", &[]),
    ];
    for (fields, expected) in cases {
        let message = format!("{fields}\r\n\r\n");
        let (header, _) = parse(message.as_bytes());
        assert_eq!(visible_recipients(&header), *expected, "{fields:?}");
    }
}

#[test]
fn visible_recipients_are_bounded() {
    let list: Vec<String> = (0..MAX_VISIBLE_RECIPIENTS + 10)
        .map(|i| format!("u{i}@x"))
        .collect();
    let message = format!("To: {}\r\nCc: extra@x\r\n\r\n", list.join(", "));
    let (header, _) = parse(message.as_bytes());
    let recipients = visible_recipients(&header);
    assert_eq!(recipients.len(), MAX_VISIBLE_RECIPIENTS);
    assert_eq!(recipients[0], "u0@x");
    // Deeply nested comments cost no stack.
    let message = format!("To: {}a@x\r\n\r\n", "(".repeat(100_000));
    let (header, _) = parse(message.as_bytes());
    assert!(visible_recipients(&header).is_empty());
}

#[test]
fn unnormalisable_recipients_are_skipped() {
    let sender = address::normalize(SENDER).unwrap();
    let recipients = vec![
        "bob@example.net".to_owned(),
        "bad\u{200b}@example.net".to_owned(),
        "\"unclosed@example.net".to_owned(),
        "Bob@EXAMPLE.net".to_owned(),
    ];
    let injections =
        issue_injections(&recipients, &sender, 1_700_000_000, 86_400, &secrets()).unwrap();
    assert_eq!(injections.len(), 1);
    assert_eq!(injections[0].recipient, "bob@example.net");
    let no_secret = Secrets {
        temporary: Vec::new(),
        permanent: Vec::new(),
    };
    assert!(issue_injections(&recipients, &sender, 1, 1, &no_secret).is_err());
}

// === properties ===

/// Field names: ordinary ones and removed ones in any case, some with space before the
/// colon.
fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z][A-Za-z0-9-]{0,12}",
        prop::sample::select(vec![
            "X-COI-Temporary-Token",
            "x-coi-server",
            "COI-Token",
            "Coi-TokenIn",
            "COI-VERIFIED",
            "To",
            "Subject",
        ])
        .prop_map(str::to_owned),
    ]
}

/// A field: name, optional WSP before the colon, a value of 0–3 folded lines.
fn field() -> impl Strategy<Value = String> {
    (
        field_name(),
        prop::bool::weighted(0.1),
        prop::collection::vec("[ -~]{0,30}", 1..4),
    )
        .prop_map(|(name, space, lines)| {
            let mut out = name;
            if space {
                out.push(' ');
            }
            out.push(':');
            for (i, line) in lines.iter().enumerate() {
                if i > 0 {
                    out.push_str("\r\n ");
                }
                out.push_str(line);
            }
            out.push_str("\r\n");
            out
        })
}

proptest! {
    /// Whatever the fields, body and chunking: the body comes out identical, the fields
    /// other than the removed ones byte for byte and in order, and the injected fields
    /// are exactly the tokens.
    #[test]
    fn rewrite_preserves_everything_else(
        fields in prop::collection::vec(field(), 0..12),
        body in prop::collection::vec(any::<u8>(), 0..300),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..4),
        chat in any::<bool>(),
    ) {
        let mut message: Vec<u8> = fields.concat().into_bytes();
        message.extend_from_slice(b"\r\n");
        message.extend_from_slice(&body);
        let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(message.len() + 1)).collect();
        cuts.sort_unstable();
        let mut pieces = Vec::new();
        let mut at = 0;
        for cut in cuts {
            pieces.push(&message[at..cut]);
            at = cut;
        }
        pieces.push(&message[at..]);
        let (header, scanned_body) = scan(&pieces, MAX_HEADER_BLOCK);
        let header = header.unwrap();
        prop_assert_eq!(&scanned_body, &body);

        let injections = [injection("bob@example.net"), injection("carol@example.com")];
        let chat = chat.then_some(&injections[..]);
        let rendered = HeaderRewriter::new(Some("coi.example.org:465"))
            .unwrap()
            .render(&header, chat)
            .unwrap();
        let mut out = rendered.header.to_vec();
        out.extend_from_slice(&scanned_body);
        let (back, back_body) = HeaderBlock::parse_message(&out, usize::MAX).unwrap();
        prop_assert_eq!(back_body, &body[..]);
        let kept: Vec<&[u8]> = header
            .fields()
            .filter(|f| f.is_malformed() || !is_removed(f.name()))
            .map(|f| f.raw())
            .collect();
        let expected_kept: Vec<&[u8]> = fields
            .iter()
            .map(|f| f.as_bytes())
            .filter(|f| {
                let name = &f[..f.iter().position(|&b| b == b':').unwrap()];
                !is_removed(trim_wsp(name))
            })
            .collect();
        prop_assert_eq!(&kept, &expected_kept);
        let others: Vec<&[u8]> = back
            .fields()
            .filter(|f| !f.is(TOKEN_FIELD) && !f.is(SERVER_FIELD))
            .map(|f| f.raw())
            .collect();
        prop_assert_eq!(&others, &kept);
        let tokens = token_values(&rendered.header);
        let expected: Vec<String> = chat
            .unwrap_or_default()
            .iter()
            .map(|i| i.token.clone())
            .collect();
        prop_assert_eq!(tokens, expected);
        prop_assert_eq!(back.all(SERVER_FIELD).count(), usize::from(chat.is_some()));
    }

    /// The scanner agrees with the whole-message parse on arbitrary bytes, in any
    /// chunking, and never holds the limit.
    #[test]
    fn scanner_matches_whole_parse(
        message in prop::collection::vec(
            prop::sample::select(vec![b'\r', b'\n', b'a', b':', b' ']), 0..200),
        chunk in 1usize..20,
        limit in 1usize..150,
    ) {
        let expected = HeaderBlock::parse_message(&message, limit)
            .map(|(h, b)| (h, b.to_vec()));
        let pieces: Vec<&[u8]> = message.chunks(chunk).collect();
        let (header, body) = scan(&pieces, limit);
        match expected {
            Ok((h, b)) => {
                prop_assert_eq!(header, Ok(h));
                prop_assert_eq!(body, b);
            }
            Err(e) => prop_assert_eq!(header, Err(e)),
        }
    }

    #[test]
    fn fuzz_body_holds_on_random_input(data in prop::collection::vec(any::<u8>(), 0..400)) {
        fuzz_headers(&data);
    }
}

/// Seeds replay through `tests/fuzz_seeds.rs`; a few shapes here too.
#[test]
fn fuzz_body_holds_on_samples() {
    fuzz_headers(b"\x00To: a@b, c@d\r\nChat-Version: 1\r\nCOI-Token: x\r\n\r\nbody");
    fuzz_headers(b"\x03 orphan\r\nTo: a@b\r\n\r\n");
    fuzz_headers(b"\x01To: a@b\r\nbad\r\n X-COI-Server: x\r\n\r\n\r\n");
    fuzz_headers(b"\x00\r\n");
    fuzz_headers(b"\x00");
    fuzz_headers(b"");
}
