use super::*;

fn mbox(local: &str, domain: &str) -> Path {
    Path::Mailbox(Mailbox {
        local_part: local.into(),
        domain: Domain::Name(domain.into()),
    })
}

fn literal(local: &str, literal: &str) -> Path {
    Path::Mailbox(Mailbox {
        local_part: local.into(),
        domain: Domain::Literal(literal.into()),
    })
}

fn mail(from: Path) -> Command {
    Command::Mail {
        from,
        params: MailParameters::default(),
    }
}

fn rcpt(to: Path) -> Command {
    Command::Rcpt {
        to,
        params: RcptParameters::default(),
    }
}

fn param(keyword: &str, value: Option<&str>) -> EsmtpParam {
    EsmtpParam {
        keyword: keyword.into(),
        value: value.map(Into::into),
    }
}

/// Valid commands: input, parsed value, canonical encoding (without CRLF).
fn valid() -> Vec<(&'static str, Command, &'static str)> {
    vec![
        (
            "EHLO client.example.org",
            Command::Ehlo("client.example.org".into()),
            "EHLO client.example.org",
        ),
        (
            "ehlo [192.0.2.1]",
            Command::Ehlo("[192.0.2.1]".into()),
            "EHLO [192.0.2.1]",
        ),
        ("EHLO my_pc", Command::Ehlo("my_pc".into()), "EHLO my_pc"),
        (
            "lhlo mx.example",
            Command::Lhlo("mx.example".into()),
            "LHLO mx.example",
        ),
        ("EHLO  x  ", Command::Ehlo("x".into()), "EHLO x"),
        ("HELO x", Command::Helo("x".into()), "HELO x"),
        (
            "MAIL FROM:<a@b.example>",
            mail(mbox("a", "b.example")),
            "MAIL FROM:<a@b.example>",
        ),
        ("mail from:<a@b>", mail(mbox("a", "b")), "MAIL FROM:<a@b>"),
        ("MAIL FROM: <a@b>", mail(mbox("a", "b")), "MAIL FROM:<a@b>"),
        ("MAIL FROM:<>", mail(Path::Null), "MAIL FROM:<>"),
        (
            "MAIL FROM:<@relay.example,@r2.example:a@b>",
            mail(mbox("a", "b")),
            "MAIL FROM:<a@b>",
        ),
        (
            "MAIL FROM:<first.last+tag@sub.b-c.example>",
            mail(mbox("first.last+tag", "sub.b-c.example")),
            "MAIL FROM:<first.last+tag@sub.b-c.example>",
        ),
        (
            "MAIL FROM:<\"john doe\"@b>",
            mail(mbox("john doe", "b")),
            "MAIL FROM:<\"john doe\"@b>",
        ),
        (
            "MAIL FROM:<\"a\\\"b\\\\c\"@b>",
            mail(mbox("a\"b\\c", "b")),
            "MAIL FROM:<\"a\\\"b\\\\c\"@b>",
        ),
        // Least quoting (RFC 5321 §4.1.2): a quoted Dot-string is written bare.
        (
            "MAIL FROM:<\"abc\"@b>",
            mail(mbox("abc", "b")),
            "MAIL FROM:<abc@b>",
        ),
        (
            "MAIL FROM:<\"\"@b>",
            mail(mbox("", "b")),
            "MAIL FROM:<\"\"@b>",
        ),
        (
            "MAIL FROM:<\"a..b\"@b>",
            mail(mbox("a..b", "b")),
            "MAIL FROM:<\"a..b\"@b>",
        ),
        (
            "MAIL FROM:<a@[192.0.2.1]>",
            mail(literal("a", "192.0.2.1")),
            "MAIL FROM:<a@[192.0.2.1]>",
        ),
        (
            "MAIL FROM:<a@[IPv6:2001:db8::1]>",
            mail(literal("a", "IPv6:2001:db8::1")),
            "MAIL FROM:<a@[IPv6:2001:db8::1]>",
        ),
        (
            "MAIL FROM:<a@[IPv6:::ffff:192.0.2.1]>",
            mail(literal("a", "IPv6:::ffff:192.0.2.1")),
            "MAIL FROM:<a@[IPv6:::ffff:192.0.2.1]>",
        ),
        (
            "MAIL FROM:<a@[x-tag:content]>",
            mail(literal("a", "x-tag:content")),
            "MAIL FROM:<a@[x-tag:content]>",
        ),
        (
            "MAIL FROM:<用户@例子.广告> SMTPUTF8",
            Command::Mail {
                from: mbox("用户", "例子.广告"),
                params: MailParameters {
                    smtputf8: true,
                    ..MailParameters::default()
                },
            },
            "MAIL FROM:<用户@例子.广告> SMTPUTF8",
        ),
        (
            "MAIL FROM:<a@b> SIZE=1000 BODY=8BITMIME",
            Command::Mail {
                from: mbox("a", "b"),
                params: MailParameters {
                    size: Some(1000),
                    body: Some(Body::EightBitMime),
                    ..MailParameters::default()
                },
            },
            "MAIL FROM:<a@b> SIZE=1000 BODY=8BITMIME",
        ),
        (
            "MAIL FROM:<a@b>  body=binarymime   size=0  ",
            Command::Mail {
                from: mbox("a", "b"),
                params: MailParameters {
                    size: Some(0),
                    body: Some(Body::BinaryMime),
                    ..MailParameters::default()
                },
            },
            "MAIL FROM:<a@b> SIZE=0 BODY=BINARYMIME",
        ),
        (
            "MAIL FROM:<a@b> BODY=7BIT RET=HDRS ENVID=QQ314159+2Bx AUTH=<>",
            Command::Mail {
                from: mbox("a", "b"),
                params: MailParameters {
                    body: Some(Body::SevenBit),
                    ret: Some(Ret::Hdrs),
                    envid: Some("QQ314159+x".into()),
                    auth: Some("<>".into()),
                    ..MailParameters::default()
                },
            },
            "MAIL FROM:<a@b> BODY=7BIT RET=HDRS ENVID=QQ314159+2Bx AUTH=<>",
        ),
        (
            "MAIL FROM:<a@b> AUTH=e+3Dmc2@example.com RET=full",
            Command::Mail {
                from: mbox("a", "b"),
                params: MailParameters {
                    ret: Some(Ret::Full),
                    auth: Some("e=mc2@example.com".into()),
                    ..MailParameters::default()
                },
            },
            "MAIL FROM:<a@b> RET=FULL AUTH=e+3Dmc2@example.com",
        ),
        (
            "MAIL FROM:<a@b> REQUIRETLS MT-PRIORITY=3",
            Command::Mail {
                from: mbox("a", "b"),
                params: MailParameters {
                    other: vec![param("REQUIRETLS", None), param("MT-PRIORITY", Some("3"))],
                    ..MailParameters::default()
                },
            },
            "MAIL FROM:<a@b> REQUIRETLS MT-PRIORITY=3",
        ),
        ("RCPT TO:<c@d>", rcpt(mbox("c", "d")), "RCPT TO:<c@d>"),
        (
            "RCPT TO:<postmaster>",
            rcpt(Path::Postmaster),
            "RCPT TO:<Postmaster>",
        ),
        (
            "RCPT TO:<Postmaster@d>",
            rcpt(mbox("Postmaster", "d")),
            "RCPT TO:<Postmaster@d>",
        ),
        (
            "RCPT TO:<c@d> NOTIFY=SUCCESS,delay ORCPT=rfc822;c+2Bx@d",
            Command::Rcpt {
                to: mbox("c", "d"),
                params: RcptParameters {
                    notify: Some(Notify::On {
                        success: true,
                        failure: false,
                        delay: true,
                    }),
                    orcpt: Some(Orcpt {
                        addr_type: "rfc822".into(),
                        address: "c+x@d".into(),
                    }),
                    other: vec![],
                },
            },
            "RCPT TO:<c@d> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;c+2Bx@d",
        ),
        (
            "RCPT TO:<c@d> NOTIFY=NEVER",
            Command::Rcpt {
                to: mbox("c", "d"),
                params: RcptParameters {
                    notify: Some(Notify::Never),
                    ..RcptParameters::default()
                },
            },
            "RCPT TO:<c@d> NOTIFY=NEVER",
        ),
        ("DATA", Command::Data, "DATA"),
        ("data  ", Command::Data, "DATA"),
        (
            "BDAT 0 LAST",
            Command::Bdat {
                size: 0,
                last: true,
            },
            "BDAT 0 LAST",
        ),
        (
            "BDAT 4294967296",
            Command::Bdat {
                size: 4_294_967_296,
                last: false,
            },
            "BDAT 4294967296",
        ),
        (
            "bdat 007 last",
            Command::Bdat {
                size: 7,
                last: true,
            },
            "BDAT 7 LAST",
        ),
        (
            "BDAT 18446744073709551615",
            Command::Bdat {
                size: u64::MAX,
                last: false,
            },
            "BDAT 18446744073709551615",
        ),
        ("RSET", Command::Rset, "RSET"),
        ("NOOP", Command::Noop, "NOOP"),
        ("NOOP anything at all", Command::Noop, "NOOP"),
        ("QUIT", Command::Quit, "QUIT"),
        (
            "VRFY user@example.org",
            Command::Vrfy("user@example.org".into()),
            "VRFY user@example.org",
        ),
        (
            "EXPN staff list",
            Command::Expn("staff list".into()),
            "EXPN staff list",
        ),
        ("HELP", Command::Help(None), "HELP"),
        ("HELP MAIL", Command::Help(Some("MAIL".into())), "HELP MAIL"),
        ("STARTTLS", Command::Starttls, "STARTTLS"),
        (
            "AUTH PLAIN",
            Command::Auth {
                mechanism: "PLAIN".into(),
                initial_response: None,
            },
            "AUTH PLAIN",
        ),
        (
            "auth plain AGFsaWNlAHNlY3JldA==",
            Command::Auth {
                mechanism: "PLAIN".into(),
                initial_response: Some(SaslResponse("AGFsaWNlAHNlY3JldA==".into())),
            },
            "AUTH PLAIN AGFsaWNlAHNlY3JldA==",
        ),
        (
            "AUTH EXTERNAL =",
            Command::Auth {
                mechanism: "EXTERNAL".into(),
                initial_response: Some(SaslResponse("=".into())),
            },
            "AUTH EXTERNAL =",
        ),
        (
            "AUTH SCRAM-SHA-256",
            Command::Auth {
                mechanism: "SCRAM-SHA-256".into(),
                initial_response: None,
            },
            "AUTH SCRAM-SHA-256",
        ),
        (
            "XCLIENT NAME=spike.porcupine.org ADDR=168.100.189.2",
            Command::Xclient(vec![
                ("NAME".into(), "spike.porcupine.org".into()),
                ("ADDR".into(), "168.100.189.2".into()),
            ]),
            "XCLIENT NAME=spike.porcupine.org ADDR=168.100.189.2",
        ),
        (
            "XCLIENT login=a+20b ADDR=IPV6:2001:db8::1",
            Command::Xclient(vec![
                ("LOGIN".into(), "a b".into()),
                ("ADDR".into(), "IPV6:2001:db8::1".into()),
            ]),
            "XCLIENT LOGIN=a+20b ADDR=IPV6:2001:db8::1",
        ),
        (
            "XCLIENT NAME=[UNAVAILABLE]",
            Command::Xclient(vec![("NAME".into(), "[UNAVAILABLE]".into())]),
            "XCLIENT NAME=[UNAVAILABLE]",
        ),
        ("ETRN example.org", Command::Unknown("ETRN".into()), "ETRN"),
        ("GET / HTTP/1.1", Command::Unknown("GET".into()), "GET"),
    ]
}

