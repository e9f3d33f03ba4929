use super::*;
use crate::coi::token::{self, Secret, TokenKind};

const NOW: u64 = 1_700_000_000;
const VALIDITY: u64 = 30 * 86_400;

fn rules(secrets: bool) -> Arc<SubmitRules> {
    let secrets = if secrets {
        Secrets {
            temporary: vec![Secret::new("temporary-secret-0123").unwrap()],
            permanent: vec![Secret::new("permanent-secret-0123").unwrap()],
        }
    } else {
        Secrets::default()
    };
    Arc::new(SubmitRules {
        rewriter: HeaderRewriter::new(Some("coi.a.test:4433")).unwrap(),
        secrets,
        temporary_validity: VALIDITY,
        limits: DataLimits {
            max_line: 1000,
            max_size: 10 * 1024 * 1024,
        },
    })
}

fn alice() -> Submitter {
    let me = address::normalize("alice@a.test").unwrap();
    Submitter {
        sender: Some(me.clone()),
        owned: Some(Arc::from(vec![me])),
        now: NOW,
        message_id: "<coi.1@submission.test>".to_owned(),
    }
}

/// Runs the whole input through a message, pushing `step` bytes at a time. Returns the
/// upstream bytes (tail included on relay) and the outcome.
fn run(
    rules: Arc<SubmitRules>,
    submitter: Submitter,
    input: &[u8],
    step: usize,
) -> (Vec<u8>, Outcome) {
    let mut message = OutgoingMessage::new(rules, submitter);
    let mut upstream = Vec::new();
    for piece in input.chunks(step.max(1)) {
        message.push(piece);
        while let Some(next) = message.next_step() {
            match next {
                Step::Upstream(bytes) => upstream.extend_from_slice(&bytes),
                Step::End(outcome) => {
                    if let Outcome::Relay { tail, .. } = &outcome {
                        upstream.extend_from_slice(tail);
                    }
                    assert!(message.next_step().is_none(), "nothing after the end");
                    return (upstream, outcome);
                }
            }
        }
    }
    panic!("no end of data in {:?}", String::from_utf8_lossy(input));
}

/// Both write patterns of SECURITY-CASES: all at once and one byte per write; they must
/// agree.
fn run_both(rules: Arc<SubmitRules>, submitter: Submitter, input: &[u8]) -> (Vec<u8>, Outcome) {
    let whole = run(rules.clone(), submitter.clone(), input, input.len());
    let bytewise = run(rules, submitter, input, 1);
    assert_eq!(
        String::from_utf8_lossy(&whole.0),
        String::from_utf8_lossy(&bytewise.0)
    );
    match (&whole.1, &bytewise.1) {
        (Outcome::Relay { summary: a, .. }, Outcome::Relay { summary: b, .. }) => assert_eq!(a, b),
        (a, b) => assert_eq!(a, b),
    }
    whole
}

fn relayed(outcome: &Outcome) -> Summary {
    match outcome {
        Outcome::Relay { summary, .. } => *summary,
        Outcome::Refuse { reply, .. } => panic!("refused: {reply:?}"),
    }
}

fn refused(outcome: &Outcome) -> (u16, Fault) {
    match outcome {
        Outcome::Refuse { reply, fault } => (reply.code, *fault),
        Outcome::Relay { .. } => panic!("relayed"),
    }
}

/// The values of the injected token fields (folded onto a continuation line: a token is
/// longer than a 78-column line).
fn token_lines(upstream: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(upstream);
    let lines: Vec<&str> = text.split("\r\n").collect();
    lines
        .windows(2)
        .filter(|pair| pair[0] == "X-COI-Temporary-Token:")
        .filter_map(|pair| pair[1].strip_prefix(' ').map(str::to_owned))
        .collect()
}

