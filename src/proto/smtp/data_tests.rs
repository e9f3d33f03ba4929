use super::*;
use crate::proto::smtp::fuzz::{run_data, DataRun};

const DEFAULT: DataLimits = DataLimits {
    max_line: TEXT_LINE_MAX,
    max_size: u64::MAX,
};

/// Whole, one byte per push, and cut in two at every position: all must agree (and
/// `run_data` checks the memory bound after every push).
fn every_split(input: &[u8], limits: DataLimits) -> DataRun {
    let whole = run_data(&[input], limits);
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(run_data(&bytes, limits), whole, "one byte per push differs");
    for cut in 0..=input.len() {
        let (a, b) = input.split_at(cut);
        assert_eq!(run_data(&[a, b], limits), whole, "split at {cut} differs");
    }
    if let Some(reference) = reference_end_of_data(input, limits) {
        let (end, bytes, violation) = whole.end.expect("the reference found an end");
        assert_eq!(
            (end, bytes, violation, &whole.emitted),
            (
                reference.end,
                reference.body.len() as u64,
                reference.violation,
                &reference.emitted
            ),
            "differs from the naive reference"
        );
    } else {
        assert_eq!(whole.end, None);
    }
    whole
}

fn ended(emitted: &[u8], end: usize, bytes: u64, violation: Option<DataViolation>) -> DataRun {
    DataRun {
        end: Some((end, bytes, violation)),
        ..open(emitted)
    }
}

/// A run that has not ended, having emitted `emitted` (and passed it on stuffed).
fn open(emitted: &[u8]) -> DataRun {
    let mut stuffed = Vec::new();
    DotStuffer::new().stuff(emitted, &mut stuffed);
    DataRun {
        emitted: emitted.to_vec(),
        stuffed,
        end: None,
    }
}

#[test]
fn simple_message() {
    let input = b"Subject: a\r\n\r\nbody\r\n.\r\n";
    let body = b"Subject: a\r\n\r\nbody\r\n";
    assert_eq!(
        every_split(input, DEFAULT),
        ended(body, input.len(), 20, None)
    );
}

#[test]
fn empty_message_ends_at_the_first_line() {
    assert_eq!(every_split(b".\r\n", DEFAULT), ended(b"", 3, 0, None));
    assert_eq!(
        every_split(b"\r\n.\r\n", DEFAULT),
        ended(b"\r\n", 5, 2, None)
    );
}

#[test]
fn incomplete_data_emits_complete_lines_only() {
    let run = every_split(b"line one\r\nline t", DEFAULT);
    assert_eq!(run, open(b"line one\r\n"));
    assert_eq!(every_split(b"a\r\n.\r", DEFAULT).end, None);
    assert_eq!(every_split(b"a\r\n.", DEFAULT).emitted, b"a\r\n");
}

#[test]
fn dot_unstuffing() {
    // SECURITY-CASES case 6: the original lines ".", "..", ".x", "..x", client-stuffed.
    let input = b"..\r\n...\r\n..x\r\n...x\r\n.\r\n";
    let body = b".\r\n..\r\n.x\r\n..x\r\n";
    assert_eq!(
        every_split(input, DEFAULT),
        ended(body, input.len(), body.len() as u64, None)
    );
    // Dots elsewhere are data.
    let input = b"a.\r\n a\r\n.\r\n";
    assert_eq!(every_split(input, DEFAULT).emitted, b"a.\r\n a\r\n");
}

#[test]
fn dot_stuffing_round_trip() {
    // SECURITY-CASES case 6: the upstream wire shows re-stuffing, the body comes back
    // byte-identical.
    let body = b".\r\n..\r\n.x\r\n..x\r\nplain\r\n";
    let mut wire = Vec::new();
    let mut stuffer = DotStuffer::new();
    stuffer.stuff(body, &mut wire);
    stuffer.finish(&mut wire);
    assert_eq!(wire, b"..\r\n...\r\n..x\r\n...x\r\nplain\r\n.\r\n");
    assert_eq!(
        every_split(&wire, DEFAULT),
        ended(body, wire.len(), body.len() as u64, None)
    );
}