/// Invalid commands and the expected error.
fn invalid() -> Vec<(&'static [u8], CommandError)> {
    let syntax = |verb: &str| Verb::from_word(verb.as_bytes()).syntax();
    let bad = |verb| CommandError::Syntax {
        syntax: syntax(verb),
    };
    let ctl = |verb| CommandError::ControlCharacter {
        syntax: syntax(verb),
    };
    let dup = |verb| CommandError::DuplicateParameter {
        syntax: syntax(verb),
    };
    vec![
        (b"", CommandError::BadVerb),
        (b" MAIL FROM:<a@b>", CommandError::BadVerb),
        // SECURITY-CASES case 5: NUL in a command.
        (b"MAIL FROM:<a\0b@x>", ctl("MAIL")),
        (b"MAIL FROM:<a@b>\r", ctl("MAIL")),
        (b"RCPT TO:<a@b>\nDATA", ctl("RCPT")),
        (b"EHLO\tx", ctl("EHLO")),
        (b"XYZZY \x01", ctl("XYZZY")),
        (
            b"MAIL FROM:<\xff@b>",
            CommandError::InvalidUtf8 {
                syntax: syntax("MAIL"),
            },
        ),
        (b"EHLO", bad("EHLO")),
        (b"EHLO a b", bad("EHLO")),
        (b"HELO ", bad("HELO")),
        (b"MAIL", bad("MAIL")),
        (b"MAIL FROM:", bad("MAIL")),
        (b"MAIL FROM:a@b", bad("MAIL")),
        (b"MAIL FROM:<a@b", bad("MAIL")),
        (b"MAIL FROM:<a>", bad("MAIL")),
        (b"MAIL FROM:<@b>", bad("MAIL")),
        (b"MAIL FROM:<a@>", bad("MAIL")),
        (b"MAIL FROM:<a.@b>", bad("MAIL")),
        (b"MAIL FROM:<.a@b>", bad("MAIL")),
        (b"MAIL FROM:<a..b@b>", bad("MAIL")),
        (b"MAIL FROM:<a@b..c>", bad("MAIL")),
        (b"MAIL FROM:<a@b.>", bad("MAIL")),
        (b"MAIL FROM:<a@-b>", bad("MAIL")),
        (b"MAIL FROM:<a@b_c>", bad("MAIL")),
        (b"MAIL FROM:<a b@c>", bad("MAIL")),
        (b"MAIL FROM:<\"a@b>", bad("MAIL")),
        (b"MAIL FROM:<a@[300.1.1.1]>", bad("MAIL")),
        (b"MAIL FROM:<a@[1.2.3]>", bad("MAIL")),
        (b"MAIL FROM:<a@[IPv6:1::2::3]>", bad("MAIL")),
        (b"MAIL FROM:<a@[IPv6:1:2:3:4:5:6:7::]>", bad("MAIL")),
        (b"MAIL FROM:<a@[IPv6:g::1]>", bad("MAIL")),
        (b"MAIL FROM:<a@[IPv6:1:2:3:4:5:6:7]>", bad("MAIL")),
        (b"MAIL FROM:<a@[]>", bad("MAIL")),
        (b"MAIL FROM:<a@b>x", bad("MAIL")),
        (b"MAIL FROM:<a@b> SIZE", bad("MAIL")),
        (b"MAIL FROM:<a@b> SIZE=x", bad("MAIL")),
        (b"MAIL FROM:<a@b> SIZE=123456789012345678901", bad("MAIL")),
        (
            b"MAIL FROM:<a@b> SIZE=99999999999999999999",
            CommandError::NumberTooLarge {
                syntax: syntax("MAIL"),
            },
        ),
        (b"MAIL FROM:<a@b> SIZE=1 SIZE=2", dup("MAIL")),
        (b"MAIL FROM:<a@b> BODY=9BIT", bad("MAIL")),
        (b"MAIL FROM:<a@b> SMTPUTF8=yes", bad("MAIL")),
        (b"MAIL FROM:<a@b> SMTPUTF8 SMTPUTF8", dup("MAIL")),
        (b"MAIL FROM:<a@b> RET=ALL", bad("MAIL")),
        (b"MAIL FROM:<a@b> ENVID=a+4", bad("MAIL")),
        (b"MAIL FROM:<a@b> ENVID=a+0Db", bad("MAIL")),
        (b"MAIL FROM:<a@b> AUTH=a+00b", bad("MAIL")),
        (b"MAIL FROM:<a@b> -X=1", bad("MAIL")),
        (b"MAIL FROM:<a@b> X==1", bad("MAIL")),
        (b"MAIL FROM:<Postmaster>", bad("MAIL")),
        (b"RCPT TO:<>", bad("RCPT")),
        (b"RCPT TO:", bad("RCPT")),
        (b"RCPT FROM:<a@b>", bad("RCPT")),
        (b"RCPT TO:<c@d> NOTIFY=NEVER,SUCCESS", bad("RCPT")),
        (b"RCPT TO:<c@d> NOTIFY=DELAY,DELAY", bad("RCPT")),
        (b"RCPT TO:<c@d> NOTIFY=", bad("RCPT")),
        (b"RCPT TO:<c@d> ORCPT=c@d", bad("RCPT")),
        (b"RCPT TO:<c@d> ORCPT=rfc822;a ORCPT=rfc822;b", dup("RCPT")),
        (b"DATA x", bad("DATA")),
        (b"QUIT now", bad("QUIT")),
        (b"RSET x", bad("RSET")),
        (b"STARTTLS x", bad("STARTTLS")),
        (b"BDAT", bad("BDAT")),
        (b"BDAT x", bad("BDAT")),
        (b"BDAT -1", bad("BDAT")),
        (b"BDAT 5 FIRST", bad("BDAT")),
        (
            b"BDAT 18446744073709551616",
            CommandError::NumberTooLarge {
                syntax: syntax("BDAT"),
            },
        ),
        (b"VRFY", bad("VRFY")),
        (b"VRFY   ", bad("VRFY")),
        (b"AUTH", bad("AUTH")),
        (b"AUTH PL@IN", bad("AUTH")),
        (b"AUTH ABCDEFGHIJKLMNOPQRSTU", bad("AUTH")),
        (b"AUTH PLAIN abc", bad("AUTH")),
        (b"AUTH PLAIN ab=c", bad("AUTH")),
        (b"AUTH PLAIN ====", bad("AUTH")),
        (b"AUTH PLAIN AAAA BBBB", bad("AUTH")),
        (b"XCLIENT", bad("XCLIENT")),
        (b"XCLIENT NAME", bad("XCLIENT")),
        (b"XCLIENT NAME=a+0A", bad("XCLIENT")),
        (b"XCLIENT NAME=a+0", bad("XCLIENT")),
    ]
}

