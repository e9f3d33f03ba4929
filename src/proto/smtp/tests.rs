//! SECURITY-CASES §A (and the parser-level parts of §B and §D) through the whole SMTP
//! core: the line framer and command parser hand over to the DATA receiver at DATA and
//! take the pipelined bytes back at its end, as the session will.

use super::command::{command, Command, CommandError, Mailbox, Path};
use super::data::{DataEvent, DataLimits, DataReceiver, DataViolation};
use super::line::{LineError, LineFramer, COMMAND_LINE_MAX, RFC5321_COMMAND_LINE};

#[derive(Debug, PartialEq, Eq)]
enum Step {
    Command(Command),
    BadLine(LineError),
    BadCommand(CommandError),
    /// The emitted body and the end of data.
    Message {
        body: Vec<u8>,
        bytes: u64,
        violation: Option<DataViolation>,
    },
}

/// A minimal server loop: commands until DATA (assumed answered with 354), then the body
/// until its end, then commands again.
fn session(chunks: &[&[u8]], max_line: usize) -> Vec<Step> {
    let mut framer = LineFramer::new(max_line);
    let mut data: Option<DataReceiver> = None;
    let mut body = Vec::new();
    let mut steps = Vec::new();
    for chunk in chunks {
        match &mut data {
            Some(receiver) => receiver.push(chunk),
            None => framer.push(chunk),
        }
        loop {
            if let Some(receiver) = &mut data {
                match receiver.next_event() {
                    None => break,
                    Some(DataEvent::Chunk(bytes)) => body.extend_from_slice(&bytes),
                    Some(DataEvent::End { bytes, violation }) => {
                        steps.push(Step::Message {
                            body: std::mem::take(&mut body),
                            bytes,
                            violation,
                        });
                        framer.push(&receiver.take_buffered());
                        data = None;
                    }
                }
                continue;
            }
            match framer.next_line() {
                None => break,
                Some(Err(e)) => steps.push(Step::BadLine(e)),
                Some(Ok(line)) => match command(&line) {
                    Ok(Command::Data) => {
                        steps.push(Step::Command(Command::Data));
                        let mut receiver = DataReceiver::new(DataLimits::default());
                        receiver.push(&framer.take_buffered());
                        data = Some(receiver);
                    }
                    Ok(parsed) => steps.push(Step::Command(parsed)),
                    Err(e) => steps.push(Step::BadCommand(e)),
                },
            }
        }
    }
    steps
}

/// Whole, one byte per write, and cut in two at every position: the same steps.
fn every_split(input: &[u8], max_line: usize) -> Vec<Step> {
    let whole = session(&[input], max_line);
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(
        session(&bytes, max_line),
        whole,
        "one byte per write differs"
    );
    for cut in 0..=input.len() {
        let (a, b) = input.split_at(cut);
        assert_eq!(session(&[a, b], max_line), whole, "split at {cut} differs");
    }
    whole
}

fn parsed(line: &str) -> Step {
    Step::Command(command(line.as_bytes()).expect("a valid command"))
}

const ENVELOPE: &[u8] =
    b"EHLO client\r\nMAIL FROM:<a@ours.example>\r\nRCPT TO:<b@x.example>\r\nDATA\r\n";

fn mail_froms(steps: &[Step]) -> Vec<&Mailbox> {
    steps
        .iter()
        .filter_map(|s| match s {
            Step::Command(Command::Mail {
                from: Path::Mailbox(m),
                ..
            }) => Some(m),
            _ => None,
        })
        .collect()
}

#[test]
fn case_1_lf_dot_crlf_smuggling_is_one_transaction() {
    let data = b"Subject: a\r\n\r\nx\n.\r\nMAIL FROM:<ceo@victim>\r\nRCPT TO:<t@x>\r\nDATA\r\n\
                 From: ceo@victim\r\n\r\nevil\r\n.\r\n";
    let input = [ENVELOPE, data, b"QUIT\r\n"].concat();
    let steps = every_split(&input, COMMAND_LINE_MAX);
    assert_eq!(
        steps,
        vec![
            parsed("EHLO client"),
            parsed("MAIL FROM:<a@ours.example>"),
            parsed("RCPT TO:<b@x.example>"),
            parsed("DATA"),
            Step::Message {
                body: b"Subject: a\r\n\r\n".to_vec(),
                bytes: (data.len() - 3) as u64,
                violation: Some(DataViolation::BareLf),
            },
            parsed("QUIT"),
        ]
    );
    assert_eq!(
        mail_froms(&steps).len(),
        1,
        "the smuggled MAIL is body, never a command"
    );
}