#[test]
fn plain_mail_passes_byte_identical_and_restuffed() {
    // Body lines ".", "..x", ".y", "z" as the client stuffs them (SECURITY-CASES case 6).
    let input = b"From: alice@a.test\r\nTo: bob@b.test\r\nSubject: hi\r\nMessage-ID: <1@a.test>\r\n\r\n..\r\n...x\r\n..y\r\nz\r\n.\r\n";
    let (upstream, outcome) = run_both(rules(true), alice(), input);
    // The client's stuffing is undone and done again: the wire is the same here.
    assert_eq!(upstream, input.to_vec());
    let summary = relayed(&outcome);
    assert!(!summary.chat);
    assert_eq!(summary.tokens, 0);
    // Unstuffed: three stuffing dots and the end-of-data line fewer.
    assert_eq!(summary.bytes, (input.len() - 3 - 3) as u64);
    // A client that does not stuff: ".y" is "y".
    let (upstream, _) = run_both(
        rules(true),
        alice(),
        b"Message-ID: <2@a.test>\r\n\r\n.y\r\n.\r\n",
    );
    assert_eq!(upstream, b"Message-ID: <2@a.test>\r\n\r\ny\r\n.\r\n");
}

#[test]
fn chat_mail_gets_one_token_per_visible_recipient_and_none_for_bcc() {
    let input = b"From: alice@a.test\r\nTo: Bob <bob@b.test>, carol@c.test\r\nCc: dave@d.test, BOB@B.TEST\r\nBcc: eve@e.test\r\nChat-Version: 1.0\r\nSubject: chat\r\n\r\nhello\r\n.\r\n";
    let (upstream, outcome) = run_both(rules(true), alice(), input);
    let summary = relayed(&outcome);
    assert!(summary.chat);
    let tokens = token_lines(&upstream);
    assert_eq!(tokens.len(), 3, "bob (once), carol, dave; never eve");
    let secrets = &rules(true).secrets;
    let sender = address::normalize("alice@a.test").unwrap();
    for (token, recipient) in tokens
        .iter()
        .zip(["bob@b.test", "carol@c.test", "dave@d.test"])
    {
        let recipient = address::normalize(recipient).unwrap();
        let hash = token::pair_hash(Some(&recipient), &sender);
        assert_eq!(
            token::verify(token, &hash, NOW, secrets),
            Ok(TokenKind::Temporary)
        );
    }
    let eve = address::normalize("eve@e.test").unwrap();
    let eve_hash = token::pair_hash(Some(&eve), &sender);
    assert!(tokens
        .iter()
        .all(|t| token::verify(t, &eve_hash, NOW, secrets).is_err()));
    assert!(String::from_utf8_lossy(&upstream).contains("\r\nX-COI-Server: coi.a.test:4433\r\n"));
    assert_eq!(summary.tokens, 3);
    assert!(
        upstream.ends_with(b"\r\n\r\nhello\r\n.\r\n"),
        "body untouched"
    );
}

#[test]
fn client_supplied_token_fields_never_survive() {
    let input = b"From: alice@a.test\r\nTo: bob@b.test\r\nX-COI-Temporary-Token: forged\r\nCOI-Token: forged\r\nChat-Version: 1.0\r\n\r\nbody\r\nX-COI-Temporary-Token: in the body stays\r\n.\r\n";
    let (upstream, outcome) = run_both(rules(true), alice(), input);
    let summary = relayed(&outcome);
    assert!(summary.removed >= 1);
    let text = String::from_utf8_lossy(&upstream);
    assert!(!text.contains("forged"), "{text}");
    assert_eq!(
        token_lines(&upstream).len(),
        1,
        "only the proxy's own token"
    );
    assert!(text.contains("\r\nX-COI-Temporary-Token: in the body stays\r\n"));
}

#[test]
fn client_fields_are_removed_even_without_secrets_and_for_non_chat_mail() {
    let input = b"From: alice@a.test\r\nX-COI-Temporary-Token: forged\r\n\r\nbody\r\n.\r\n";
    for rules in [rules(false), rules(true)] {
        let (upstream, outcome) = run_both(rules, alice(), input);
        relayed(&outcome);
        assert!(!String::from_utf8_lossy(&upstream).contains("forged"));
    }
    let chat = b"From: alice@a.test\r\nTo: bob@b.test\r\nChat-Version: 1.0\r\n\r\nx\r\n.\r\n";
    let (upstream, _) = run_both(rules(false), alice(), chat);
    assert!(token_lines(&upstream).is_empty(), "no secret, no token");
}