#[test]
fn valid_commands_parse_and_encode_canonically() {
    for (input, expected, canonical) in valid() {
        let parsed =
            command(input.as_bytes()).unwrap_or_else(|e| panic!("{input:?} should parse: {e}"));
        assert_eq!(parsed, expected, "{input:?}");
        let wire = parsed.to_bytes().expect("encodes");
        assert_eq!(
            String::from_utf8_lossy(&wire),
            format!("{canonical}\r\n"),
            "{input:?}"
        );
        // Known-answer inverse: the canonical form parses to the same value.
        assert_eq!(command(canonical.as_bytes()), Ok(expected), "{canonical:?}");
    }
}

#[test]
fn invalid_commands_are_refused_with_the_syntax() {
    for (input, expected) in invalid() {
        assert_eq!(
            command(input),
            Err(expected),
            "{:?}",
            input.escape_ascii().to_string()
        );
    }
}

#[test]
fn errors_map_to_replies_naming_the_syntax() {
    let error = command(b"MAIL FROM:<a\0b@x>").unwrap_err();
    assert_eq!(
        error.reply().to_bytes(),
        b"501 5.5.4 Syntax: MAIL FROM:<address> [parameters]\r\n"
    );
    assert_eq!(
        CommandError::BadVerb.reply().to_bytes(),
        b"500 5.5.2 Error: bad syntax\r\n"
    );
    assert_eq!(error.syntax(), Some("MAIL FROM:<address> [parameters]"));
}