#[test]
fn case_2_lf_dot_lf_smuggling_is_one_transaction() {
    let data = b"Subject: a\r\n\r\nx\n.\nMAIL FROM:<ceo@victim>\r\nRCPT TO:<t@x>\r\nDATA\r\n\
                 From: ceo@victim\r\n\r\nevil\r\n.\r\n";
    let steps = every_split(&[ENVELOPE, data].concat(), COMMAND_LINE_MAX);
    assert_eq!(steps.len(), 5);
    assert_eq!(mail_froms(&steps).len(), 1);
    assert!(matches!(
        steps.last(),
        Some(Step::Message {
            violation: Some(DataViolation::BareLf),
            ..
        })
    ));
}

#[test]
fn cr_variants_of_the_smuggle_are_one_transaction() {
    for smuggle in [&b"x\r.\r\n"[..], b"x\r.\r", b"x\r\n.\r"] {
        let data = [smuggle, b"MAIL FROM:<ceo@victim>\r\nDATA\r\nevil\r\n.\r\n"].concat();
        let steps = every_split(&[ENVELOPE, &data].concat(), COMMAND_LINE_MAX);
        assert_eq!(mail_froms(&steps).len(), 1, "{smuggle:?}");
        assert!(matches!(
            steps.last(),
            Some(Step::Message {
                violation: Some(DataViolation::BareCr),
                ..
            })
        ));
    }
}

#[test]
fn clean_message_then_pipelined_transaction() {
    // RFC 2920: what follows the end of data is commands again; inside the data, a
    // stuffed "MAIL FROM" line stays body.
    let input = [
        ENVELOPE,
        b"Subject: x\r\n\r\n..\r\nMAIL FROM:<not@a.command>\r\n.\r\n",
        b"MAIL FROM:<c@ours.example>\r\nRSET\r\n",
    ]
    .concat();
    let steps = every_split(&input, COMMAND_LINE_MAX);
    assert_eq!(
        steps[4],
        Step::Message {
            body: b"Subject: x\r\n\r\n.\r\nMAIL FROM:<not@a.command>\r\n".to_vec(),
            bytes: 44,
            violation: None,
        }
    );
    assert_eq!(
        steps[5..],
        [parsed("MAIL FROM:<c@ours.example>"), parsed("RSET")]
    );
}

#[test]
fn case_4_bare_lf_in_a_header() {
    let input = [ENVELOPE, b"Subject: hi\nX-Injected: 1\r\n\r\nbody\r\n.\r\n"].concat();
    let steps = every_split(&input, COMMAND_LINE_MAX);
    assert_eq!(
        steps.last(),
        Some(&Step::Message {
            body: Vec::new(),
            bytes: 35,
            violation: Some(DataViolation::BareLf)
        })
    );
}

#[test]
fn case_4_bare_lf_in_a_command_line() {
    let steps = every_split(
        b"MAIL FROM:<a@b>\nRCPT TO:<c@d>\r\nQUIT\r\n",
        COMMAND_LINE_MAX,
    );
    assert_eq!(
        steps,
        vec![Step::BadLine(LineError::BareLf), parsed("QUIT")]
    );
}

#[test]
fn case_5_nul_in_a_command_and_in_data() {
    let steps = every_split(b"MAIL FROM:<a\0b@x>\r\nQUIT\r\n", COMMAND_LINE_MAX);
    let Step::BadCommand(error) = &steps[0] else {
        panic!("{steps:?}");
    };
    assert_eq!(error.reply().code, 501);
    assert_eq!(steps[1], parsed("QUIT"));
    let steps = every_split(&[ENVELOPE, b"a\0b\r\n.\r\n"].concat(), COMMAND_LINE_MAX);
    assert!(matches!(
        steps.last(),
        Some(Step::Message {
            violation: Some(DataViolation::Nul),
            ..
        })
    ));
}

#[test]
fn case_6_dot_stuffing() {
    let steps = every_split(
        &[ENVELOPE, b"..\r\n...\r\n..x\r\n...x\r\n.\r\n"].concat(),
        512,
    );
    assert_eq!(
        steps.last(),
        Some(&Step::Message {
            body: b".\r\n..\r\n.x\r\n..x\r\n".to_vec(),
            bytes: 16,
            violation: None
        })
    );
}

