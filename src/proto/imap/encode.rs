//! Canonical output written by the proxy itself. Any string the proxy puts on the wire
//! goes through [`string`], which chooses an atom, a quoted string or a literal, so that a
//! value containing CR, LF or `"` can never splice a response or command (SECURITY-CASES
//! case 24).

use super::command::is_atom_char;

/// Whether a literal is written for a server response or for a command to the upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LiteralStyle {
    /// `{n}`: in responses the bytes follow at once.
    Response,
    /// `{n+}`: a non-synchronising literal (RFC 7888), so the proxy never waits for `+`.
    NonSync,
}

/// Appends `value` as an IMAP `string` (quoted or literal).
///
/// Quoted strings carry printable ASCII only (IMAP4rev1 without UTF8=ACCEPT); anything
/// else is a literal.
pub fn string(out: &mut Vec<u8>, value: &[u8], style: LiteralStyle) {
    string_or_literal8(out, value, style, false);
}

fn string_or_literal8(out: &mut Vec<u8>, value: &[u8], style: LiteralStyle, literal8: bool) {
    let quotable = value.len() <= 1024 && value.iter().all(|&b| (0x20..0x7f).contains(&b));
    if quotable {
        out.push(b'"');
        for &b in value {
            if b == b'"' || b == b'\\' {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        let plus = if style == LiteralStyle::NonSync {
            "+"
        } else {
            ""
        };
        let binary = if literal8 && value.contains(&0) {
            "~"
        } else {
            ""
        };
        out.extend_from_slice(format!("{binary}{{{}{plus}}}\r\n", value.len()).as_bytes());
        out.extend_from_slice(value);
    }
}

/// Appends `value` as an `astring`: a bare atom where possible.
pub fn astring(out: &mut Vec<u8>, value: &[u8], style: LiteralStyle) {
    if !value.is_empty() && value.iter().all(|&b| is_atom_char(b) || b == b']') {
        out.extend_from_slice(value);
    } else {
        string(out, value, style);
    }
}

/// Appends `value` as a METADATA `value = nstring / literal8` (RFC 5464): NIL for `None`,
/// and a literal8 (`~{n}`, RFC 3516) for a value containing NUL, the only form that may
/// carry it.
pub fn nstring(out: &mut Vec<u8>, value: Option<&[u8]>, style: LiteralStyle) {
    match value {
        Some(v) => string_or_literal8(out, v, style, true),
        None => out.extend_from_slice(b"NIL"),
    }
}

/// Text for a status response (`resp-text`): CR, LF and other controls are replaced so a
/// message can never end the line early.
pub fn text(out: &mut Vec<u8>, text: &str) {
    out.extend(
        text.bytes()
            .map(|b| if b < 0x20 || b == 0x7f { b' ' } else { b }),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::imap::command::{astring as parse_astring, nstring as parse_nstring};

    fn encoded(value: &[u8], style: LiteralStyle) -> Vec<u8> {
        let mut out = Vec::new();
        astring(&mut out, value, style);
        out
    }

    #[test]
    fn chooses_atom_quoted_or_literal() {
        assert_eq!(encoded(b"INBOX", LiteralStyle::Response), b"INBOX");
        assert_eq!(encoded(b"", LiteralStyle::Response), b"\"\"");
        assert_eq!(
            encoded(b"a b\"c\\", LiteralStyle::Response),
            b"\"a b\\\"c\\\\\""
        );
        assert_eq!(
            encoded(b"x\r\n* OK [ALERT] y", LiteralStyle::Response),
            b"{17}\r\nx\r\n* OK [ALERT] y"
        );
        assert_eq!(
            encoded(b"\r\na1 OK", LiteralStyle::NonSync),
            b"{7+}\r\n\r\na1 OK"
        );
        assert_eq!(
            encoded(b"caf\xc3\xa9", LiteralStyle::Response),
            b"{5}\r\ncaf\xc3\xa9",
            "8-bit is never quoted"
        );
        let mut value = Vec::new();
        nstring(&mut value, Some(b"a\0b"), LiteralStyle::NonSync);
        assert_eq!(value, b"~{3+}\r\na\0b", "a value with NUL needs literal8");
    }

    #[test]
    fn text_cannot_break_the_line() {
        let mut out = Vec::new();
        text(&mut out, "bad\r\n* OK [ALERT] pwned");
        assert_eq!(out, b"bad  * OK [ALERT] pwned");
    }

    proptest::proptest! {
        #[test]
        fn any_value_round_trips_through_the_parser(value in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            for style in [LiteralStyle::Response, LiteralStyle::NonSync] {
                let wire = encoded(&value, style);
                let (rest, parsed) = parse_astring(&wire).expect("canonical output parses");
                proptest::prop_assert!(rest.is_empty());
                proptest::prop_assert_eq!(&parsed, &value);
                let mut n = Vec::new();
                nstring(&mut n, Some(&value), style);
                proptest::prop_assert_eq!(parse_nstring(&n).map(|(r, v)| (r.is_empty(), v)), Ok((true, Some(value.clone()))));
            }
        }
    }
}