#[test]
fn stuffer_writes_canonical_crlf_whatever_the_input() {
    let stuffed = |parts: &[&[u8]]| {
        let mut out = BytesMut::new();
        let mut stuffer = DotStuffer::new();
        for part in parts {
            stuffer.stuff(part, &mut out);
        }
        stuffer.finish(&mut out);
        out.to_vec()
    };
    assert_eq!(stuffed(&[]), b".\r\n");
    assert_eq!(stuffed(&[b"a"]), b"a\r\n.\r\n");
    assert_eq!(stuffed(&[b"a\r\n"]), b"a\r\n.\r\n");
    assert_eq!(stuffed(&[b".a"]), b"..a\r\n.\r\n");
    // A smuggling attempt fed to the stuffer comes out as harmless body.
    assert_eq!(stuffed(&[b"x\n.\r\nMAIL"]), b"x\r\n..\r\nMAIL\r\n.\r\n");
    assert_eq!(stuffed(&[b"x\n.\n"]), b"x\r\n..\r\n.\r\n");
    assert_eq!(stuffed(&[b"x\r.\r"]), b"x\r\n..\r\n.\r\n");
    // A CR at the end of one piece and the LF at the start of the next are one CRLF.
    assert_eq!(stuffed(&[b"a\r", b"\n.b\r"]), b"a\r\n..b\r\n.\r\n");
    assert_eq!(stuffed(&[b"a\r", b".b"]), b"a\r\n..b\r\n.\r\n");
}

#[test]
fn lf_dot_crlf_is_not_the_end() {
    // SECURITY-CASES case 1: one transaction, the smuggled one is body, and the bare LF
    // makes the whole message a violation reported at the real end.
    let input = b"Subject: a\r\n\r\nx\n.\r\nMAIL FROM:<ceo@victim>\r\nRCPT TO:<t@x>\r\nDATA\r\n\
                  From: ceo@victim\r\n\r\nevil\r\n.\r\nQUIT\r\n";
    let run = every_split(input, DEFAULT);
    let end = input.len() - b"QUIT\r\n".len();
    assert_eq!(
        run.end,
        Some((end, (end - 3) as u64, Some(DataViolation::BareLf)))
    );
    assert_eq!(
        run.emitted, b"Subject: a\r\n\r\n",
        "nothing from the faulty line on"
    );
}

#[test]
fn lf_dot_lf_is_not_the_end() {
    // SECURITY-CASES case 2.
    let input = b"Subject: a\r\n\r\nx\n.\nMAIL FROM:<ceo@victim>\r\nRCPT TO:<t@x>\r\nDATA\r\n\
                  From: ceo@victim\r\n\r\nevil\r\n.\r\n";
    let run = every_split(input, DEFAULT);
    assert_eq!(
        run.end,
        Some((
            input.len(),
            (input.len() - 3) as u64,
            Some(DataViolation::BareLf)
        ))
    );
}

#[test]
fn cr_dot_cr_is_not_the_end() {
    for smuggle in [&b"x\r.\r\n"[..], b"x\r.\r", b"x\r\n.\r"] {
        let mut input = smuggle.to_vec();
        input.extend_from_slice(b"MAIL FROM:<a@b>\r\n.\r\n");
        let run = every_split(&input, DEFAULT);
        assert_eq!(
            run.end.map(|(end, ..)| end),
            Some(input.len()),
            "{smuggle:?}"
        );
        assert_eq!(run.end.and_then(|(.., v)| v), Some(DataViolation::BareCr));
    }
}

#[test]
fn bare_lf_in_a_header_is_never_emitted() {
    // SECURITY-CASES case 4: the faulty line is not emitted, not even its start.
    let input = b"Subject: hi\nX-Injected: 1\r\n\r\nbody\r\n.\r\n";
    let run = every_split(input, DEFAULT);
    assert_eq!(
        run,
        ended(b"", input.len(), 35, Some(DataViolation::BareLf))
    );
}

#[test]
fn nul_in_the_body() {
    // SECURITY-CASES case 5.
    let input = b"a\r\nb\0c\r\nd\r\n.\r\n";
    assert_eq!(
        every_split(input, DEFAULT),
        ended(b"a\r\n", input.len(), 11, Some(DataViolation::Nul))
    );
}

#[test]
fn first_violation_is_reported() {
    let input = b"a\0\nb\r\n\nc\r\n.\r\n";
    let run = every_split(input, DEFAULT);
    assert_eq!(run.end.and_then(|(.., v)| v), Some(DataViolation::Nul));
    let input = b"ok\r\nx\ny\0\r\n.\r\n";
    assert_eq!(
        every_split(input, DEFAULT).end.and_then(|(.., v)| v),
        Some(DataViolation::BareLf)
    );
}

#[test]
fn line_limit_counts_unstuffed_bytes() {
    let limits = DataLimits {
        max_line: 8,
        max_size: u64::MAX,
    };
    // 6 + CRLF = 8 fits; with a stuffing dot it is 9 on the wire and still fits.
    assert_eq!(
        every_split(b"abcdef\r\n..bcdef\r\n.\r\n", limits)
            .end
            .and_then(|(.., v)| v),
        None
    );
    let run = every_split(b"abcdefg\r\n.\r\n", limits);
    assert_eq!(run, ended(b"", 12, 9, Some(DataViolation::LineTooLong)));
}

