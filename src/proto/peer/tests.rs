//! The peer codec: known-answer byte layouts (the examples of `docs/peer-protocol.md`),
//! all-prefix and every-split tests, every limit at and over its bound, the stream
//! readers, and proptest round trips.

use bytes::Bytes;

use super::*;

const TOKEN: &str = "1-created:1577836800-validity:31536000-hash:TdHUhOQ7ODVMjIHvrButNUNYwPWiGb8maGg8jKuFw4k-secret:2gOGPjhKTwAic/FIxxsRdCBo21SGgbte4D004oIXHRY";
const REVERSE: &str = "1-created:1577836800-validity:31536000-hash:Wjt8eq0Za1LhDTH9RyH4c0FwwHOrYmd0rR5WdYzkaM0-secret:Qv0///JjJ2OY84N7VS+rs8OWlqiMt3KwRBm5v6aFjPw";

fn token(s: &str) -> TokenText {
    TokenText::new(s).expect("a valid token")
}

fn envelope(body_len: u64, recipients: Vec<Recipient>) -> Envelope {
    Envelope {
        sender: "alice@a.example".into(),
        message_id: "chat$1@a.example".into(),
        body_len,
        recipients,
    }
}

fn bob() -> Recipient {
    Recipient {
        address: "bob@b.example".into(),
        token: token("1-x-secret:abc"),
        reverse_token: None,
    }
}

fn bytes(frame: &Frame) -> Vec<u8> {
    frame.to_bytes().expect("a valid frame")
}

/// Decodes a whole stream with the streaming decoder, Data pieces merged into frames.
fn decode_all(chunks: &[&[u8]]) -> (Vec<Result<Frame, PeerError>>, bool) {
    let mut decoder = FrameDecoder::new();
    let mut out = Vec::new();
    let mut data = Vec::new();
    for chunk in chunks {
        decoder.push(chunk);
        while let Some(item) = decoder.next_frame() {
            match item {
                Ok(Decoded::Data { piece, rest }) => {
                    data.extend_from_slice(&piece);
                    if rest == 0 {
                        out.push(Ok(Frame::Data(Bytes::from(std::mem::take(&mut data)))));
                    }
                }
                Ok(Decoded::Frame(frame)) => out.push(Ok(frame)),
                Err(e) => out.push(Err(e)),
            }
        }
    }
    (out, decoder.finish().is_ok())
}

// === known-answer layouts (docs/peer-protocol.md §8) ===

#[test]
fn envelope_layout() {
    let frame = Frame::Envelope(Envelope {
        sender: "a@x.example".into(),
        message_id: "m1@x.example".into(),
        body_len: 22,
        recipients: vec![Recipient {
            address: "b@y.example".into(),
            token: token("1-t"),
            reverse_token: Some(token("1-r")),
        }],
    });
    let expected = [
        &[0x01, 0x01, 0x00, 0x00, 0x00, 0x3c][..], // version 1, Envelope, 60 bytes
        &[0x00, 0x0b],
        b"a@x.example",
        &[0x00, 0x0c],
        b"m1@x.example",
        &[0, 0, 0, 0, 0, 0, 0, 0x16], // body length 22
        &[0x00, 0x01],                // one recipient
        &[0x00, 0x0b],
        b"b@y.example",
        &[0x00, 0x03],
        b"1-t",
        &[0x00, 0x03],
        b"1-r",
    ]
    .concat();
    assert_eq!(bytes(&frame), expected);
    assert_eq!(Frame::decode(&expected), Ok(Some((frame, expected.len()))));
}

#[test]
fn data_outcome_event_error_layouts() {
    let cases: Vec<(Frame, Vec<u8>)> = vec![
        (
            Frame::Data(Bytes::from_static(b"Subject: hi\r\n\r\nhello\r\n")),
            [
                &[0x01, 0x02, 0, 0, 0, 0x16][..],
                b"Subject: hi\r\n\r\nhello\r\n",
            ]
            .concat(),
        ),
        (
            Frame::Outcome {
                recipient: 0,
                outcome: Outcome::Stored {
                    receipt: "42".into(),
                    new_token: None,
                },
            },
            vec![
                0x01, 0x03, 0, 0, 0, 0x09, 0x00, 0x00, 0x01, 0x00, 0x02, b'4', b'2', 0x00, 0x00,
            ],
        ),
        (
            Frame::Outcome {
                recipient: 1,
                outcome: Outcome::Stored {
                    receipt: "42".into(),
                    new_token: Some(token("1-p")),
                },
            },
            vec![
                0x01, 0x03, 0, 0, 0, 0x0c, 0x00, 0x01, 0x01, 0x00, 0x02, b'4', b'2', 0x00, 0x03,
                b'1', b'-', b'p',
            ],
        ),
        (
            Frame::Outcome {
                recipient: 2,
                outcome: Outcome::Rejected {
                    status: Status::TOKEN_NOT_ACCEPTED,
                    reason: "expired".into(),
                },
            },
            [
                &[0x01, 0x03, 0, 0, 0, 0x12, 0x00, 0x02, 0x02][..],
                &[0x02, 0x26, 0x00, 0x07, 0x00, 0x1e], // 550 5.7.30
                &[0x00, 0x07],
                b"expired",
            ]
            .concat(),
        ),
        (
            Frame::Outcome {
                recipient: 3,
                outcome: Outcome::TempFail {
                    status: Status::LOCAL_ERROR,
                    reason: String::new(),
                },
            },
            vec![
                0x01, 0x03, 0, 0, 0, 0x0b, 0x00, 0x03, 0x03, 0x01, 0xc3, 0x00, 0x03, 0x00, 0x00,
                0x00, 0x00,
            ],
        ),
        (
            Frame::Event(Event {
                kind: Event::KIND_TYPING,
                payload: Bytes::from_static(b"x"),
            }),
            vec![0x01, 0x04, 0, 0, 0, 0x03, 0x00, 0x01, b'x'],
        ),
        (
            Frame::Error(ErrorFrame {
                code: ErrorCode::UnsupportedVersion,
                text: "1".into(),
            }),
            vec![0x01, 0x05, 0, 0, 0, 0x05, 0x00, 0x02, 0x00, 0x01, b'1'],
        ),
    ];
    for (frame, wire) in cases {
        assert_eq!(bytes(&frame), wire, "{frame:?}");
        assert_eq!(Frame::decode(&wire), Ok(Some((frame, wire.len()))));
    }
}