#[test]
fn paths_report_ascii() {
    let Ok(Command::Mail { from, .. }) = command("MAIL FROM:<jörg@b>".as_bytes()) else {
        panic!("parses");
    };
    assert!(!from.is_ascii());
    assert!(Path::Null.is_ascii());
    assert_eq!(
        from.mailbox().map(ToString::to_string).as_deref(),
        Some("jörg@b")
    );
    let quoted = Mailbox {
        local_part: "a b".into(),
        domain: Domain::Literal("192.0.2.1".into()),
    };
    assert_eq!(quoted.to_string(), "\"a b\"@[192.0.2.1]");
}

#[test]
fn long_labels_and_domains_are_refused() {
    let label = "a".repeat(MAX_LABEL);
    assert!(command(format!("MAIL FROM:<x@{label}.org>").as_bytes()).is_ok());
    let label = "a".repeat(MAX_LABEL + 1);
    assert!(command(format!("MAIL FROM:<x@{label}.org>").as_bytes()).is_err());
    let domain = vec!["abc"; 64].join(".");
    assert!(domain.len() <= MAX_DOMAIN);
    assert!(command(format!("MAIL FROM:<x@{domain}>").as_bytes()).is_ok());
    let domain = vec!["abc"; 65].join(".");
    assert!(command(format!("MAIL FROM:<x@{domain}>").as_bytes()).is_err());
}