#[test]
fn long_body_line_is_refused_and_framing_continues() {
    // SECURITY-CASES case 7: a 1200-byte body line.
    let mut input = b"Subject: x\r\n\r\n".to_vec();
    input.extend_from_slice(&[b'y'; 1198]);
    input.extend_from_slice(b"\r\nafter\r\n.\r\nRSET\r\n");
    let run = run_data(&[&input], DEFAULT);
    let end = input.len() - 6;
    assert_eq!(
        run,
        ended(
            b"Subject: x\r\n\r\n",
            end,
            (end - 3) as u64,
            Some(DataViolation::LineTooLong)
        )
    );
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(run_data(&bytes, DEFAULT), run);
    let violation = DataViolation::LineTooLong.reply().to_bytes();
    assert_eq!(
        violation,
        b"554 5.6.0 Message content rejected: line too long\r\n"
    );
}

#[test]
fn size_limit_counts_without_buffering() {
    // SECURITY-CASES case 36: SIZE=100 then 50 MB; the bytes past the limit are counted,
    // never buffered, and the violation is known before the end.
    let limits = DataLimits {
        max_line: TEXT_LINE_MAX,
        max_size: 100,
    };
    let mut receiver = DataReceiver::new(limits);
    let line = [b"x".repeat(78), b"\r\n".to_vec()].concat();
    let block: Vec<u8> = line.repeat(800); // 64,000 bytes
    let mut emitted = 0;
    for _ in 0..782 {
        receiver.push(&block);
        while let Some(event) = receiver.next_event() {
            match event {
                DataEvent::Chunk(bytes) => emitted += bytes.len(),
                DataEvent::End { .. } => panic!("no end yet"),
            }
        }
        assert_eq!(
            receiver.buffered(),
            0,
            "nothing buffered after the violation"
        );
    }
    assert_eq!(receiver.violation(), Some(DataViolation::TooLarge));
    assert_eq!(emitted, 80, "the one line within the limit");
    receiver.push(b".\r\n");
    assert_eq!(
        receiver.next_event(),
        Some(DataEvent::End {
            bytes: 782 * 64_000,
            violation: Some(DataViolation::TooLarge)
        })
    );
    assert_eq!(
        DataViolation::TooLarge.reply().to_bytes(),
        b"552 5.3.4 Message size exceeds fixed limit\r\n"
    );
}

#[test]
fn size_limit_is_inclusive() {
    let limits = DataLimits {
        max_line: TEXT_LINE_MAX,
        max_size: 6,
    };
    assert_eq!(
        every_split(b"abcd\r\n.\r\n", limits).end,
        Some((9, 6, None))
    );
    assert_eq!(
        every_split(b"abcd\r\nx\r\n.\r\n", limits).end,
        Some((12, 9, Some(DataViolation::TooLarge)))
    );
}

#[test]
fn pipelined_bytes_after_the_end_are_handed_over() {
    let mut receiver = DataReceiver::new(DEFAULT);
    receiver.push(b"a\r\n.\r\nQUIT\r\n");
    assert_eq!(
        receiver.take_buffered(),
        Bytes::new(),
        "nothing before the end"
    );
    assert_eq!(
        receiver.next_event(),
        Some(DataEvent::Chunk(Lines {
            bytes: Bytes::from_static(b"a\r\n"),
            dotted: false
        }))
    );
    assert_eq!(
        receiver.next_event(),
        Some(DataEvent::End {
            bytes: 3,
            violation: None
        })
    );
    assert_eq!(receiver.next_event(), None);
    receiver.push(b"NOOP\r\n");
    assert_eq!(
        receiver.take_buffered(),
        Bytes::from_static(b"QUIT\r\nNOOP\r\n")
    );
}