#[test]
fn from_not_owned_is_refused_before_anything_reaches_the_upstream() {
    for from in [
        "From: bob@a.test",
        "From: alice@a.test, bob@a.test",
        "From: alice@a.test\r\nFrom: alice@a.test",
        "From: not an address",
    ] {
        let input = format!("{from}\r\nTo: x@b.test\r\n\r\nbody\r\n.\r\n");
        let (upstream, outcome) = run_both(rules(true), alice(), input.as_bytes());
        assert_eq!(refused(&outcome), (553, Fault::Client), "{from}");
        assert!(upstream.is_empty(), "{from}: nothing released");
    }
    // Case, display names and a missing From are fine.
    for from in ["From: Alice <ALICE@A.TEST>", "Subject: no from"] {
        let input = format!("{from}\r\n\r\nbody\r\n.\r\n");
        relayed(&run_both(rules(true), alice(), input.as_bytes()).1);
    }
    // insecure_allow_any_sender: no check.
    let mut any = alice();
    any.owned = None;
    relayed(&run_both(rules(true), any, b"From: ceo@victim.test\r\n\r\nx\r\n.\r\n").1);
}

#[test]
fn smuggling_attempts_end_in_one_refusal_without_an_end_of_data_line() {
    // SECURITY-CASES cases 1, 2 and 4: a bare LF anywhere refuses the whole message.
    for input in [
        &b"Subject: a\r\n\r\nx\n.\r\nMAIL FROM:<ceo@victim>\r\nRCPT TO:<t@x>\r\nDATA\r\nFrom: ceo@victim\r\n\r\nevil\r\n.\r\n"[..],
        b"Subject: a\r\n\r\nx\n.\nMAIL FROM:<ceo@victim>\r\n.\r\n",
        b"Subject: hi\nX-Injected: 1\r\n\r\nbody\r\n.\r\n",
        b"Subject: hi\r\n\r\nbo\rdy\r\n.\r\n",
        b"Subject: hi\r\n\r\nbo\0dy\r\n.\r\n",
    ] {
        let (upstream, outcome) = run_both(rules(true), alice(), input);
        let (code, fault) = refused(&outcome);
        assert_eq!((code, fault), (550, Fault::Client), "{:?}", String::from_utf8_lossy(input));
        assert!(
            !upstream.ends_with(b"\r\n.\r\n"),
            "the upstream never sees an end of data: {:?}",
            String::from_utf8_lossy(&upstream)
        );
    }
}

#[test]
fn the_smuggled_commands_are_not_pipelined_input() {
    // The LF.CRLF of case 1 is not an end of data: everything up to the real one is data.
    let input = b"Subject: a\r\n\r\nx\n.\r\nRSET\r\n.\r\nQUIT\r\n";
    let mut message = OutgoingMessage::new(rules(true), alice());
    message.push(input);
    while let Some(step) = message.next_step() {
        if let Step::End(outcome) = step {
            assert_eq!(refused(&outcome).0, 550);
        }
    }
    assert!(message.is_ended());
    assert_eq!(&message.take_buffered()[..], b"QUIT\r\n");
}

#[test]
fn long_lines_and_size_are_refused_with_their_codes() {
    let long = format!("Subject: x\r\n\r\n{}\r\n.\r\n", "a".repeat(1200));
    assert_eq!(
        refused(&run_both(rules(true), alice(), long.as_bytes()).1).0,
        554
    );
    let mut small = (*rules(true)).clone();
    small.limits.max_size = 100;
    let big = format!("Subject: x\r\n\r\n{}.\r\n", "0123456789\r\n".repeat(20));
    let (_, outcome) = run_both(Arc::new(small), alice(), big.as_bytes());
    assert_eq!(refused(&outcome).0, 552);
}

#[test]
fn header_without_body_and_empty_message_are_relayed_with_a_message_id() {
    let (upstream, outcome) = run_both(rules(true), alice(), b"Subject: only a header\r\n.\r\n");
    assert!(relayed(&outcome).message_id_added);
    assert_eq!(
        upstream,
        b"Message-ID: <coi.1@submission.test>\r\nSubject: only a header\r\n.\r\n"
    );
    let (upstream, outcome) = run_both(rules(true), alice(), b".\r\n");
    relayed(&outcome);
    assert_eq!(upstream, b"Message-ID: <coi.1@submission.test>\r\n.\r\n");
}