#[test]
fn envid_is_limited_to_100_characters() {
    let envid = "x".repeat(MAX_ENVID);
    assert!(command(format!("MAIL FROM:<a@b> ENVID={envid}").as_bytes()).is_ok());
    let envid = "x".repeat(MAX_ENVID + 1);
    assert!(command(format!("MAIL FROM:<a@b> ENVID={envid}").as_bytes()).is_err());
}

#[test]
fn sasl_lines() {
    assert_eq!(sasl_line(b"*"), Ok(SaslLine::Cancel));
    assert_eq!(
        sasl_line(b""),
        Ok(SaslLine::Response(SaslResponse("=".into())))
    );
    assert_eq!(
        sasl_line(b"dXNlcg=="),
        Ok(SaslLine::Response(SaslResponse("dXNlcg==".into())))
    );
    assert!(matches!(
        sasl_line(b"not base64"),
        Err(CommandError::Syntax { .. })
    ));
    assert!(matches!(
        sasl_line(b"dXNl\0cg=="),
        Err(CommandError::ControlCharacter { .. })
    ));
}

#[test]
fn credentials_do_not_show_in_debug() {
    let parsed = command(b"AUTH PLAIN AGFsaWNlAHNlY3JldA==").expect("parses");
    let shown = format!("{parsed:?}");
    assert!(!shown.contains("AGFsaWNl"), "{shown}");
    assert!(shown.contains("<redacted>"));
}

