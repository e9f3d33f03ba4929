use super::*;

fn commands() -> Framer {
    Framer::new(FramerOptions {
        max_line: 64,
        long_lines: LongLines::Reject,
        stream: StreamKind::Commands,
    })
}

fn responses() -> Framer {
    Framer::new(FramerOptions {
        max_line: 64,
        long_lines: LongLines::Stream,
        stream: StreamKind::Responses,
    })
}

/// A normalised view of framer output, independent of how input was split: literal data
/// and line parts are merged.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Line(String, LineEnding, bool, Option<LiteralHeader>),
    Literal(Vec<u8>),
    TooLong,
}

/// Feeds `input` in the given chunks, accepting every synchronising literal.
fn run(mut framer: Framer, chunks: &[&[u8]]) -> Vec<Seen> {
    let mut seen = Vec::new();
    let mut part = Vec::new();
    let mut part_head = false;
    let mut drain = |framer: &mut Framer, seen: &mut Vec<Seen>| loop {
        if framer.awaiting_literal_decision() {
            framer.accept_literal();
        }
        let Some(fragment) = framer.next_fragment() else {
            break;
        };
        match fragment {
            Fragment::Line {
                line,
                ending,
                head,
                literal,
            } => {
                let mut text = std::mem::take(&mut part);
                text.extend_from_slice(&line);
                let head = if text.len() > line.len() {
                    part_head
                } else {
                    head
                };
                seen.push(Seen::Line(
                    String::from_utf8_lossy(&text).into(),
                    ending,
                    head,
                    literal,
                ));
            }
            Fragment::LinePart { bytes, head } => {
                if part.is_empty() {
                    part_head = head;
                }
                part.extend_from_slice(&bytes);
            }
            Fragment::LiteralData(data) => match seen.last_mut() {
                Some(Seen::Literal(acc)) => acc.extend_from_slice(&data),
                _ => seen.push(Seen::Literal(data.to_vec())),
            },
            Fragment::LineTooLong => seen.push(Seen::TooLong),
        }
    };
    for chunk in chunks {
        framer.push(chunk);
        drain(&mut framer, &mut seen);
    }
    seen
}

/// Runs the input whole, one byte at a time, and cut in two at every position; all runs
/// must see the same fragments.
fn every_split(make: fn() -> Framer, input: &[u8]) -> Vec<Seen> {
    let whole = run(make(), &[input]);
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(run(make(), &bytes), whole, "one byte per write differs");
    for cut in 0..=input.len() {
        let (a, b) = input.split_at(cut);
        assert_eq!(run(make(), &[a, b]), whole, "split at {cut} differs");
    }
    whole
}

fn line(text: &str, head: bool) -> Seen {
    Seen::Line(text.into(), LineEnding::Crlf, head, None)
}

fn line_lit(text: &str, head: bool, len: u64, mode: LiteralMode) -> Seen {
    Seen::Line(
        text.into(),
        LineEnding::Crlf,
        head,
        Some(LiteralHeader {
            len,
            mode,
            binary: false,
        }),
    )
}

#[test]
fn pipelined_commands_are_separate_lines() {
    let seen = every_split(commands, b"a NOOP\r\nb CAPABILITY\r\n");
    assert_eq!(seen, vec![line("a NOOP", true), line("b CAPABILITY", true)]);
}

#[test]
fn sync_literal_waits_then_yields_exact_bytes() {
    let seen = every_split(commands, b"a APPEND INBOX {5}\r\nab\r\nc\r\nb NOOP\r\n");
    assert_eq!(
        seen,
        vec![
            line_lit("a APPEND INBOX {5}", true, 5, LiteralMode::Sync),
            Seen::Literal(b"ab\r\nc".to_vec()),
            line("", false),
            line("b NOOP", true),
        ]
    );
}