#[test]
fn data_helpers_split_and_head() {
    let body = vec![b'x'; MAX_DATA_LEN * 2 + 5];
    let mut out = Vec::new();
    encode_data(&body, &mut out);
    assert_eq!(out.len(), body.len() + 3 * FRAME_HEADER_LEN);
    let (frames, between) = decode_all(&[&out]);
    assert!(between);
    let lens: Vec<usize> = frames
        .iter()
        .map(|f| match f {
            Ok(Frame::Data(b)) => b.len(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(lens, [MAX_DATA_LEN, MAX_DATA_LEN, 5]);

    let mut none = Vec::new();
    encode_data(b"", &mut none);
    assert!(none.is_empty());
    assert_eq!(data_header(5), Ok([1, 2, 0, 0, 0, 5]));
    assert!(data_header(0).is_err());
    assert!(data_header(MAX_DATA_LEN + 1).is_err());
}

// === every streaming parser: all prefixes, every split ===

fn sample_stream() -> Vec<u8> {
    let mut wire = bytes(&Frame::Envelope(envelope(
        12,
        vec![
            bob(),
            Recipient {
                address: "carol@b.example".into(),
                token: token(TOKEN),
                reverse_token: Some(token(REVERSE)),
            },
        ],
    )));
    encode_data(b"Subject: x\r\n", &mut wire);
    wire.extend(bytes(&Frame::Outcome {
        recipient: 0,
        outcome: Outcome::TempFail {
            status: Status::new(452, 2, 2),
            reason: "mailbox full".into(),
        },
    }));
    wire.extend(bytes(&Frame::Event(Event {
        kind: 7,
        payload: Bytes::new(),
    })));
    wire
}

#[test]
fn every_prefix_is_incomplete_until_the_frame_is_whole() {
    for frame in decode_all(&[&sample_stream()]).0 {
        let frame = frame.expect("valid");
        let wire = bytes(&frame);
        for n in 0..wire.len() {
            assert_eq!(Frame::decode(&wire[..n]), Ok(None), "{frame:?} prefix {n}");
        }
        let mut longer = wire.clone();
        longer.extend_from_slice(b"\x01\x02junk");
        assert_eq!(Frame::decode(&longer), Ok(Some((frame, wire.len()))));
    }
}

#[test]
fn every_split_decodes_alike() {
    let wire = sample_stream();
    let whole = decode_all(&[&wire]);
    assert_eq!(whole.0.len(), 4);
    assert!(whole.0.iter().all(Result::is_ok));
    assert!(whole.1);
    let bytewise: Vec<&[u8]> = wire.chunks(1).collect();
    assert_eq!(decode_all(&bytewise), whole);
    for cut in 0..=wire.len() {
        let (a, b) = wire.split_at(cut);
        assert_eq!(decode_all(&[a, b]), whole, "split at {cut}");
    }
}

#[test]
fn data_payload_is_handed_out_in_pieces_as_it_arrives() {
    let mut wire = Vec::new();
    encode_data(b"0123456789", &mut wire);
    let mut decoder = FrameDecoder::new();
    decoder.push(&wire[..FRAME_HEADER_LEN + 3]);
    assert_eq!(
        decoder.next_frame(),
        Some(Ok(Decoded::Data {
            piece: Bytes::from_static(b"012"),
            rest: 7
        }))
    );
    assert_eq!(decoder.next_frame(), None);
    assert_eq!(decoder.buffered(), 0);
    assert_eq!(decoder.finish(), Err(PeerError::Truncated));
    decoder.push(&wire[FRAME_HEADER_LEN + 3..]);
    assert_eq!(
        decoder.next_frame(),
        Some(Ok(Decoded::Data {
            piece: Bytes::from_static(b"3456789"),
            rest: 0
        }))
    );
    assert_eq!(decoder.finish(), Ok(()));
}

// === header faults: one error, then the frame is skipped by its length ===

#[test]
fn header_faults_are_reported_before_the_payload_and_skipped() {
    let good = bytes(&Frame::Error(ErrorFrame {
        code: ErrorCode::Internal,
        text: "after".into(),
    }));
    let after = Ok(Frame::decode(&good).unwrap().unwrap().0);
    let cases: Vec<(Vec<u8>, PeerError)> = vec![
        (
            vec![2, 1, 0, 0, 0, 3, b'a', b'b', b'c'],
            PeerError::UnsupportedVersion(2),
        ),
        (vec![1, 0x06, 0, 0, 0, 1, 0], PeerError::UnknownFrameType(6)),
        (vec![1, 0x00, 0, 0, 0, 0], PeerError::UnknownFrameType(0)),
        (vec![1, 2, 0, 0, 0, 0], PeerError::EmptyData),
    ];
    for (bad, error) in cases {
        // Reported from the header alone.
        assert_eq!(Frame::decode(&bad[..FRAME_HEADER_LEN]), Err(error));
        let wire = [&bad[..], &good].concat();
        let (frames, between) = decode_all(&[&wire]);
        assert_eq!(frames, vec![Err(error), after.clone()], "{bad:?}");
        assert!(between);
        let bytewise: Vec<&[u8]> = wire.chunks(1).collect();
        assert_eq!(decode_all(&bytewise), (frames, true));
    }
}

#[test]
fn an_oversized_frame_is_refused_from_its_header_and_never_buffered() {
    let mut decoder = FrameDecoder::new();
    decoder.push(&[1, 1, 0xff, 0xff, 0xff, 0xff]);
    let error = PeerError::FrameTooLarge {
        frame_type: FrameType::Envelope,
        len: u32::MAX,
    };
    assert_eq!(decoder.next_frame(), Some(Err(error)));
    assert_eq!(error.code(), ErrorCode::FrameTooLarge);
    for _ in 0..64 {
        decoder.push(&[0u8; 64 * 1024]);
        assert_eq!(decoder.next_frame(), None);
        assert_eq!(decoder.buffered(), 0);
    }
    assert_eq!(decoder.finish(), Err(PeerError::Truncated));

    for frame_type in FrameType::ALL {
        let max = frame_type.max_payload() as u32;
        let header = |len: u32| {
            let [a, b, c, d] = len.to_be_bytes();
            [1, frame_type.value(), a, b, c, d]
        };
        assert_eq!(
            Frame::decode(&header(max + 1)),
            Err(PeerError::FrameTooLarge {
                frame_type,
                len: max + 1
            })
        );
        assert_eq!(Frame::decode(&header(max)), Ok(None), "{frame_type}");
    }
}

// === payload faults ===

/// A frame of `frame_type` with `payload` as it is.
fn raw(frame_type: FrameType, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
    [&[1, frame_type.value()][..], &len, payload].concat()
}

fn str16(s: &[u8]) -> Vec<u8> {
    [&u16::try_from(s.len()).unwrap().to_be_bytes()[..], s].concat()
}

/// An envelope payload with the given fields, as they are.
fn envelope_payload(sender: &[u8], id: &[u8], len: u64, recipients: &[[&[u8]; 3]]) -> Vec<u8> {
    let mut p = [str16(sender), str16(id), len.to_be_bytes().to_vec()].concat();
    p.extend_from_slice(&u16::try_from(recipients.len()).unwrap().to_be_bytes());
    for [address, token, reverse] in recipients {
        p.extend([str16(address), str16(token), str16(reverse)].concat());
    }
    p
}

fn invalid(field: Field, problem: Problem) -> Result<Option<(Frame, usize)>, PeerError> {
    Err(PeerError::Invalid(Invalid::new(field, problem)))
}

#[test]
fn envelope_field_rules() {
    let ok: [&[u8]; 3] = [b"b@y", b"1-t", b""];
    let decode = |p: Vec<u8>| Frame::decode(&raw(FrameType::Envelope, &p));
    let long_address = vec![b'a'; MAX_ADDRESS_LEN + 1];
    let long_id = vec![b'i'; MAX_MESSAGE_ID_LEN + 1];
    let long_token = vec![b't'; MAX_TOKEN_LEN + 1];
    let cases: Vec<(Vec<u8>, Field, Problem)> = vec![
        (
            envelope_payload(b"", b"m", 1, &[ok]),
            Field::Sender,
            Problem::Empty,
        ),
        (
            envelope_payload(&long_address, b"m", 1, &[ok]),
            Field::Sender,
            Problem::TooLong,
        ),
        (
            envelope_payload(b"a\r\n@x", b"m", 1, &[ok]),
            Field::Sender,
            Problem::BadByte,
        ),
        (
            envelope_payload(b"\xff@x", b"m", 1, &[ok]),
            Field::Sender,
            Problem::NotUtf8,
        ),
        (
            envelope_payload(b"a@x", b"", 1, &[ok]),
            Field::MessageId,
            Problem::Empty,
        ),
        (
            envelope_payload(b"a@x", &long_id, 1, &[ok]),
            Field::MessageId,
            Problem::TooLong,
        ),
        (
            envelope_payload(b"a@x", b"<m@x>", 1, &[ok]),
            Field::MessageId,
            Problem::BadByte,
        ),
        (
            envelope_payload(b"a@x", b"m x", 1, &[ok]),
            Field::MessageId,
            Problem::BadByte,
        ),
        (
            envelope_payload(b"a@x", b"m", 0, &[ok]),
            Field::BodyLength,
            Problem::Empty,
        ),
        (
            envelope_payload(b"a@x", b"m", MAX_BODY_LEN + 1, &[ok]),
            Field::BodyLength,
            Problem::TooLong,
        ),
        (
            envelope_payload(b"a@x", b"m", 1, &[]),
            Field::Recipients,
            Problem::Empty,
        ),
        (
            envelope_payload(b"a@x", b"m", 1, &vec![ok; MAX_RECIPIENTS + 1]),
            Field::Recipients,
            Problem::TooMany,
        ),
        (
            envelope_payload(b"a@x", b"m", 1, &[[b"", b"1-t", b""]]),
            Field::RecipientAddress,
            Problem::Empty,
        ),
        (
            envelope_payload(b"a@x", b"m", 1, &[[b"b@y", b"", b""]]),
            Field::Token,
            Problem::Empty,
        ),
        (
            envelope_payload(b"a@x", b"m", 1, &[[b"b@y", &long_token, b""]]),
            Field::Token,
            Problem::TooLong,
        ),
        (
            envelope_payload(b"a@x", b"m", 1, &[[b"b@y", b"1-t=x", b""]]),
            Field::Token,
            Problem::BadByte,
        ),
        (
            envelope_payload(b"a@x", b"m", 1, &[[b"b@y", b"1-t", b"1 r"]]),
            Field::ReverseToken,
            Problem::BadByte,
        ),
        (
            [envelope_payload(b"a@x", b"m", 1, &[ok]), vec![0]].concat(),
            Field::Payload,
            Problem::Trailing,
        ),
        (
            envelope_payload(b"a@x", b"m", 1, &[ok])[..20].to_vec(),
            Field::RecipientAddress,
            Problem::Truncated,
        ),
        (
            envelope_payload(b"a@x", b"m", 1, &[ok])[..26].to_vec(),
            Field::Token,
            Problem::Truncated,
        ),
        (
            envelope_payload(b"a@x", b"m", 1, &[ok])[..29].to_vec(),
            Field::ReverseToken,
            Problem::Truncated,
        ),
        (
            envelope_payload(b"a@x", b"m", 1, &[ok])[..12].to_vec(),
            Field::BodyLength,
            Problem::Truncated,
        ),
        (vec![0, 5, b'a'], Field::Sender, Problem::Truncated),
        (Vec::new(), Field::Sender, Problem::Truncated),
    ];
    for (payload, field, problem) in cases {
        assert_eq!(
            decode(payload),
            invalid(field, problem),
            "{field} {problem}"
        );
    }
    // Exactly at the limits.
    let at_limits = envelope_payload(
        &[b'a'; MAX_ADDRESS_LEN],
        &[b'i'; MAX_MESSAGE_ID_LEN],
        MAX_BODY_LEN,
        &vec![
            [
                &[b'b'; MAX_ADDRESS_LEN][..],
                &[b't'; MAX_TOKEN_LEN],
                &[b'r'; MAX_TOKEN_LEN]
            ];
            MAX_RECIPIENTS
        ],
    );
    assert_eq!(at_limits.len(), MAX_ENVELOPE_LEN);
    let wire = raw(FrameType::Envelope, &at_limits);
    let (frame, n) = Frame::decode(&wire).unwrap().unwrap();
    assert_eq!(n, wire.len());
    assert_eq!(bytes(&frame), wire);
    // A UTF-8 (SMTPUTF8) address is fine.
    let utf8 = envelope_payload("jörg@bücher.example".as_bytes(), b"m", 1, &[ok]);
    assert!(decode(utf8).unwrap().is_some());
}

#[test]
fn peer_errors_name_the_code_to_send_back() {
    let too_many = envelope_payload(
        b"a@x",
        b"m",
        1,
        &vec![[&b"b"[..], b"t", b""]; MAX_RECIPIENTS + 1],
    );
    let error = Frame::decode(&raw(FrameType::Envelope, &too_many)).unwrap_err();
    assert_eq!(error.code(), ErrorCode::TooManyRecipients);
    let too_large = envelope_payload(b"a@x", b"m", MAX_BODY_LEN + 1, &[[b"b", b"t", b""]]);
    let error = Frame::decode(&raw(FrameType::Envelope, &too_large)).unwrap_err();
    assert_eq!(error.code(), ErrorCode::MessageTooLarge);
    assert_eq!(PeerError::EmptyData.code(), ErrorCode::Malformed);
    assert_eq!(PeerError::Truncated.code(), ErrorCode::Malformed);
    assert_eq!(
        PeerError::UnexpectedFrame {
            got: FrameType::Event
        }
        .code(),
        ErrorCode::UnexpectedFrame
    );
    assert_eq!(PeerError::BodyTooLong.code(), ErrorCode::BodyLengthMismatch);
    assert_eq!(
        PeerError::StoredBeforeEnd { recipient: 0 }.code(),
        ErrorCode::OutcomeMismatch
    );
    for code in ErrorCode::ALL {
        assert_eq!(ErrorCode::from_value(code.value()), Some(code));
        assert_eq!(code.is_violation(), code.code_blames_receiver());
    }
    assert_eq!(ErrorCode::from_value(0x0f), None);
}

impl ErrorCode {
    /// The documented split: codes 0x01–0x09 blame the receiver of the code.
    fn code_blames_receiver(self) -> bool {
        !matches!(
            self,
            ErrorCode::NoError
                | ErrorCode::SenderNotAuthorized
                | ErrorCode::Unavailable
                | ErrorCode::Timeout
                | ErrorCode::Cancelled
                | ErrorCode::Internal
        )
    }
}

#[test]
fn outcome_event_and_error_field_rules() {
    let outcome = |p: Vec<u8>| Frame::decode(&raw(FrameType::Outcome, &p));
    let refusal = |kind: u8, code: u16, subject: u16, detail: u16, reason: &[u8]| {
        [
            vec![0, 0, kind],
            code.to_be_bytes().to_vec(),
            subject.to_be_bytes().to_vec(),
            detail.to_be_bytes().to_vec(),
            str16(reason),
        ]
        .concat()
    };
    let long_reason = vec![b'r'; MAX_TEXT_LEN + 1];
    let cases: Vec<(Vec<u8>, Field, Problem)> = vec![
        (
            vec![0, 100, 1, 0, 1, b'r', 0, 0],
            Field::OutcomeRecipient,
            Problem::OutOfRange,
        ),
        (vec![0, 0, 4], Field::OutcomeKind, Problem::OutOfRange),
        (vec![0, 0], Field::OutcomeKind, Problem::Truncated),
        (vec![0, 0, 1, 0, 0, 0, 0], Field::Receipt, Problem::Empty),
        (
            [
                vec![0, 0, 1],
                str16(&[b'r'; MAX_RECEIPT_LEN + 1]),
                vec![0, 0],
            ]
            .concat(),
            Field::Receipt,
            Problem::TooLong,
        ),
        (
            vec![0, 0, 1, 0, 1, b' ', 0, 0],
            Field::Receipt,
            Problem::BadByte,
        ),
        (
            vec![0, 0, 1, 0, 1, b'r', 0, 1, b'='],
            Field::NewToken,
            Problem::BadByte,
        ),
        (
            vec![0, 0, 1, 0, 1, b'r'],
            Field::NewToken,
            Problem::Truncated,
        ),
        (
            refusal(2, 451, 3, 0, b""),
            Field::Status,
            Problem::OutOfRange,
        ),
        (
            refusal(3, 550, 7, 30, b""),
            Field::Status,
            Problem::OutOfRange,
        ),
        (
            refusal(2, 560, 7, 30, b""),
            Field::Status,
            Problem::OutOfRange,
        ),
        (
            refusal(2, 550, 1000, 1, b""),
            Field::Status,
            Problem::OutOfRange,
        ),
        (
            refusal(3, 451, 3, 1000, b""),
            Field::Status,
            Problem::OutOfRange,
        ),
        (vec![0, 0, 2, 2, 0x26, 0], Field::Status, Problem::Truncated),
        (
            refusal(2, 550, 7, 1, b"a\r\n250 ok"),
            Field::Reason,
            Problem::BadByte,
        ),
        (
            refusal(2, 550, 7, 1, &long_reason),
            Field::Reason,
            Problem::TooLong,
        ),
        (
            refusal(3, 451, 3, 0, b"\xc3"),
            Field::Reason,
            Problem::NotUtf8,
        ),
    ];
    for (payload, field, problem) in cases {
        assert_eq!(
            outcome(payload),
            invalid(field, problem),
            "{field} {problem}"
        );
    }
    assert!(outcome(refusal(2, 550, 7, 1, b"tab\tok"))
        .unwrap()
        .is_some());
    assert!(outcome(refusal(3, 421, 4, 0, "ü".as_bytes()))
        .unwrap()
        .is_some());

    let error = |p: Vec<u8>| Frame::decode(&raw(FrameType::Error, &p));
    assert_eq!(
        error(vec![0, 0, 0, 0]),
        invalid(Field::ErrorCode, Problem::OutOfRange)
    );
    assert_eq!(
        error(vec![0, 0x0f, 0, 0]),
        invalid(Field::ErrorCode, Problem::OutOfRange)
    );
    assert_eq!(
        error(vec![0, 1, 0, 1, 0]),
        invalid(Field::ErrorText, Problem::BadByte)
    );
    assert_eq!(
        error(vec![0, 1, 0, 0, 9]),
        invalid(Field::Payload, Problem::Trailing)
    );

    let event = |p: &[u8]| Frame::decode(&raw(FrameType::Event, p));
    assert_eq!(event(&[0]), invalid(Field::Payload, Problem::Truncated));
    let full = [&[0xff, 0xff][..], &[7; MAX_EVENT_PAYLOAD]].concat();
    assert!(matches!(event(&full), Ok(Some((Frame::Event(e), _))) if e.kind == 0xffff));
}

#[test]
fn the_encoder_refuses_what_the_decoder_refuses() {
    let err = |frame: Frame, field, problem| {
        let mut out = vec![9];
        assert_eq!(
            frame.encode(&mut out),
            Err(EncodeError(Invalid::new(field, problem)))
        );
        assert_eq!(out, [9], "nothing written on error");
    };
    err(
        Frame::Envelope(envelope(1, vec![])),
        Field::Recipients,
        Problem::Empty,
    );
    err(
        Frame::Envelope(envelope(0, vec![bob()])),
        Field::BodyLength,
        Problem::Empty,
    );
    let mut e = envelope(1, vec![bob()]);
    e.message_id = "<m@x>".into();
    err(Frame::Envelope(e), Field::MessageId, Problem::BadByte);
    err(
        Frame::Data(Bytes::new()),
        Field::DataPayload,
        Problem::Empty,
    );
    err(
        Frame::Data(Bytes::from(vec![0; MAX_DATA_LEN + 1])),
        Field::DataPayload,
        Problem::TooLong,
    );
    err(
        Frame::Outcome {
            recipient: 0,
            outcome: Outcome::TempFail {
                status: Status::TOKEN_NOT_ACCEPTED,
                reason: String::new(),
            },
        },
        Field::Status,
        Problem::OutOfRange,
    );
    err(
        Frame::Outcome {
            recipient: MAX_RECIPIENTS as u16,
            outcome: Outcome::Stored {
                receipt: "r".into(),
                new_token: None,
            },
        },
        Field::OutcomeRecipient,
        Problem::OutOfRange,
    );
    err(
        Frame::Error(ErrorFrame {
            code: ErrorCode::NoError,
            text: String::new(),
        }),
        Field::ErrorCode,
        Problem::OutOfRange,
    );
    err(
        Frame::Event(Event {
            kind: 1,
            payload: Bytes::from(vec![0; MAX_EVENT_PAYLOAD + 1]),
        }),
        Field::EventPayload,
        Problem::TooLong,
    );
    assert_eq!(TokenText::new("a b").unwrap_err(), Problem::BadByte);
    assert_eq!(TokenText::new("").unwrap_err(), Problem::Empty);
}

#[test]
fn limits_fit_their_reasons() {
    // An Event frame fits one datagram at QUIC's minimum MTU, less at most 44 bytes of
    // packet header, AEAD tag and DATAGRAM frame header.
    const { assert!(FRAME_HEADER_LEN + MAX_EVENT_LEN <= 1200 - 44) };
    assert_eq!(MAX_MESSAGE_ID_LEN, 984);
    const { assert!(MAX_BUFFERED < 256 * 1024) };
    assert_eq!(Status::TOKEN_NOT_ACCEPTED.to_string(), "550 5.7.30");
    assert_eq!(Status::LOCAL_ERROR.enhanced(), (4, 3, 0));
}

#[test]
fn tokens_are_redacted_in_debug_output() {
    let shown = format!("{:?}", token(TOKEN));
    assert!(shown.ends_with("-secret:<redacted>\")"), "{shown}");
    assert!(!shown.contains("2gOGPjhK"));
    assert_eq!(format!("{:?}", token("opaque")), "TokenText(<redacted>)");
    let frame = format!("{:?}", Frame::Envelope(envelope(1, vec![bob()])));
    assert!(!frame.contains("abc"), "{frame}");
}

#[test]
fn a_datagram_holds_exactly_one_event() {
    let event = Event {
        kind: Event::KIND_PRESENCE,
        payload: Bytes::from_static(b"online"),
    };
    let wire = bytes(&Frame::Event(event.clone()));
    assert_eq!(decode_datagram(&wire), Ok(event));
    assert_eq!(
        decode_datagram(&wire[..wire.len() - 1]),
        Err(PeerError::Truncated)
    );
    assert_eq!(
        decode_datagram(&[&wire[..], &wire].concat()),
        Err(PeerError::Invalid(Invalid::new(
            Field::Payload,
            Problem::Trailing
        )))
    );
    assert_eq!(
        decode_datagram(&bytes(&stored(0))),
        Err(PeerError::UnexpectedFrame {
            got: FrameType::Outcome
        })
    );
    assert_eq!(
        decode_datagram(&[3, 4, 0, 0, 0, 0]),
        Err(PeerError::UnsupportedVersion(3))
    );
}

// === the stream readers ===

fn delivery_events(chunks: &[&[u8]], fin: bool) -> Vec<Result<DeliveryEvent, PeerError>> {
    let mut reader = DeliveryReader::new();
    let mut events = Vec::new();
    for chunk in chunks {
        reader.push(chunk);
        while let Some(e) = reader.next_event() {
            events.push(e);
        }
    }
    if fin {
        reader.handle_fin();
        while let Some(e) = reader.next_event() {
            events.push(e);
        }
    }
    events
}

fn delivery_wire(body_len: u64, body: &[u8]) -> Vec<u8> {
    let mut wire = bytes(&Frame::Envelope(envelope(body_len, vec![bob()])));
    encode_data(body, &mut wire);
    wire
}

#[test]
fn a_delivery_counts_only_when_body_length_frames_and_fin_agree() {
    let wire = delivery_wire(5, b"hello");
    let events = delivery_events(&[&wire], true);
    assert_eq!(events.len(), 3);
    assert!(matches!(events[0], Ok(DeliveryEvent::Envelope(_))));
    assert_eq!(
        events[1],
        Ok(DeliveryEvent::Body(Bytes::from_static(b"hello")))
    );
    assert_eq!(events[2], Ok(DeliveryEvent::Complete));

    // Without the FIN: never complete.
    assert_eq!(delivery_events(&[&wire], false).len(), 2);
    // FIN before the announced end.
    let short = delivery_wire(6, b"hello");
    assert_eq!(
        delivery_events(&[&short], true).last(),
        Some(&Err(PeerError::BodyTruncated { missing: 1 }))
    );
    // FIN inside a Data frame.
    let cut = &wire[..wire.len() - 1];
    assert_eq!(
        delivery_events(&[cut], true).last(),
        Some(&Err(PeerError::Truncated))
    );
    // FIN before anything, or inside the envelope.
    assert_eq!(
        delivery_events(&[], true),
        vec![Err(PeerError::MissingEnvelope)]
    );
    assert_eq!(
        delivery_events(&[&wire[..10]], true),
        vec![Err(PeerError::Truncated)]
    );
}

#[test]
fn a_byte_beyond_the_announced_length_is_never_handed_out() {
    // One frame longer than the body: refused at its first piece.
    let long = delivery_wire(4, b"hello");
    let events = delivery_events(&[&long[..long.len() - 4]], false);
    assert_eq!(events.len(), 2);
    assert_eq!(events[1], Err(PeerError::BodyTooLong));
    // A further Data frame after a complete body.
    let mut extra = delivery_wire(5, b"hello");
    encode_data(b"!", &mut extra);
    let events = delivery_events(&[&extra], true);
    assert_eq!(events.last(), Some(&Err(PeerError::BodyTooLong)));
    assert_eq!(events.len(), 3);
    // Any other frame after the body, or Data before the envelope.
    let mut other = delivery_wire(5, b"hello");
    other.extend(bytes(&Frame::Envelope(envelope(1, vec![bob()]))));
    assert_eq!(
        delivery_events(&[&other], true).last(),
        Some(&Err(PeerError::UnexpectedFrame {
            got: FrameType::Envelope
        }))
    );
    let mut data_first = Vec::new();
    encode_data(b"x", &mut data_first);
    assert_eq!(
        delivery_events(&[&data_first], true),
        vec![Err(PeerError::UnexpectedFrame {
            got: FrameType::Data
        })]
    );
}

#[test]
fn the_sender_may_abandon_a_delivery() {
    let mut wire = delivery_wire(10, b"hello");
    let abandon = ErrorFrame {
        code: ErrorCode::Cancelled,
        text: "client went away".into(),
    };
    wire.extend(bytes(&Frame::Error(abandon.clone())));
    wire.extend(b"ignored after the error");
    let events = delivery_events(&[&wire], true);
    assert_eq!(events.last(), Some(&Ok(DeliveryEvent::Abandoned(abandon))));
    assert_eq!(events.len(), 3);
}

#[test]
fn a_delivery_reads_alike_however_it_is_split() {
    let mut wire = bytes(&Frame::Envelope(envelope(70_000, vec![bob()])));
    let body: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
    encode_data(&body, &mut wire);
    let merged = |events: Vec<Result<DeliveryEvent, PeerError>>| {
        let mut body = Vec::new();
        let mut rest = Vec::new();
        for e in events {
            match e {
                Ok(DeliveryEvent::Body(b)) => body.extend_from_slice(&b),
                other => rest.push(other),
            }
        }
        (body, rest)
    };
    let whole = merged(delivery_events(&[&wire], true));
    assert_eq!(whole.0, body);
    assert_eq!(whole.1.last(), Some(&Ok(DeliveryEvent::Complete)));
    for size in [1, 7, 4096, 65_542] {
        let chunks: Vec<&[u8]> = wire.chunks(size).collect();
        assert_eq!(
            merged(delivery_events(&chunks, true)),
            whole,
            "chunks of {size}"
        );
    }
}

fn outcome_events(
    wire: &[u8],
    recipients: u16,
    body_sent: bool,
    fin: bool,
) -> Vec<Result<OutcomeEvent, PeerError>> {
    let mut reader = OutcomeReader::new(recipients);
    if body_sent {
        reader.handle_body_sent();
    }
    reader.push(wire);
    if fin {
        reader.handle_fin();
    }
    std::iter::from_fn(|| reader.next_event()).collect()
}

fn stored(recipient: u16) -> Frame {
    Frame::Outcome {
        recipient,
        outcome: Outcome::Stored {
            receipt: format!("uid{recipient}"),
            new_token: None,
        },
    }
}

fn rejected(recipient: u16) -> Frame {
    Frame::Outcome {
        recipient,
        outcome: Outcome::Rejected {
            status: Status::UNKNOWN_RECIPIENT,
            reason: "no such user".into(),
        },
    }
}

#[test]
fn outcomes_come_in_envelope_order_one_per_recipient() {
    let wire = [bytes(&stored(0)), bytes(&rejected(1))].concat();
    let events = outcome_events(&wire, 2, true, true);
    assert_eq!(events.len(), 3);
    assert_eq!(events[2], Ok(OutcomeEvent::Complete));

    assert_eq!(
        outcome_events(&wire, 3, true, true).last(),
        Some(&Err(PeerError::MissingOutcomes { missing: 1 }))
    );
    assert_eq!(
        outcome_events(&wire, 1, true, true).last(),
        Some(&Err(PeerError::ExtraOutcome { got: 1 }))
    );
    let swapped = [bytes(&rejected(1)), bytes(&stored(0))].concat();
    assert_eq!(
        outcome_events(&swapped, 2, true, true),
        vec![Err(PeerError::OutcomeOutOfOrder {
            expected: 0,
            got: 1
        })]
    );
    // Without the FIN the outcomes are still final; only Complete waits for it.
    assert_eq!(outcome_events(&wire, 2, true, false).len(), 2);
}

#[test]
fn stored_before_the_body_was_sent_is_a_lie() {
    let early_reject = bytes(&rejected(0));
    assert!(outcome_events(&early_reject, 2, false, false)[0].is_ok());
    let early_store = bytes(&stored(0));
    assert_eq!(
        outcome_events(&early_store, 1, false, false),
        vec![Err(PeerError::StoredBeforeEnd { recipient: 0 })]
    );
}

#[test]
fn a_refusal_ends_the_outcomes() {
    let refusal = ErrorFrame {
        code: ErrorCode::SenderNotAuthorized,
        text: "a.example not in certificate".into(),
    };
    let wire = [bytes(&stored(0)), bytes(&Frame::Error(refusal.clone()))].concat();
    let events = outcome_events(&wire, 3, true, true);
    assert_eq!(events.last(), Some(&Ok(OutcomeEvent::Refused(refusal))));
    assert_eq!(events.len(), 2);
    let event = bytes(&Frame::Event(Event {
        kind: 1,
        payload: Bytes::new(),
    }));
    assert_eq!(
        outcome_events(&event, 1, true, true),
        vec![Err(PeerError::UnexpectedFrame {
            got: FrameType::Event
        })]
    );
}

#[test]
fn fuzz_body_holds_on_hand_made_streams() {
    let full = [
        sample_stream(),
        bytes(&stored(0)),
        vec![2, 9, 0, 0, 0, 1, 0],
        bytes(&Frame::Error(ErrorFrame {
            code: ErrorCode::Timeout,
            text: "slow".into(),
        })),
    ]
    .concat();
    for flags in [0x00, 0x93, 0xf1, 0x2f] {
        let input = [&[flags, 3, 0, 200][..], &full].concat();
        fuzz::fuzz_peer_frames(&input);
        for cut in (0..input.len()).step_by(7) {
            fuzz::fuzz_peer_frames(&input[..cut]);
        }
    }
    let delivery = [&[0x80][..], &delivery_wire(5, b"hello"), &bytes(&stored(0))].concat();
    fuzz::fuzz_peer_frames(&delivery);
}

// === proptest round trips ===

mod round_trip {
    use proptest::prelude::*;

    use super::super::*;
    use bytes::Bytes;

    fn address() -> impl Strategy<Value = String> {
        "[a-z0-9.+_-]{1,20}@[a-z0-9-]{1,20}\\.(example|xn--bcher-kva)|[é ü\"]{1,5}@x"
    }

    fn token() -> impl Strategy<Value = TokenText> {
        "[!-<>-~]{1,200}".prop_map(|s| TokenText::new(s).expect("esmtp-value characters"))
    }

    fn text() -> impl Strategy<Value = String> {
        "[ -~\t\u{e9}\u{4e2d}]{0,100}"
    }

    fn status(class: u16) -> impl Strategy<Value = Status> {
        (0u16..6, 0u16..10, 0u16..1000, 0u16..1000)
            .prop_map(move |(b, c, s, d)| Status::new(class * 100 + b * 10 + c, s, d))
    }

    fn outcome() -> impl Strategy<Value = Outcome> {
        prop_oneof![
            ("[!-~]{1,128}", proptest::option::of(token()))
                .prop_map(|(receipt, new_token)| Outcome::Stored { receipt, new_token }),
            (status(5), text()).prop_map(|(status, reason)| Outcome::Rejected { status, reason }),
            (status(4), text()).prop_map(|(status, reason)| Outcome::TempFail { status, reason }),
        ]
    }

    fn frame() -> impl Strategy<Value = Frame> {
        let recipient = (address(), token(), proptest::option::of(token())).prop_map(
            |(address, token, reverse_token)| Recipient {
                address,
                token,
                reverse_token,
            },
        );
        let envelope = (
            address(),
            "[!-;=?-~]{1,60}",
            1..=MAX_BODY_LEN,
            proptest::collection::vec(recipient, 1..8),
        )
            .prop_map(|(sender, message_id, body_len, recipients)| {
                Frame::Envelope(Envelope {
                    sender,
                    message_id,
                    body_len,
                    recipients,
                })
            });
        prop_oneof![
            envelope,
            proptest::collection::vec(any::<u8>(), 1..300)
                .prop_map(|b| Frame::Data(Bytes::from(b))),
            (0..MAX_RECIPIENTS as u16, outcome())
                .prop_map(|(recipient, outcome)| Frame::Outcome { recipient, outcome }),
            (any::<u16>(), proptest::collection::vec(any::<u8>(), 0..64)).prop_map(
                |(kind, payload)| Frame::Event(Event {
                    kind,
                    payload: Bytes::from(payload)
                })
            ),
            (1..ErrorCode::ALL.len(), text()).prop_map(|(i, text)| Frame::Error(ErrorFrame {
                code: ErrorCode::ALL[i],
                text
            })),
        ]
    }

    proptest! {
        /// Every valid frame encodes, decodes back to itself whole and in any split, and
        /// its encoding is the only one.
        #[test]
        fn frames_round_trip(frames in proptest::collection::vec(frame(), 1..6), cut in 0usize..2000) {
            let mut wire = Vec::new();
            for frame in &frames {
                frame.encode(&mut wire).expect("a valid frame");
            }
            let (decoded, between) = super::decode_all(&[&wire]);
            prop_assert!(between);
            let expected: Vec<Result<Frame, PeerError>> = frames.iter().cloned().map(Ok).collect();
            prop_assert_eq!(&decoded, &expected);
            let cut = cut.min(wire.len());
            let (a, b) = wire.split_at(cut);
            prop_assert_eq!(super::decode_all(&[a, b]), (expected, true));
            let mut at = 0;
            for frame in &frames {
                let (again, n) = Frame::decode(&wire[at..]).unwrap().unwrap();
                prop_assert_eq!(&again, frame);
                prop_assert_eq!(again.to_bytes().unwrap(), wire[at..at + n].to_vec());
                at += n;
            }
        }

        /// A poor man's fuzzer on stable: the fuzz body on random bytes, and on random
        /// bytes behind a valid envelope.
        #[test]
        fn fuzz_body_holds_on_random_inputs(
            data in proptest::collection::vec(any::<u8>(), 0..300),
            flags in any::<u8>(),
        ) {
            super::fuzz::fuzz_peer_frames(&data);
            let envelope = super::bytes(&Frame::Envelope(super::envelope(9, vec![super::bob()])));
            let input = [&[flags & 0xf0][..], &envelope, &data].concat();
            super::fuzz::fuzz_peer_frames(&input);
        }
    }
}