#[test]
fn a_message_id_is_added_only_when_missing_and_only_a_well_formed_one() {
    // SECURITY-CASES §4 rule 6: every attempt carries the same Message-ID.
    let (upstream, outcome) = run_both(rules(true), alice(), b"Subject: s\r\n\r\nx\r\n.\r\n");
    assert!(relayed(&outcome).message_id_added);
    assert!(upstream.starts_with(b"Message-ID: <coi.1@submission.test>\r\nSubject: s\r\n"));
    let (upstream, outcome) = run_both(
        rules(true),
        alice(),
        b"Message-Id: <mine@a.test>\r\n\r\nx\r\n.\r\n",
    );
    assert!(!relayed(&outcome).message_id_added);
    assert_eq!(upstream, b"Message-Id: <mine@a.test>\r\n\r\nx\r\n.\r\n");
    let mut bad = alice();
    bad.message_id = "<spaced id@x>".to_owned();
    let (upstream, _) = run_both(rules(true), bad, b"Subject: s\r\n\r\nx\r\n.\r\n");
    assert!(upstream.starts_with(b"Subject: s\r\n"));
}

#[test]
fn an_oversized_header_block_is_refused() {
    let field = format!("X-Big: {}\r\n", "b".repeat(900));
    let header = field.repeat(MAX_HEADER_BLOCK / field.len() + 2);
    let input = format!("{header}\r\nbody\r\n.\r\n");
    let (upstream, outcome) = run(rules(true), alice(), input.as_bytes(), 64 * 1024);
    assert_eq!(refused(&outcome).1, Fault::Client);
    assert!(upstream.is_empty());
}

#[test]
fn the_body_streams_without_being_held() {
    // After the header, each pushed piece of body comes out at once: nothing accumulates.
    let mut message = OutgoingMessage::new(rules(true), alice());
    message.push(b"Subject: big\r\n\r\n");
    let mut released = 0;
    while let Some(Step::Upstream(bytes)) = message.next_step() {
        released += bytes.len();
    }
    assert_eq!(
        released,
        "Message-ID: <coi.1@submission.test>\r\nSubject: big\r\n\r\n".len()
    );
    let line = format!("{}\r\n", "x".repeat(998));
    for _ in 0..1000 {
        message.push(line.as_bytes());
        let mut out = 0;
        while let Some(Step::Upstream(bytes)) = message.next_step() {
            out += bytes.len();
        }
        assert_eq!(out, line.len(), "every complete line is released at once");
    }
}

/// The unstuffed output of `input`, pushed `step` bytes at a time, and the Message-ID.
fn run_unstuffed(input: &[u8], step: usize) -> (Vec<u8>, Option<String>) {
    let mut message = OutgoingMessage::unstuffed(rules(true), alice());
    let mut out = Vec::new();
    for piece in input.chunks(step) {
        message.push(piece);
        while let Some(next) = message.next_step() {
            match next {
                Step::Upstream(bytes) => out.extend_from_slice(&bytes),
                Step::End(Outcome::Relay { tail, .. }) => {
                    out.extend_from_slice(&tail);
                    return (out, message.message_id().map(str::to_owned));
                }
                Step::End(other) => panic!("refused: {other:?}"),
            }
        }
    }
    panic!("no end of data");
}

#[test]
fn unstuffed_output_is_the_stuffed_output_without_stuffing_and_end_line() {
    let input = b"From: alice@a.test\r\nTo: bob@b.test\r\nChat-Version: 1.0\r\nMessage-ID: <m1@a.test>\r\n\r\n..dot line\r\nhello\r\n.\r\n";
    let (stuffed, _) = run_both(rules(true), alice(), input);
    for step in [1, 7, input.len()] {
        let (plain, id) = run_unstuffed(input, step);
        let mut expected = stuffed.clone();
        expected.truncate(expected.len() - b".\r\n".len());
        let text = String::from_utf8(expected)
            .unwrap()
            .replace("\r\n..", "\r\n.");
        assert_eq!(String::from_utf8_lossy(&plain), text, "step {step}");
        assert!(text.contains("\r\n.dot line\r\n"));
        assert_eq!(id.as_deref(), Some("m1@a.test"));
    }
}

#[test]
fn unstuffed_message_without_message_id_reports_the_added_one() {
    let input = b"From: alice@a.test\r\nSubject: x\r\n\r\nhi\r\n.\r\n";
    let (plain, id) = run_unstuffed(input, 5);
    assert_eq!(id.as_deref(), Some("coi.1@submission.test"));
    assert!(plain.starts_with(b"Message-ID: <coi.1@submission.test>\r\n"));
    assert!(plain.ends_with(b"\r\nhi\r\n"));
}