#[test]
fn bdat_counter_splits_chunk_from_next_command() {
    // SECURITY-CASES case 35: an absurd announced size allocates nothing.
    let mut chunk = BdatChunk::new(4_294_967_296, false);
    let (data, rest) = chunk.consume(b"0123456789");
    assert_eq!((data.len(), rest.len()), (10, 0));
    assert_eq!(chunk.remaining(), 4_294_967_286);
    let mut chunk = BdatChunk::new(5, true);
    let (data, rest) = chunk.consume(b"abc");
    assert_eq!((data, rest), (&b"abc"[..], &b""[..]));
    let (data, rest) = chunk.consume(b"de\r\nRSET\r\n");
    assert_eq!((data, rest), (&b"de"[..], &b"\r\nRSET\r\n"[..]));
    assert!(chunk.is_complete() && chunk.is_last());
    let (data, rest) = chunk.consume(b"QUIT\r\n");
    assert_eq!((data, rest), (&b""[..], &b"QUIT\r\n"[..]));
    assert!(BdatChunk::new(0, true).is_complete());
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    /// CRLF-canonical bodies: lines of any bytes but CR, LF and NUL.
    fn canonical_body() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            proptest::collection::vec(
                prop_oneof![
                    3 => Just(b'.'),
                    1 => any::<u8>()
                        .prop_filter("no CR, LF or NUL", |b| !matches!(b, b'\r' | b'\n' | 0)),
                ],
                0..12,
            ),
            0..12,
        )
        .prop_map(|lines| {
            lines
                .into_iter()
                .flat_map(|mut line| {
                    line.extend_from_slice(b"\r\n");
                    line
                })
                .collect()
        })
    }

    /// Inputs made of framing-relevant bytes, so that ends, stuffing and faults are
    /// frequent.
    fn framing_bytes() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(proptest::sample::select(b"\r\n.a\0".to_vec()), 0..64)
    }

    fn limits() -> impl Strategy<Value = DataLimits> {
        (
            prop_oneof![Just(TEXT_LINE_MAX), 2usize..10],
            prop_oneof![Just(u64::MAX), 0u64..40],
        )
            .prop_map(|(max_line, max_size)| DataLimits { max_line, max_size })
    }

    proptest! {
        /// unstuff(stuff(x)) == x for CRLF-canonical bodies, split anywhere.
        #[test]
        fn stuff_then_receive_is_identity(body in canonical_body(), cut in 0usize..200) {
            let mut wire = Vec::new();
            let mut stuffer = DotStuffer::new();
            let cut = cut.min(body.len());
            stuffer.stuff(&body[..cut], &mut wire);
            stuffer.stuff(&body[cut..], &mut wire);
            stuffer.finish(&mut wire);
            let unlimited = DataLimits { max_line: usize::MAX, max_size: u64::MAX };
            let whole = run_data(&[&wire], unlimited);
            prop_assert_eq!(&whole, &ended(&body, wire.len(), body.len() as u64, None));
            let bytes: Vec<&[u8]> = wire.chunks(1).collect();
            prop_assert_eq!(run_data(&bytes, unlimited), whole);
        }

        /// The stuffer's fast path for canonical chunks and its general path write the
        /// same bytes for any input, split anywhere (bare CR/LF included).
        #[test]
        fn stuffer_fast_path_matches_the_general_path(
            input in framing_bytes(),
            cuts in proptest::collection::vec(0usize..64, 0..6),
        ) {
            let mut general = Vec::new();
            let mut reference = DotStuffer::new();
            reference.stuff_any(&input, &mut general);
            reference.finish(&mut general);
            let mut split = Vec::new();
            let mut stuffer = DotStuffer::new();
            let mut rest: &[u8] = &input;
            for cut in cuts {
                let (head, tail) = rest.split_at(cut.min(rest.len()));
                stuffer.stuff(head, &mut split);
                rest = tail;
            }
            stuffer.stuff(rest, &mut split);
            stuffer.finish(&mut split);
            prop_assert_eq!(split, general);
        }

        /// The receiver agrees with the naive reference: same end offset, body count,
        /// violation and emitted body, however the input is split.
        #[test]
        fn receiver_matches_the_reference(
            input in framing_bytes(),
            limits in limits(),
            cuts in proptest::collection::vec(0usize..64, 0..4),
        ) {
            let whole = run_data(&[&input], limits);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(input.len())).collect();
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut at = 0;
            for cut in cuts {
                chunks.push(&input[at..cut]);
                at = cut;
            }
            chunks.push(&input[at..]);
            prop_assert_eq!(&run_data(&chunks, limits), &whole);
            match reference_end_of_data(&input, limits) {
                Some(reference) => {
                    prop_assert_eq!(
                        whole.end,
                        Some((reference.end, reference.body.len() as u64, reference.violation))
                    );
                    prop_assert_eq!(whole.emitted, reference.emitted);
                }
                None => prop_assert_eq!(whole.end, None),
            }
        }

        /// The fuzz body itself, on generated inputs.
        #[test]
        fn fuzz_body_holds(
            header in any::<u8>(),
            sizes in proptest::collection::vec(any::<u8>(), 0..4),
            input in framing_bytes(),
        ) {
            let header = (header & 0x0f) | ((sizes.len() as u8) << 4);
            let mut data = vec![header];
            data.extend_from_slice(&sizes);
            data.extend_from_slice(&input);
            crate::proto::smtp::fuzz::fuzz_smtp_data(&data);
        }
    }
}

