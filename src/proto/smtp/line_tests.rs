use super::*;

type Seen = Vec<Result<Vec<u8>, LineError>>;

/// Feeds `chunks` and drains after each push, checking the memory bound.
fn run(max_line: usize, chunks: &[&[u8]]) -> Seen {
    let mut framer = LineFramer::new(max_line);
    let mut seen = Vec::new();
    for chunk in chunks {
        framer.push(chunk);
        while let Some(line) = framer.next_line() {
            seen.push(line.map(|l| l.to_vec()));
        }
        assert!(
            framer.buffered() < max_line,
            "drained framer holds a full line"
        );
    }
    seen
}

/// Whole, one byte per push, and cut in two at every position: all must agree.
fn every_split(max_line: usize, input: &[u8]) -> Seen {
    let whole = run(max_line, &[input]);
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(run(max_line, &bytes), whole, "one byte per push differs");
    for cut in 0..=input.len() {
        let (a, b) = input.split_at(cut);
        assert_eq!(run(max_line, &[a, b]), whole, "split at {cut} differs");
    }
    whole
}

fn ok(line: &str) -> Result<Vec<u8>, LineError> {
    Ok(line.as_bytes().to_vec())
}

#[test]
fn pipelined_commands_are_separate_lines() {
    let seen = every_split(
        COMMAND_LINE_MAX,
        b"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n",
    );
    assert_eq!(
        seen,
        vec![
            ok("EHLO x"),
            ok("MAIL FROM:<a@b>"),
            ok("RCPT TO:<c@d>"),
            ok("DATA")
        ]
    );
}

#[test]
fn empty_lines_are_lines() {
    assert_eq!(
        every_split(512, b"\r\n\r\nQUIT\r\n"),
        vec![ok(""), ok(""), ok("QUIT")]
    );
}

#[test]
fn incomplete_line_waits() {
    assert_eq!(every_split(512, b"QUIT\r"), vec![]);
    assert_eq!(every_split(512, b"QU"), vec![]);
}

#[test]
fn bare_lf_makes_the_whole_line_a_violation() {
    // SECURITY-CASES case 4 at the command level: the LF does not end a line, so
    // "RCPT TO" is never seen as a command.
    let seen = every_split(512, b"MAIL FROM:<a@b>\nRCPT TO:<c@d>\r\nNOOP\r\n");
    assert_eq!(seen, vec![Err(LineError::BareLf), ok("NOOP")]);
}

#[test]
fn lf_only_framing_is_one_long_violation() {
    // Clients that end lines with LF alone get one error for everything up to a CRLF.
    let seen = every_split(512, b"EHLO x\nMAIL FROM:<a@b>\nQUIT\n");
    assert_eq!(seen, vec![Err(LineError::BareLf)]);
}

#[test]
fn bare_cr_makes_the_line_a_violation() {
    let seen = every_split(512, b"NOOP\rQUIT\r\nRSET\r\n");
    assert_eq!(seen, vec![Err(LineError::BareCr), ok("RSET")]);
}

#[test]
fn cr_cr_lf_is_a_bare_cr_and_the_crlf_ends_the_line() {
    let seen = every_split(512, b"NOOP\r\r\nQUIT\r\n");
    assert_eq!(seen, vec![Err(LineError::BareCr), ok("QUIT")]);
}

#[test]
fn first_fault_wins_by_position() {
    assert_eq!(
        every_split(512, b"a\nb\rc\r\n"),
        vec![Err(LineError::BareLf)]
    );
    assert_eq!(
        every_split(512, b"a\rb\nc\r\n"),
        vec![Err(LineError::BareCr)]
    );
    // A bare LF inside the limit wins over the length.
    let mut long = b"x\n".to_vec();
    long.extend_from_slice(&[b'y'; 100]);
    long.extend_from_slice(b"\r\nQUIT\r\n");
    assert_eq!(
        every_split(16, &long),
        vec![Err(LineError::BareLf), ok("QUIT")]
    );
}