#[test]
fn non_sync_literal_does_not_wait() {
    let mut framer = commands();
    framer.push(b"a LOGIN {3+}\r\nbob {6+}\r\nsecret\r\n");
    assert_eq!(
        framer.next_fragment(),
        Some(Fragment::Line {
            line: Bytes::from_static(b"a LOGIN {3+}"),
            ending: LineEnding::Crlf,
            head: true,
            literal: Some(LiteralHeader {
                len: 3,
                mode: LiteralMode::NonSync,
                binary: false
            }),
        })
    );
    assert!(!framer.awaiting_literal_decision());
    assert_eq!(
        framer.next_fragment(),
        Some(Fragment::LiteralData(Bytes::from_static(b"bob")))
    );
    assert!(matches!(
        framer.next_fragment(),
        Some(Fragment::Line {
            head: false,
            literal: Some(_),
            ..
        })
    ));
    assert_eq!(
        framer.next_fragment(),
        Some(Fragment::LiteralData(Bytes::from_static(b"secret")))
    );
    assert!(matches!(
        framer.next_fragment(),
        Some(Fragment::Line {
            head: false,
            literal: None,
            ..
        })
    ));
    assert_eq!(framer.next_fragment(), None);
}

#[test]
fn rejected_sync_literal_is_never_read_as_literal_or_command_tail() {
    // The client did not get "+", so what follows is a new command, not literal data.
    let mut framer = commands();
    framer.push(b"a APPEND INBOX {4294967295}\r\nb NOOP\r\n");
    let first = framer.next_fragment();
    assert!(matches!(
        first,
        Some(Fragment::Line {
            literal: Some(LiteralHeader {
                len: 4294967295,
                ..
            }),
            ..
        })
    ));
    assert_eq!(framer.next_fragment(), None, "waits for the decision");
    framer.reject_literal();
    assert!(matches!(
        framer.next_fragment(),
        Some(Fragment::Line { ref line, head: true, .. }) if line.as_ref() == b"b NOOP"
    ));
}

#[test]
fn literal_bytes_that_look_like_commands_stay_literal() {
    let seen = every_split(
        commands,
        b"a APPEND INBOX {18+}\r\nb LOGOUT\r\nc NOOP\r\n\r\n",
    );
    assert_eq!(
        seen,
        vec![
            line_lit("a APPEND INBOX {18+}", true, 18, LiteralMode::NonSync),
            Seen::Literal(b"b LOGOUT\r\nc NOOP\r\n".to_vec()),
            line("", false),
        ]
    );
}

#[test]
fn bare_lf_ends_a_line_and_is_reported() {
    let seen = every_split(commands, b"a NOOP\nb LOGOUT\r\n");
    assert_eq!(
        seen,
        vec![
            Seen::Line("a NOOP".into(), LineEnding::BareLf, true, None),
            line("b LOGOUT", true)
        ]
    );
}

#[test]
fn bare_cr_stays_inside_the_line() {
    let seen = every_split(commands, b"a LOGIN \"a\rb\" x\r\n");
    assert_eq!(seen, vec![line("a LOGIN \"a\rb\" x", true)]);
}

#[test]
fn line_at_the_limit_passes_and_one_more_byte_poisons() {
    let at_limit = format!("{}\r\n", "x".repeat(64));
    assert_eq!(
        every_split(commands, at_limit.as_bytes()),
        vec![line(&"x".repeat(64), true)]
    );
    let over = format!("{}\r\nb NOOP\r\n", "x".repeat(65));
    assert_eq!(every_split(commands, over.as_bytes()), vec![Seen::TooLong]);
}

#[test]
fn endless_line_is_refused_with_bounded_buffer() {
    let mut framer = commands();
    for _ in 0..1000 {
        framer.push(&[b'a'; 1024]);
        if let Some(fragment) = framer.next_fragment() {
            assert_eq!(fragment, Fragment::LineTooLong);
            break;
        }
    }
    assert_eq!(framer.buffered(), 0);
    framer.push(b"b NOOP\r\n");
    assert_eq!(
        framer.next_fragment(),
        None,
        "poisoned framer yields nothing more"
    );
}

#[test]
fn response_literals_follow_at_once() {
    let seen = every_split(responses, b"* 1 FETCH (BODY[] {3}\r\nabc)\r\na OK done\r\n");
    assert_eq!(
        seen,
        vec![
            line_lit("* 1 FETCH (BODY[] {3}", true, 3, LiteralMode::Sync),
            Seen::Literal(b"abc".to_vec()),
            line(")", false),
            line("a OK done", true),
        ]
    );
}