#[test]
fn lines_without_a_stuffing_dot_pass_the_stuffer_uncopied() {
    let mut receiver = DataReceiver::new(DEFAULT);
    receiver
        .input_buffer(64)
        .extend_from_slice(b"Subject: a\r\n\r\nbody\r\n");
    let Some(DataEvent::Chunk(lines)) = receiver.next_event() else {
        panic!("the three lines are ready");
    };
    let at = lines.as_ptr();
    let out = DotStuffer::new().stuff_lines(lines);
    assert_eq!(&out[..], b"Subject: a\r\n\r\nbody\r\n");
    assert_eq!(out.as_ptr(), at, "the receiver's own bytes, not a copy");
}

#[test]
fn lines_that_lost_a_stuffing_dot_get_it_back() {
    let mut receiver = DataReceiver::new(DEFAULT);
    // `.c` is a client's unstuffed dot line: the receiver drops the dot (RFC 5321
    // §4.5.2), so the proxy's stream has no dot there.
    receiver.push(b"a\r\n..b\r\n.c\r\nd\r\n.\r\n");
    let mut stuffer = DotStuffer::new();
    let mut passed = Vec::new();
    while let Some(DataEvent::Chunk(lines)) = receiver.next_event() {
        let dotted = lines.dotted;
        passed.push((stuffer.stuff_lines(lines).to_vec(), dotted));
    }
    assert_eq!(
        passed,
        [
            (b"a\r\n".to_vec(), false),
            (b"..b\r\n".to_vec(), true),
            (b"c\r\nd\r\n".to_vec(), true),
        ]
    );
}

mod plain_lines_property {
    use super::*;
    use proptest::prelude::*;

    /// `plain_lines` as its documentation defines it, one line at a time.
    fn per_line(input: &[u8], max_line: usize, budget: u64) -> usize {
        let mut good = 0;
        while let Some(lf) = memchr::memchr(b'\n', &input[good..]) {
            let line = &input[good..good + lf + 1];
            let text = &line[..line.len().saturating_sub(2)];
            let plain = line.ends_with(b"\r\n")
                && !text.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0)
                && line.len() <= max_line
                && (good + line.len()) as u64 <= budget;
            if !plain {
                break;
            }
            good += line.len();
            if input.get(good) == Some(&b'.') {
                break;
            }
        }
        good
    }

    /// Mostly short CRLF lines, with bare CRs and LFs, NULs, dot lines and unended text
    /// among them.
    fn bodies() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            8 => "[a-c]{0,12}".prop_map(|s| format!("{s}\r\n").into_bytes()),
            1 => Just(b".x\r\n".to_vec()),
            1 => Just(b"\r".to_vec()),
            1 => Just(b"\n".to_vec()),
            1 => Just(b"\0".to_vec()),
            1 => "[a-c]{0,30}".prop_map(String::into_bytes),
        ];
        proptest::collection::vec(piece, 0..40).prop_map(|pieces| pieces.concat())
    }

    proptest! {
        #[test]
        fn plain_lines_agrees_with_its_per_line_definition(
            input in bodies(),
            max_line in 1usize..24,
            budget in 0u64..400,
        ) {
            // The receiver takes the per-line path for a line starting with a dot.
            prop_assume!(input.first() != Some(&b'.'));
            prop_assert_eq!(
                plain_lines(&input, max_line, budget),
                per_line(&input, max_line, budget)
            );
        }

        #[test]
        fn the_receiver_agrees_with_the_naive_reference(
            body in bodies(),
            cuts in proptest::collection::vec(0usize..400, 0..4),
        ) {
            let mut input = body;
            input.extend_from_slice(b"\r\n.\r\n");
            let limits = DataLimits { max_line: 16, max_size: 300 };
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(input.len())).collect();
            cuts.sort_unstable();
            let mut pushes = Vec::new();
            let mut from = 0;
            for cut in cuts.into_iter().chain([input.len()]) {
                pushes.push(&input[from..cut]);
                from = cut;
            }
            let run = run_data(&pushes, limits);
            let reference = reference_end_of_data(&input, limits).expect("the input ends");
            let (end, bytes, violation) = run.end.expect("the receiver found the end");
            prop_assert_eq!(
                (end, bytes, violation, &run.emitted),
                (reference.end, reference.body.len() as u64, reference.violation, &reference.emitted)
            );
        }
    }
}