#[test]
fn built_commands_that_cannot_be_written_are_refused() {
    let cases = [
        Command::Ehlo("a b".into()),
        Command::Ehlo("a\r\nRSET".into()),
        Command::Vrfy("x\r\nDATA".into()),
        Command::Mail {
            from: mbox("a\r\nb", "c"),
            params: MailParameters::default(),
        },
        Command::Mail {
            from: mbox("a", "c>\r\nRCPT TO:<x"),
            params: MailParameters::default(),
        },
        Command::Mail {
            from: literal("a", "1.2.3.4] x"),
            params: MailParameters::default(),
        },
        Command::Mail {
            from: Path::Postmaster,
            params: MailParameters::default(),
        },
        Command::Rcpt {
            to: Path::Null,
            params: RcptParameters::default(),
        },
        Command::Mail {
            from: Path::Null,
            params: MailParameters {
                other: vec![param("SIZE", Some("1"))],
                ..MailParameters::default()
            },
        },
        Command::Mail {
            from: Path::Null,
            params: MailParameters {
                other: vec![param("X", Some("a b"))],
                ..MailParameters::default()
            },
        },
        Command::Auth {
            mechanism: "plain".into(),
            initial_response: None,
        },
        Command::Xclient(vec![]),
        Command::Mail {
            from: Path::Null,
            params: MailParameters {
                auth: Some(String::new()),
                ..MailParameters::default()
            },
        },
        Command::Xclient(vec![("NA ME".into(), "x".into())]),
        Command::Unknown(String::new()),
    ];
    for command in cases {
        let mut out = b"kept".to_vec();
        assert!(command.encode(&mut out).is_err(), "{command:?}");
        assert_eq!(out, b"kept", "nothing appended on error");
    }
}