#[test]
fn status_response_text_never_announces_a_literal() {
    // Free text may end in "{5}" (e.g. an echoed mailbox name); it must not swallow the
    // next response as literal data.
    let seen = every_split(
        responses,
        b"a NO no such mailbox {5}\r\n* OK [ALERT] x {2}\r\n+ go {1}\r\n* BYE {3}\r\nb OK\r\n",
    );
    assert_eq!(
        seen,
        vec![
            line("a NO no such mailbox {5}", true),
            line("* OK [ALERT] x {2}", true),
            line("+ go {1}", true),
            line("* BYE {3}", true),
            line("b OK", true),
        ]
    );
}

#[test]
fn text_after_a_literal_is_not_mistaken_for_a_status_response() {
    // "OK" here is data inside a FETCH, after a literal; the "{2}" that follows is a real
    // literal announcement.
    let seen = every_split(responses, b"* 1 FETCH (X {1}\r\na OK {2}\r\nbc)\r\n");
    assert_eq!(
        seen,
        vec![
            line_lit("* 1 FETCH (X {1}", true, 1, LiteralMode::Sync),
            Seen::Literal(b"a".to_vec()),
            line_lit(" OK {2}", false, 2, LiteralMode::Sync),
            Seen::Literal(b"bc".to_vec()),
            line(")", false),
        ]
    );
}

#[test]
fn long_response_lines_are_streamed_whole() {
    let search = format!(
        "* SEARCH {}",
        (1..200)
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let input = format!("{search}\r\na OK\r\n");
    let seen = every_split(responses, input.as_bytes());
    assert_eq!(seen, vec![line(&search, true), line("a OK", true)]);
}

#[test]
fn long_response_line_ending_in_a_literal_keeps_the_literal() {
    let head = format!("* 1 FETCH (X \"{}\" BODY[] {{4}}", "y".repeat(150));
    let input = format!("{head}\r\nwxyz)\r\n");
    let seen = every_split(responses, input.as_bytes());
    assert_eq!(
        seen,
        vec![
            line_lit(&head, true, 4, LiteralMode::Sync),
            Seen::Literal(b"wxyz".to_vec()),
            line(")", false),
        ]
    );
}

#[test]
fn long_status_response_text_is_never_a_literal() {
    let text = format!("* OK {} {{3}}", "z".repeat(150));
    let input = format!("{text}\r\na OK\r\n");
    assert_eq!(
        every_split(responses, input.as_bytes()),
        vec![line(&text, true), line("a OK", true)]
    );
}

#[test]
fn literal_header_grammar() {
    let lit = |len, mode, binary| Some(LiteralHeader { len, mode, binary });
    assert_eq!(
        literal_header(b"a APPEND x {5}"),
        lit(5, LiteralMode::Sync, false)
    );
    assert_eq!(
        literal_header(b"a APPEND x {0+}"),
        lit(0, LiteralMode::NonSync, false)
    );
    assert_eq!(
        literal_header(b"a APPEND x ~{7}"),
        lit(7, LiteralMode::Sync, true)
    );
    assert_eq!(
        literal_header(b"{99999999999999999999}"),
        lit(u64::MAX, LiteralMode::Sync, false),
        "overflow saturates so that every limit refuses it"
    );
    assert_eq!(literal_header(b"a x {}"), None);
    assert_eq!(literal_header(b"a x {5 }"), None);
    assert_eq!(literal_header(b"a x {-5}"), None);
    assert_eq!(literal_header(b"a x {5++}"), None);
    assert_eq!(literal_header(b"a x 5}"), None);
    assert_eq!(
        literal_header(b"a x {123456789012345678901}"),
        None,
        "more than 20 digits"
    );
}

#[test]
fn zero_length_literal_continues_the_message() {
    let seen = every_split(commands, b"a LOGIN {0}\r\n x\r\n");
    assert_eq!(
        seen,
        vec![
            line_lit("a LOGIN {0}", true, 0, LiteralMode::Sync),
            line(" x", false)
        ]
    );
}

#[test]
fn long_tag_classification_does_not_depend_on_packet_boundaries() {
    // Found by the fuzzer: the status word falls beyond what a streamed head shows.
    for tail in [" OK {3}", " OKAY {3}", " NO", ""] {
        let input = format!("{}{tail}\r\nabc\r\n", "a".repeat(300));
        every_split(responses, input.as_bytes());
    }
}
