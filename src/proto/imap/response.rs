//! Server responses, classified as far as the proxy needs: who the response belongs to
//! (tag, continuation, untagged), its status and response code, and the payload of the
//! few untagged responses the proxy reads (CAPABILITY, METADATA, SEARCH).
//!
//! ```abnf
//! response       = *(continue-req / response-data) response-done
//! continue-req   = "+" [SP (resp-text / base64)] CRLF
//! response-data  = "*" SP (resp-cond-state / resp-cond-bye / mailbox-data / message-data / capability-data / enable-data) CRLF
//! response-tagged = tag SP resp-cond-state CRLF
//! resp-text      = ["[" resp-text-code "]" SP] [text]
//! ```

use nom::Parser;

use super::command::{astring, is_atom_char, nstring};

/// Status of a status response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Bad,
    Bye,
    No,
    Ok,
    Preauth,
}

impl Status {
    fn from_atom(atom: &[u8]) -> Option<Status> {
        [
            ("OK", Status::Ok),
            ("NO", Status::No),
            ("BAD", Status::Bad),
            ("BYE", Status::Bye),
            ("PREAUTH", Status::Preauth),
        ]
        .into_iter()
        .find(|(s, _)| atom.eq_ignore_ascii_case(s.as_bytes()))
        .map(|(_, s)| s)
    }
}

/// The first line of a response, classified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseHead<'a> {
    /// `+ ...`
    Continuation,
    /// `* OK|NO|BAD|BYE|PREAUTH [code] text`
    UntaggedStatus {
        status: Status,
        code: Option<Code<'a>>,
    },
    /// `* CAPABILITY ...`: the capability atoms follow.
    Capability { caps: &'a [u8] },
    /// `* <number> <name> ...` (EXISTS, EXPUNGE, FETCH, RECENT).
    Numbered { number: u32, name: &'a [u8] },
    /// `* <name> ...` for any other untagged data (LIST, SEARCH, METADATA, ...).
    Data { name: &'a [u8], rest: &'a [u8] },
    /// `tag OK|NO|BAD [code] text`
    Tagged {
        tag: &'a [u8],
        status: Status,
        code: Option<Code<'a>>,
    },
}

/// A response code: `"[" atom [SP 1*<any TEXT-CHAR except "]">] "]"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Code<'a> {
    pub name: &'a [u8],
    pub args: &'a [u8],
    /// Offset of the `[` in the line, and of the byte after `]`.
    pub span: (usize, usize),
}

impl Code<'_> {
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name.as_bytes())
    }
}

/// Why a response line could not be classified. The upstream is at fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed response from the upstream server")]
pub struct MalformedResponse;

/// Classifies the first line of a response.
pub fn response_head(line: &[u8]) -> Result<ResponseHead<'_>, MalformedResponse> {
    if line.first() == Some(&b'+') {
        return Ok(ResponseHead::Continuation);
    }
    let (first, rest) = split_word(line).ok_or(MalformedResponse)?;
    if first.is_empty() {
        // `tag = 1*<any ASTRING-CHAR except "+">`: never empty.
        return Err(MalformedResponse);
    }
    let (second, after) = split_word(rest).unwrap_or((rest, &[]));
    if first == b"*" {
        if let Some(status) = Status::from_atom(second) {
            return Ok(ResponseHead::UntaggedStatus {
                status,
                code: code_at(line, line.len() - after.len()),
            });
        }
        if second.eq_ignore_ascii_case(b"CAPABILITY") {
            return Ok(ResponseHead::Capability { caps: after });
        }
        if let Some(number) = std::str::from_utf8(second)
            .ok()
            .and_then(|s| s.parse::<u32>().ok())
        {
            let (name, _) = split_word(after).unwrap_or((after, &[]));
            return Ok(ResponseHead::Numbered { number, name });
        }
        if second.is_empty() || !second.iter().all(|&b| is_atom_char(b)) {
            return Err(MalformedResponse);
        }
        return Ok(ResponseHead::Data {
            name: second,
            rest: after,
        });
    }
    let status = Status::from_atom(second).ok_or(MalformedResponse)?;
    if matches!(status, Status::Bye | Status::Preauth) {
        return Err(MalformedResponse);
    }
    Ok(ResponseHead::Tagged {
        tag: first,
        status,
        code: code_at(line, line.len() - after.len()),
    })
}

fn split_word(i: &[u8]) -> Option<(&[u8], &[u8])> {
    if i.is_empty() {
        return None;
    }
    Some(match memchr::memchr(b' ', i) {
        Some(sp) => (&i[..sp], &i[sp + 1..]),
        None => (i, &[]),
    })
}

fn code_at(line: &[u8], at: usize) -> Option<Code<'_>> {
    let rest = &line[at..];
    if rest.first() != Some(&b'[') {
        return None;
    }
    let close = memchr::memchr(b']', rest)?;
    let inner = &rest[1..close];
    let (name, args) = split_word(inner).unwrap_or((inner, &[]));
    Some(Code {
        name,
        args,
        span: (at, at + close + 1),
    })
}

/// Splits a capability list into its atoms.
pub fn capability_atoms(caps: &[u8]) -> impl Iterator<Item = &[u8]> {
    caps.split(|&b| b == b' ').filter(|a| !a.is_empty())
}