#[test]
fn limit_includes_the_crlf() {
    // 510 bytes + CRLF = 512: accepted; one more is too long.
    let mut line = vec![b'a'; 510];
    line.extend_from_slice(b"\r\n");
    assert_eq!(run(512, &[&line]), vec![Ok(vec![b'a'; 510])]);
    let mut line = vec![b'a'; 511];
    line.extend_from_slice(b"\r\nQUIT\r\n");
    assert_eq!(
        run(512, &[&line]),
        vec![Err(LineError::TooLong), ok("QUIT")]
    );
}

#[test]
fn limit_edges_every_split() {
    // max_line 8: content of 6 fits, 7 does not; a CR at the last allowed byte whose LF
    // would come one byte late is too long, and the discard resumes at that CR.
    assert_eq!(
        every_split(8, b"abcdef\r\nQUIT\r\n"),
        vec![ok("abcdef"), ok("QUIT")]
    );
    assert_eq!(
        every_split(8, b"abcdefg\r\nQUIT\r\n"),
        vec![Err(LineError::TooLong), ok("QUIT")]
    );
    assert_eq!(
        every_split(8, b"abcdefgh\r\nQUIT\r\n"),
        vec![Err(LineError::TooLong), ok("QUIT")]
    );
    // A bare CR just before the limit is decided at the same byte as the length: CR wins.
    assert_eq!(
        every_split(8, b"abcdef\rx\r\nQUIT\r\n"),
        vec![Err(LineError::BareCr), ok("QUIT")]
    );
}

#[test]
fn long_command_is_reported_once_and_framing_resumes() {
    // SECURITY-CASES case 7: a 600-byte command against the 512-byte RFC limit.
    let mut input = b"MAIL FROM:<".to_vec();
    input.extend_from_slice(&[b'a'; 600]);
    input.extend_from_slice(b"@x>\r\nRSET\r\n");
    let seen = every_split(RFC5321_COMMAND_LINE, &input);
    assert_eq!(seen, vec![Err(LineError::TooLong), ok("RSET")]);
}

#[test]
fn long_line_is_reported_before_its_end() {
    let mut framer = LineFramer::new(512);
    framer.push(&[b'x'; 600]);
    assert_eq!(framer.next_line(), Some(Err(LineError::TooLong)));
    assert!(framer.is_discarding());
    assert_eq!(framer.next_line(), None);
    framer.push(b"yyy\r");
    assert_eq!(framer.next_line(), None);
    framer.push(b"\nQUIT\r\n");
    assert!(!framer.is_discarding());
    assert_eq!(framer.next_line(), Some(ok("QUIT").map(Bytes::from)));
}

#[test]
fn endless_line_keeps_memory_below_the_limit() {
    // SECURITY-CASES case 7: 10 MB without LF, in 64 KiB reads.
    let mut framer = LineFramer::new(COMMAND_LINE_MAX);
    let block = vec![b'z'; 64 * 1024];
    let mut errors = 0;
    for _ in 0..160 {
        framer.push(&block);
        while let Some(line) = framer.next_line() {
            assert_eq!(line, Err(LineError::TooLong));
            errors += 1;
        }
        assert!(framer.buffered() < COMMAND_LINE_MAX);
    }
    assert_eq!(errors, 1);
    framer.push(b"\r\nNOOP\r\n");
    assert_eq!(framer.next_line(), Some(Ok(Bytes::from_static(b"NOOP"))));
}

#[test]
fn discard_tracks_a_cr_across_pushes() {
    assert_eq!(
        run(8, &[b"0123456789\r", b"\nQUIT\r\n"]),
        vec![Err(LineError::TooLong), ok("QUIT")]
    );
    // A CR then a non-LF in the discarded tail does not end it.
    assert_eq!(
        every_split(8, b"0123456789\rX\nstill\r\nQUIT\r\n"),
        vec![Err(LineError::TooLong), ok("QUIT")]
    );
}