#[test]
fn case_7_long_lines() {
    // A 600-byte command against RFC 5321's 512 (a listener configured at the minimum),
    // and a line over the default 2048.
    let mut command = b"MAIL FROM:<".to_vec();
    command.extend_from_slice(&[b'a'; 584]);
    command.extend_from_slice(b"@b>\r\n");
    assert_eq!(command.len(), 600);
    let input = [&command[..], b"NOOP\r\n"].concat();
    assert_eq!(
        every_split(&input, RFC5321_COMMAND_LINE),
        vec![Step::BadLine(LineError::TooLong), parsed("NOOP")]
    );
    let long = [&b"NOOP "[..], &[b'x'; COMMAND_LINE_MAX], b"\r\nQUIT\r\n"].concat();
    assert_eq!(
        session(&[&long], COMMAND_LINE_MAX),
        vec![Step::BadLine(LineError::TooLong), parsed("QUIT")]
    );
    // A 1200-byte body line.
    let body = [&b"Subject: x\r\n\r\n"[..], &[b'y'; 1198], b"\r\n.\r\n"].concat();
    let steps = session(&[ENVELOPE, &body], COMMAND_LINE_MAX);
    assert!(matches!(
        steps.last(),
        Some(Step::Message {
            violation: Some(DataViolation::LineTooLong),
            ..
        })
    ));
}

#[test]
fn case_9_starttls_injection_is_visible_to_the_session() {
    // The session must see bytes behind STARTTLS and close (SECURITY-CASES case 9).
    let mut framer = LineFramer::new(COMMAND_LINE_MAX);
    framer.push(b"STARTTLS\r\nRSET\r\n");
    let line = framer.next_line().expect("a line").expect("valid");
    assert_eq!(command(&line), Ok(Command::Starttls));
    assert_eq!(framer.buffered(), 6, "the injected RSET is still buffered");
}

#[test]
fn case_35_bdat_is_parsed_but_its_bytes_are_not_commands() {
    // CHUNKING not advertised: the session answers 502 and closes, because the chunk
    // would otherwise run as a command. The parser gives it the size to see that.
    assert_eq!(
        command(b"BDAT 5"),
        Ok(Command::Bdat {
            size: 5,
            last: false
        })
    );
    assert_eq!(
        command(b"BDAT 4294967296"),
        Ok(Command::Bdat {
            size: 4_294_967_296,
            last: false
        })
    );
}

#[test]
fn fuzz_bodies_hold_on_the_attack_inputs() {
    use super::fuzz::{fuzz_smtp_command, fuzz_smtp_data, fuzz_smtp_reply};
    for input in [
        &b"MAIL FROM:<a\0b@x>\r\n"[..],
        b"MAIL FROM:<a@b> SIZE=100 BODY=8BITMIME\r\nRCPT TO:<c@d> NOTIFY=SUCCESS\r\nDATA\r\n",
        b"STARTTLS\r\nRSET\r\n",
        b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n",
    ] {
        fuzz_smtp_command(input);
    }
    for input in [
        &b"250-mail.example.org\r\n250-PIPELINING\r\n250 CHUNKING\r\n"[..],
        b"250 2.0.0 Ok: queued as 4ZxYk02BzTz9sWk\r\n",
        b"250-a\r\n251 b\r\n",
    ] {
        fuzz_smtp_reply(input);
    }
    for input in [
        &b"\x00Subject: a\r\n\r\nx\n.\r\nMAIL FROM:<ceo@victim>\r\n.\r\n"[..],
        b"\x01x\n.\nMAIL\r\n.\r\n",
        b"\x32ab\r\n..\r\n.\r\n",
    ] {
        fuzz_smtp_data(input);
    }
}

proptest::proptest! {
    /// A poor man's fuzzer on stable: the three fuzz bodies on random bytes (they remap
    /// onto protocol alphabets themselves).
    #[test]
    fn fuzz_bodies_hold_on_random_inputs(
        data in proptest::collection::vec(proptest::num::u8::ANY, 0..160),
    ) {
        super::fuzz::fuzz_smtp_command(&data);
        super::fuzz::fuzz_smtp_reply(&data);
        super::fuzz::fuzz_smtp_data(&data);
    }
}