#[test]
fn xclient_values_are_xtext_encoded() {
    let built = Command::Xclient(vec![
        ("LOGIN".into(), "jörg+x=y z".into()),
        ("ADDR".into(), "192.0.2.1".into()),
    ]);
    let wire = built.to_bytes().expect("encodes");
    assert_eq!(
        wire,
        b"XCLIENT LOGIN=j+C3+B6rg+2Bx+3Dy+20z ADDR=192.0.2.1\r\n"
    );
    assert_eq!(command(&wire[..wire.len() - 2]), Ok(built));
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    fn local_part() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-zA-Z0-9!#$%&'*+/=?^_`{|}~-]{1,10}(\\.[a-zA-Z0-9_-]{1,8}){0,2}",
            "[ -~]{0,12}",
            "[a-zé日本]{1,6}",
        ]
    }

    fn domain() -> impl Strategy<Value = Domain> {
        prop_oneof![
            "[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?(\\.[a-z0-9]{1,5}){0,3}".prop_map(Domain::Name),
            "(25[0-5]|2[0-4][0-9]|1?[0-9]{1,2})(\\.(25[0-5]|2[0-4][0-9]|1?[0-9]{1,2})){3}"
                .prop_map(Domain::Literal),
            "IPv6:([0-9a-f]{1,4}:){7}[0-9a-f]{1,4}".prop_map(Domain::Literal),
        ]
    }

    fn path() -> impl Strategy<Value = Path> {
        prop_oneof![
            Just(Path::Null),
            (local_part(), domain())
                .prop_map(|(local_part, domain)| Path::Mailbox(Mailbox { local_part, domain })),
        ]
    }

    fn mail_parameters() -> impl Strategy<Value = MailParameters> {
        (
            proptest::option::of(any::<u64>()),
            proptest::option::of(prop_oneof![
                Just(Body::SevenBit),
                Just(Body::EightBitMime),
                Just(Body::BinaryMime)
            ]),
            any::<bool>(),
            proptest::option::of(prop_oneof![Just(Ret::Full), Just(Ret::Hdrs)]),
            proptest::option::of("[ -~]{1,100}"),
            proptest::option::of("[ -~é]{1,30}"),
        )
            .prop_map(|(size, body, smtputf8, ret, envid, auth)| MailParameters {
                size,
                body,
                smtputf8,
                ret,
                envid,
                auth,
                other: Vec::new(),
            })
    }

    proptest! {
        #[test]
        fn mail_round_trips(from in path(), params in mail_parameters()) {
            let built = Command::Mail { from, params };
            let wire = built.to_bytes().expect("a valid command encodes");
            prop_assert!(wire.len() >= 2);
            let parsed = command(&wire[..wire.len() - 2]);
            prop_assert_eq!(parsed, Ok(built));
        }

        #[test]
        fn arbitrary_lines_never_panic_and_round_trip(line in "[ -~]{0,60}") {
            if let Ok(parsed) = command(line.as_bytes()) {
                let wire = parsed.to_bytes().expect("parsed commands encode");
                prop_assert_eq!(command(&wire[..wire.len() - 2]), Ok(parsed));
            }
        }
    }
}