/// METADATA entries with their values; `None` is NIL (or no value in the unsolicited
/// form).
pub type MetadataEntries = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// Parses the rest of `* METADATA mailbox (entry value ...)` (RFC 5464 §4.4.1); entries
/// without values (unsolicited form) are returned with `None`.
pub fn metadata_response(rest: &[u8]) -> Option<(Vec<u8>, MetadataEntries)> {
    use nom::branch::alt;
    use nom::character::complete::char;
    use nom::combinator::map;
    use nom::multi::separated_list1;
    use nom::sequence::delimited;
    let entry_value = map((astring, char(' '), nstring), |(e, _, v)| (e, v));
    let parsed: nom::IResult<&[u8], _> = (
        super::command::mailbox,
        char(' '),
        alt((
            delimited(
                char('('),
                separated_list1(char(' '), entry_value),
                char(')'),
            ),
            map(separated_list1(char(' '), astring), |es| {
                es.into_iter().map(|e| (e, None)).collect()
            }),
        )),
    )
        .parse(rest);
    match parsed {
        Ok(([], (mailbox, _, entries))) => Some((mailbox, entries)),
        _ => None,
    }
}

/// Parses the numbers of `* SEARCH n n n` (RFC 3501 §7.2.5), ignoring a trailing
/// `(MODSEQ n)`.
pub fn search_numbers(rest: &[u8]) -> Option<Vec<u32>> {
    rest.split(|&b| b == b' ')
        .filter(|w| !w.is_empty())
        .take_while(|w| w.first() != Some(&b'('))
        .map(|w| std::str::from_utf8(w).ok()?.parse().ok())
        .collect()
}

/// The delimiter of a `* LIST (flags) "d" name` response.
pub fn list_delimiter(line: &[u8]) -> Option<u8> {
    let ResponseHead::Data { name, rest } = response_head(line).ok()? else {
        return None;
    };
    if !name.eq_ignore_ascii_case(b"LIST") {
        return None;
    }
    let after_flags = &rest[memchr::memchr(b')', rest)? + 1..];
    let (_, delimiter) = super::command::quoted(after_flags.strip_prefix(b" ")?).ok()?;
    delimiter.first().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_delimiter_is_read_from_the_list_response() {
        assert_eq!(
            list_delimiter(b"* LIST (\\Noselect) \"/\" \"\""),
            Some(b'/')
        );
        assert_eq!(
            list_delimiter(b"* LIST (\\Noselect) \".\" \"\""),
            Some(b'.')
        );
        assert_eq!(list_delimiter(b"* LIST (\\Noselect) NIL \"\""), None);
    }

    #[test]
    fn classifies_every_kind_of_response() {
        assert_eq!(response_head(b"+ idling"), Ok(ResponseHead::Continuation));
        assert_eq!(response_head(b"+"), Ok(ResponseHead::Continuation));
        assert_eq!(
            response_head(b"* CAPABILITY IMAP4rev1 IDLE"),
            Ok(ResponseHead::Capability {
                caps: b"IMAP4rev1 IDLE"
            })
        );
        assert_eq!(
            response_head(b"* 23 EXISTS"),
            Ok(ResponseHead::Numbered {
                number: 23,
                name: b"EXISTS"
            })
        );
        assert_eq!(
            response_head(b"* LIST (\\HasNoChildren) \"/\" INBOX"),
            Ok(ResponseHead::Data {
                name: b"LIST",
                rest: b"(\\HasNoChildren) \"/\" INBOX"
            })
        );
        let ok = response_head(b"a1 OK [CAPABILITY IMAP4rev1 X] Logged in").unwrap();
        let ResponseHead::Tagged {
            tag,
            status,
            code: Some(code),
        } = ok
        else {
            panic!("{ok:?}")
        };
        assert_eq!((tag, status), (&b"a1"[..], Status::Ok));
        assert!(code.is("capability"));
        assert_eq!(code.args, b"IMAP4rev1 X");
        assert_eq!(code.span, (6, 30));
        let bye = response_head(b"* BYE [UNAVAILABLE] shutting down").unwrap();
        assert!(
            matches!(bye, ResponseHead::UntaggedStatus { status: Status::Bye, code: Some(c) } if c.is("UNAVAILABLE"))
        );
    }

    #[test]
    fn garbage_is_malformed() {
        for line in [
            &b""[..],
            b"* ",
            b"a PREAUTH x",
            b"a HELLO",
            b"* (x)",
            b" OK x",
            b" OK [READ-WR",
        ] {
            assert_eq!(
                response_head(line),
                Err(MalformedResponse),
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn metadata_response_with_literals_and_nil() {
        let (mailbox, entries) =
            metadata_response(b"\"\" (/private/a {3}\r\nyes /private/b NIL /shared/c \"v\")")
                .unwrap();
        assert_eq!(mailbox, b"");
        assert_eq!(
            entries,
            vec![
                (b"/private/a".to_vec(), Some(b"yes".to_vec())),
                (b"/private/b".to_vec(), None),
                (b"/shared/c".to_vec(), Some(b"v".to_vec())),
            ]
        );
    }

    #[test]
    fn search_numbers_ignore_modseq() {
        assert_eq!(search_numbers(b"2 5 7"), Some(vec![2, 5, 7]));
        assert_eq!(search_numbers(b""), Some(vec![]));
        assert_eq!(search_numbers(b"3 (MODSEQ 917162500)"), Some(vec![3]));
        assert_eq!(search_numbers(b"3 x"), None);
    }
}