#[test]
fn nul_is_left_to_the_parser() {
    assert_eq!(
        every_split(512, b"MAIL FROM:<a\0b@x>\r\n"),
        vec![ok("MAIL FROM:<a\0b@x>")]
    );
}

#[test]
fn take_buffered_hands_over_pipelined_bytes() {
    let mut framer = LineFramer::new(512);
    framer.push(b"DATA\r\nSubject: x\r\n\r\nbody\r\n.\r\n");
    assert_eq!(framer.next_line(), Some(Ok(Bytes::from_static(b"DATA"))));
    assert_eq!(
        framer.take_buffered(),
        Bytes::from_static(b"Subject: x\r\n\r\nbody\r\n.\r\n")
    );
    assert_eq!(framer.buffered(), 0);
    // STARTTLS injection (SECURITY-CASES case 9): the session sees what follows.
    framer.push(b"STARTTLS\r\nRSET\r\n");
    assert_eq!(
        framer.next_line(),
        Some(Ok(Bytes::from_static(b"STARTTLS")))
    );
    assert_eq!(framer.buffered(), 6);
}

#[test]
fn raising_the_limit_for_sasl() {
    let mut framer = LineFramer::new(COMMAND_LINE_MAX);
    framer.set_max_line(SASL_LINE_MAX);
    let mut response = vec![b'A'; 8000];
    response.extend_from_slice(b"\r\n");
    framer.push(&response);
    assert_eq!(
        framer.next_line().map(|l| l.map(|l| l.len())),
        Some(Ok(8000))
    );
    framer.set_max_line(COMMAND_LINE_MAX);
    framer.push(&response);
    assert_eq!(framer.next_line(), Some(Err(LineError::TooLong)));
}

#[test]
fn shrinking_the_limit_mid_line() {
    let mut framer = LineFramer::new(100);
    framer.push(&[b'a'; 50]);
    assert_eq!(framer.next_line(), None);
    framer.set_max_line(20);
    assert_eq!(framer.next_line(), Some(Err(LineError::TooLong)));
}

/// House rule 4, on the scanner itself: for every prefix the verdict is "incomplete" up
/// to one length, then the same for every longer prefix.
#[test]
fn scan_all_prefixes() {
    for (input, limit) in [
        (&b"abc\r\nrest"[..], 16),
        (b"abc\nrest", 16),
        (b"abc\rrest", 16),
        (b"abcdefghijklmnop", 8),
        (b"abcdef\r\n", 8),
        (b"abcdefg\r\n", 8),
        (b"a\0b\r\n", 8),
    ] {
        for reject_nul in [false, true] {
            let verdicts: Vec<Scan> = (0..=input.len())
                .map(|n| scan(&input[..n], 0, limit, reject_nul))
                .collect();
            let first = verdicts
                .iter()
                .position(|v| !matches!(v, Scan::Incomplete { .. }));
            if let Some(first) = first {
                assert!(
                    verdicts[first..].iter().all(|v| *v == verdicts[first]),
                    "{input:?}"
                );
            }
            // Resuming from an earlier Incomplete gives the same verdict.
            let mut scanned = 0;
            for n in 0..=input.len() {
                let v = scan(&input[..n], scanned, limit, reject_nul);
                match v {
                    Scan::Incomplete { scanned: s } => scanned = s,
                    v => {
                        assert_eq!(v, verdicts[n]);
                        break;
                    }
                }
            }
        }
    }
}

proptest::proptest! {
    #[test]
    fn any_split_frames_alike(
        input in proptest::collection::vec(proptest::sample::select(b"ab\r\n .".to_vec()), 0..80),
        cuts in proptest::collection::vec(0usize..80, 0..6),
        max_line in 2usize..20,
    ) {
        let whole = run(max_line, &[&input]);
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(input.len())).collect();
        cuts.sort_unstable();
        let mut chunks = Vec::new();
        let mut at = 0;
        for cut in cuts {
            chunks.push(&input[at..cut]);
            at = cut;
        }
        chunks.push(&input[at..]);
        proptest::prop_assert_eq!(run(max_line, &chunks), whole);
    }
}
