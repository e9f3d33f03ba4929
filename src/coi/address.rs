//! Envelope address normalisation for the COI hashes (COI-PROTOCOL.md §4.3, DESIGN.md §3,
//! SECURITY-CASES.md §F).
//!
//! A token binds `H(from ":" to)` over normalised envelope addresses, so two spellings of
//! one mailbox must normalise to the same string, and two mailboxes must never share one.
//! The rule is Dovecot's (`coi_normalize_smtp_address`), so that hashes agree with a
//! Dovecot COI server byte for byte on ASCII addresses:
//!
//! 1. ASCII `A`–`Z` are lowercased in the local part and the domain, nothing else;
//! 2. the local part is re-encoded: bare if it is a dot-atom (atext runs separated by
//!    single dots), else quoted with `\` before `"` and `\`;
//! 3. `local@domain`; the null path `<>` is the empty string.
//!
//! Plus what Dovecot leaves open:
//! - the domain goes through UTS #46 ToASCII, non-transitional (`ß` stays `ß`), with the
//!   STD3 rules (letters, digits, hyphen): the result is the lowercase A-label form, so
//!   `bücher.example` and `xn--bcher-kva.example` are one domain. UTS #46 mapping applies to
//!   the domain only (a Kelvin sign or a long s in a domain is `k` or `s`, as every resolver
//!   sees it);
//! - a UTF-8 local part (RFC 6531) is put in NFC, so NFD and NFC spellings are one
//!   address; non-ASCII characters count as atext (RFC 6531 `atext =/ UTF8-non-ascii`).
//!   Dovecot itself cannot encode them: its SMTP character table marks bytes ≥ 0x80 as
//!   neither atext nor qtext;
//! - whatever cannot be normalised unambiguously is an [`AddressError`], never a guess.
//!
//! The local part is lowercased although RFC 5321 §2.4 lets a server treat it as case
//! sensitive (SECURITY-CASES §F): COI interoperability requires Dovecot's hash, and Dovecot
//! lowercases. Only ASCII letters are lowered: no Unicode case folding, so `ſ`, `ı` and
//! other letters that fold or look like ASCII ones stay distinct from them.

use std::fmt;

use unicode_normalization::char::is_public_assigned;
use unicode_normalization::UnicodeNormalization;

/// Longest input accepted, in octets. RFC 5321 §4.5.3.1.3 caps a whole path at 256
/// octets; this bound only limits the work done on hostile input before the real limits
/// ([`MAX_LOCAL_PART`], [`MAX_DOMAIN`]) are checked on the normalised form, and it is
/// generous so that redundant escapes, NFD input or a Unicode domain never reach it.
pub const MAX_INPUT: usize = 4096;

/// Longest normalised local part, in octets, quotes and escapes included (RFC 5321
/// §4.5.3.1.1).
pub const MAX_LOCAL_PART: usize = 64;

/// Longest normalised (A-label) domain, in octets (RFC 5321 §4.5.3.1.2).
pub const MAX_DOMAIN: usize = 255;

/// Longest domain label, in octets (RFC 1035 §2.3.4).
pub const MAX_LABEL: usize = 63;

/// An envelope address in the normal form the COI hashes are computed over.
///
/// Never empty: the null reverse path is `None` in [`normalize_reverse_path`].
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct NormalizedAddress {
    text: String,
    /// Index of the `@` between local part and domain (the last one: a quoted local part
    /// may hold `@`, an A-label domain never does).
    at: usize,
}

impl NormalizedAddress {
    /// The normalised address, `local@domain`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The normalised local part, as encoded (a quoted one keeps its quotes).
    pub fn local_part(&self) -> &str {
        &self.text[..self.at]
    }

    /// The domain as a lowercase A-label.
    pub fn domain(&self) -> &str {
        &self.text[self.at + 1..]
    }

    pub fn into_string(self) -> String {
        self.text
    }
}

impl fmt::Display for NormalizedAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for NormalizedAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("NormalizedAddress")
            .field(&self.text)
            .finish()
    }
}

impl AsRef<str> for NormalizedAddress {
    fn as_ref(&self) -> &str {
        &self.text
    }
}

/// Why an envelope address cannot be normalised. The SMTP layers answer these with 501
/// (syntax) or 553 (mailbox name not allowed); none of them is the client's to retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("address is not valid UTF-8")]
    InvalidUtf8,
    #[error("address longer than {MAX_INPUT} octets")]
    InputTooLong,
    #[error("empty address")]
    Empty,
    #[error("control character {} in address", .0.escape_unicode())]
    ControlCharacter(char),
    /// An invisible (default-ignorable) character: two addresses that look the same would
    /// hash differently, and some software drops these characters in transit.
    #[error("invisible character {} in address", .0.escape_unicode())]
    InvisibleCharacter(char),
    /// A character that looks like `@` (fullwidth `＠`, small `﹫`): the sender sees one
    /// address, SMTP routes another.
    #[error("look-alike of @ ({}) in address", .0.escape_unicode())]
    LookalikeAt(char),
    /// A non-ASCII character whose canonical (NFC) form contains ASCII, such as the Kelvin
    /// sign (NFC `K`) or the Greek question mark (NFC `;`): normalising it would merge it
    /// with an ASCII address, keeping it would not be NFC.
    #[error("character {} normalises to ASCII", .0.escape_unicode())]
    AsciiLookalike(char),
    /// Unassigned or private-use code point in the local part: NFC of an unassigned code
    /// point may change when Unicode assigns it, so its hash would not be stable.
    #[error("unassigned or private-use character {} in local part", .0.escape_unicode())]
    UnassignedCharacter(char),
    /// `@a,@b:user@example.org`: RFC 5321 says to ignore the route, and hops do so
    /// differently; the caller strips it or rejects the path.
    #[error("source route in address")]
    SourceRoute,
    #[error("no @ in address")]
    MissingAt,
    #[error("empty local part")]
    EmptyLocalPart,
    #[error("character {} must be quoted in a local part", .0.escape_unicode())]
    InvalidLocalPartChar(char),
    #[error("unterminated quoted local part")]
    UnterminatedQuote,
    /// A backslash before something other than printable ASCII (RFC 5321 `quoted-pairSMTP`).
    #[error("invalid quoted pair in local part")]
    InvalidQuotedPair,
    #[error("text between quoted local part and @")]
    TextAfterQuote,
    #[error("local part longer than {MAX_LOCAL_PART} octets")]
    LocalPartTooLong,
    #[error("empty domain")]
    EmptyDomain,
    /// `user@[192.0.2.1]`: literals have many spellings (IPv6 compression, zero padding,
    /// the `IPv6:` tag), so no canonical form that a peer would compute alike, and COI
    /// peers are identified by domain name (TLS certificates, DESIGN.md §3).
    #[error("address literal domains are not supported")]
    AddressLiteral,
    /// `example.org.`: the root label is not part of a mail domain (RFC 5321 §2.3.5).
    #[error("domain ends in a dot")]
    DomainTrailingDot,
    #[error("empty label in domain")]
    EmptyDomainLabel,
    /// UTS #46 ToASCII failed: disallowed code point, bad Punycode, bidi or joiner rule, or
    /// an ASCII character outside letters, digits and hyphen (STD3: `_`, space, `!`, ...).
    #[error("domain is not a valid (internationalised) host name")]
    InvalidDomain,
    #[error("domain label longer than {MAX_LABEL} octets")]
    DomainLabelTooLong,
    #[error("domain longer than {MAX_DOMAIN} octets")]
    DomainTooLong,
}

/// Normalises a mailbox: a forward path or a non-null reverse path, as received in
/// `MAIL FROM` / `RCPT TO` without the angle brackets (`Alice@Example.ORG`,
/// `"John Doe"@example.com`).
pub fn normalize(path: &str) -> Result<NormalizedAddress, AddressError> {
    if path.is_empty() {
        return Err(AddressError::Empty);
    }
    if path.len() > MAX_INPUT {
        return Err(AddressError::InputTooLong);
    }
    check_characters(path)?;
    let (local, domain) = mailbox(path)?;
    let local = encode_local_part(&normalize_local_part(&local)?);
    if local.len() > MAX_LOCAL_PART {
        return Err(AddressError::LocalPartTooLong);
    }
    let domain = normalize_domain(domain)?;
    let at = local.len();
    Ok(NormalizedAddress {
        text: local + "@" + &domain,
        at,
    })
}

/// [`normalize`] on raw bytes from the wire.
pub fn normalize_bytes(path: &[u8]) -> Result<NormalizedAddress, AddressError> {
    normalize(std::str::from_utf8(path).map_err(|_| AddressError::InvalidUtf8)?)
}

/// Normalises a reverse path (`MAIL FROM`): the null path, given as `""` or `"<>"`, is
/// `None` and hashes as the empty string (COI-PROTOCOL §4.3); anything else as
/// [`normalize`].
pub fn normalize_reverse_path(path: &str) -> Result<Option<NormalizedAddress>, AddressError> {
    match path {
        "" | "<>" => Ok(None),
        _ => normalize(path).map(Some),
    }
}

/// Fuzz body (`coi_address`): never panics; what normalises is a fixed point, within the
/// limits, with an A-label domain.
#[doc(hidden)]
pub fn fuzz_normalize(data: &[u8]) {
    let result = normalize_bytes(data);
    if let Ok(text) = std::str::from_utf8(data) {
        assert_eq!(result, normalize(text));
        match normalize_reverse_path(text) {
            Ok(None) => assert!(text.is_empty() || text == "<>"),
            Ok(Some(address)) => assert_eq!(Ok(&address), result.as_ref()),
            Err(e) => assert_eq!(Err(e), result),
        }
    } else {
        assert_eq!(result, Err(AddressError::InvalidUtf8));
    }
    let Ok(address) = result else {
        return;
    };
    assert_eq!(
        normalize(address.as_str()).as_ref(),
        Ok(&address),
        "normalisation is idempotent"
    );
    assert!(address.local_part().len() <= MAX_LOCAL_PART);
    assert!(!address.local_part().is_empty());
    let domain = address.domain();
    assert!(!domain.is_empty() && domain.len() <= MAX_DOMAIN);
    assert!(domain
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'));
    assert!(!address.local_part().bytes().any(|b| b.is_ascii_uppercase()));
    assert_eq!(
        address.as_str(),
        format!("{}@{}", address.local_part(), domain)
    );
}

// === helpers ===

/// Rejects, anywhere in the path, what has no unambiguous reading: controls, invisible
/// characters, look-alikes of `@`.
fn check_characters(path: &str) -> Result<(), AddressError> {
    if path.is_ascii() {
        // No ASCII character is a look-alike `@` or default-ignorable: only controls.
        return match path.chars().find(char::is_ascii_control) {
            Some(c) => Err(AddressError::ControlCharacter(c)),
            None => Ok(()),
        };
    }
    for c in path.chars() {
        if is_lookalike_at(c) {
            return Err(AddressError::LookalikeAt(c));
        }
        if c.is_control() {
            return Err(AddressError::ControlCharacter(c));
        }
        if is_default_ignorable(c) {
            return Err(AddressError::InvisibleCharacter(c));
        }
    }
    Ok(())
}

/// `Mailbox = Local-part "@" ( Domain / address-literal )` (RFC 5321 §4.1.2, RFC 6531
/// §3.3): the decoded local part and the domain as written.
///
/// `Local-part = Dot-string / Quoted-string`. Like Dovecot (`smtp_parser_parse_dot_string`)
/// an unquoted local part may hold dots anywhere (`a..b`, `.a`, `a.`); it then re-encodes
/// quoted.
fn mailbox(path: &str) -> Result<(String, &str), AddressError> {
    if let Some(rest) = path.strip_prefix('@') {
        return Err(if rest.contains(':') {
            AddressError::SourceRoute
        } else {
            AddressError::EmptyLocalPart
        });
    }
    let (local, domain) = if let Some(quoted) = path.strip_prefix('"') {
        let (local, rest) = quoted_string(quoted)?;
        let domain = rest.strip_prefix('@').ok_or(if rest.is_empty() {
            AddressError::MissingAt
        } else {
            AddressError::TextAfterQuote
        })?;
        (local, domain)
    } else {
        let (local, domain) = path.split_once('@').ok_or(AddressError::MissingAt)?;
        if let Some(c) = local.chars().find(|&c| c != '.' && !is_atext(c)) {
            return Err(AddressError::InvalidLocalPartChar(c));
        }
        (local.to_owned(), domain)
    };
    if local.is_empty() {
        return Err(AddressError::EmptyLocalPart);
    }
    Ok((local, domain))
}

/// The rest of `Quoted-string = DQUOTE *QcontentSMTP DQUOTE` after the opening quote:
/// the decoded content and what follows the closing quote.
///
/// `QcontentSMTP = qtextSMTP / quoted-pairSMTP`, `quoted-pairSMTP = %d92 %d32-126`,
/// `qtextSMTP = %d32-33 / %d35-91 / %d93-126 / UTF8-non-ascii` (RFC 6531).
fn quoted_string(input: &str) -> Result<(String, &str), AddressError> {
    let mut value = String::new();
    let mut chars = input.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((value, &input[i + 1..])),
            '\\' => match chars.next() {
                Some((_, escaped @ ' '..='~')) => value.push(escaped),
                Some(_) => return Err(AddressError::InvalidQuotedPair),
                None => return Err(AddressError::UnterminatedQuote),
            },
            // Controls were rejected before; everything else is qtext.
            _ => value.push(c),
        }
    }
    Err(AddressError::UnterminatedQuote)
}

/// NFC, then ASCII lowercase, then NFC again: lowering a letter can make it compose with
/// a following mark (`W` + U+030A has no precomposed form, `w` + U+030A is `ẘ`), and the
/// result must be NFC for normalisation to be idempotent. NFC comes first so that NFD
/// and NFC spellings of `Å` stay equal.
fn normalize_local_part(local: &str) -> Result<String, AddressError> {
    if local.is_ascii() {
        // NFC leaves ASCII unchanged and lowering keeps it ASCII: the common case,
        // without the normaliser's iterators.
        return Ok(local.to_ascii_lowercase());
    }
    for c in local.chars().filter(|c| !c.is_ascii()) {
        if !is_public_assigned(c) {
            return Err(AddressError::UnassignedCharacter(c));
        }
        if std::iter::once(c).nfc().any(|n| n.is_ascii()) {
            return Err(AddressError::AsciiLookalike(c));
        }
    }
    let mut value: String = local.nfc().collect();
    value.make_ascii_lowercase();
    Ok(if unicode_normalization::is_nfc(&value) {
        value
    } else {
        value.nfc().collect()
    })
}

/// Dovecot's `smtp_address_write` for the local part: bare if it is a `Dot-string`
/// (`Atom *("." Atom)`), else quoted with a backslash before `"` and `\`.
fn encode_local_part(local: &str) -> String {
    let dot_atom = local.split('.').all(|atom| !atom.is_empty())
        && local.chars().all(|c| c == '.' || is_atext(c));
    if dot_atom {
        return local.to_owned();
    }
    let mut out = String::with_capacity(local.len() + 2);
    out.push('"');
    for c in local.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// `Domain = sub-domain *("." sub-domain)` as a lowercase A-label (UTS #46 ToASCII,
/// non-transitional, STD3 rules), within the DNS length limits.
fn normalize_domain(domain: &str) -> Result<String, AddressError> {
    if domain.is_empty() {
        return Err(AddressError::EmptyDomain);
    }
    if domain.starts_with('[') {
        return Err(AddressError::AddressLiteral);
    }
    check_labels(domain)?;
    // Not `idna::domain_to_ascii`: it applies no ASCII deny list, so spaces, `_`, `!` or
    // `"` would pass into the hash. idna 1.x processing is always non-transitional.
    let ascii = idna::uts46::Uts46::new()
        .to_ascii(
            domain.as_bytes(),
            idna::uts46::AsciiDenyList::STD3,
            idna::uts46::Hyphens::Allow,
            idna::uts46::DnsLength::Ignore,
        )
        .map_err(|_| AddressError::InvalidDomain)?;
    // UTS #46 maps ideographic and fullwidth full stops to `.`, so check the labels again.
    check_labels(&ascii)?;
    if ascii.split('.').any(|label| label.len() > MAX_LABEL) {
        return Err(AddressError::DomainLabelTooLong);
    }
    if ascii.len() > MAX_DOMAIN {
        return Err(AddressError::DomainTooLong);
    }
    Ok(ascii.to_ascii_lowercase())
}

fn check_labels(domain: &str) -> Result<(), AddressError> {
    if domain.ends_with('.') {
        return Err(AddressError::DomainTrailingDot);
    }
    if domain.split('.').any(str::is_empty) {
        return Err(AddressError::EmptyDomainLabel);
    }
    Ok(())
}

/// RFC 5322 `atext`, extended by RFC 6531 with every non-ASCII character.
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii()
}

/// FULLWIDTH COMMERCIAL AT, SMALL COMMERCIAL AT, TAG COMMERCIAL AT.
fn is_lookalike_at(c: char) -> bool {
    matches!(c, '\u{FF20}' | '\u{FE6B}' | '\u{E0040}')
}

/// Unicode `Default_Ignorable_Code_Point` (DerivedCoreProperties.txt): soft hyphen,
/// zero-width characters, bidi controls, variation selectors, tags, fillers.
fn is_default_ignorable(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{115F}'..='\u{1160}'
            | '\u{17B4}'..='\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF0}'..='\u{FFF8}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E0FFF}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ASCII shortcuts of `check_characters` and `normalize_local_part` give what the
    /// general path gives, for every ASCII character in every position class.
    #[test]
    fn ascii_shortcuts_agree_with_the_general_rules() {
        for b in 0u8..0x80 {
            let c = char::from(b);
            let general = if is_lookalike_at(c) {
                Err(AddressError::LookalikeAt(c))
            } else if c.is_control() {
                Err(AddressError::ControlCharacter(c))
            } else if is_default_ignorable(c) {
                Err(AddressError::InvisibleCharacter(c))
            } else {
                Ok(())
            };
            assert_eq!(
                check_characters(&format!("a{c}b@x.test")),
                general,
                "{b:#04x}"
            );
            let local = format!("A{c}z");
            let mut nfc: String = local.nfc().collect();
            nfc.make_ascii_lowercase();
            assert_eq!(normalize_local_part(&local), Ok(nfc), "{b:#04x}");
        }
    }

    fn norm(path: &str) -> String {
        normalize(path)
            .unwrap_or_else(|e| panic!("{path:?}: {e}"))
            .into_string()
    }

    #[test]
    fn protocol_vectors_6_1() {
        // COI-PROTOCOL.md §6.1, each local part as it appears in a path.
        assert_eq!(norm("Alice@Example.ORG"), "alice@example.org");
        assert_eq!(norm("\"John Doe\"@Example.com"), "\"john doe\"@example.com");
        assert_eq!(norm("a..b@x.org"), "\"a..b\"@x.org");
        assert_eq!(norm("\"a..b\"@x.org"), "\"a..b\"@x.org");
        assert_eq!(norm(".a@x.org"), "\".a\"@x.org");
        assert_eq!(norm("a.@x.org"), "\"a.\"@x.org");
        assert_eq!(norm("\"q\\\"uote\"@x.org"), "\"q\\\"uote\"@x.org");
        assert_eq!(norm("user+tag@EXAMPLE.com"), "user+tag@example.com");
        assert_eq!(normalize_reverse_path(""), Ok(None));
        assert_eq!(normalize_reverse_path("<>"), Ok(None));
        assert_eq!(
            normalize_reverse_path("Alice@Example.ORG")
                .unwrap()
                .unwrap()
                .as_str(),
            "alice@example.org"
        );
    }

    #[test]
    fn quoting_follows_dovecot() {
        assert_eq!(norm("\"alice\"@x.org"), "alice@x.org");
        assert_eq!(norm("\"a\\lice\"@x.org"), "alice@x.org");
        assert_eq!(norm("\"a.b\"@x.org"), "a.b@x.org");
        assert_eq!(norm("\"a@b\"@x.org"), "\"a@b\"@x.org");
        assert_eq!(norm("\"back\\\\slash\"@x.org"), "\"back\\\\slash\"@x.org");
        assert_eq!(norm("\"(x)\"@x.org"), "\"(x)\"@x.org");
        assert_eq!(
            norm("!#$%&'*+-/=?^_`{|}~@x.org"),
            "!#$%&'*+-/=?^_`{|}~@x.org"
        );
        let a = normalize("\"a@b\"@Example.org").unwrap();
        assert_eq!(a.local_part(), "\"a@b\"");
        assert_eq!(a.domain(), "example.org");
    }

    #[test]
    fn case_is_lowered_for_ascii_only() {
        assert_eq!(norm("BOB@Example.COM"), "bob@example.com");
        assert_eq!(norm("Jörg@x.org"), "jörg@x.org");
        assert_eq!(norm("JÖRG@x.org"), "jÖrg@x.org");
    }

    #[test]
    fn idn_domains_become_a_labels() {
        assert_eq!(norm("bob@bücher.example"), "bob@xn--bcher-kva.example");
        assert_eq!(
            normalize("bob@bücher.example"),
            normalize("bob@xn--bcher-kva.example")
        );
        assert_eq!(norm("bob@BÜCHER.Example"), "bob@xn--bcher-kva.example");
        assert_eq!(
            norm("bob@XN--BCHER-KVA.example"),
            "bob@xn--bcher-kva.example"
        );
        // Non-transitional: ß is kept, not mapped to ss.
        assert_eq!(norm("a@straße.example"), "a@xn--strae-oqa.example");
        assert_ne!(norm("a@straße.example"), norm("a@strasse.example"));
        // UTS #46 maps the ideographic full stop.
        assert_eq!(norm("bob@bücher。example"), "bob@xn--bcher-kva.example");
    }

    #[test]
    fn nfd_and_nfc_local_parts_are_equal() {
        let nfc = norm("j\u{F6}rg@x.org");
        let nfd = norm("jo\u{308}rg@x.org");
        assert_eq!(nfc, nfd);
        assert_eq!(nfc, "j\u{F6}rg@x.org");
        // NFC before lowercasing: the NFD spelling of Å stays Å, not å.
        assert_eq!(norm("A\u{30A}@x.org"), norm("\u{C5}@x.org"));
        assert_ne!(norm("\u{C5}@x.org"), norm("\u{E5}@x.org"));
        // ... and NFC again after: w + ring composes to ẘ, W + ring does not.
        assert_eq!(norm("W\u{30A}@x.org"), "\u{1E98}@x.org");
        assert_eq!(norm("\u{1E98}@x.org"), "\u{1E98}@x.org");
    }

    #[test]
    fn unicode_case_lookalikes_stay_distinct() {
        // The Kelvin sign is canonically K (NFC maps it), so it is refused rather than
        // merged with k.
        assert_eq!(
            normalize("\u{212A}@x.org"),
            Err(AddressError::AsciiLookalike('\u{212A}'))
        );
        assert_ne!(normalize("\u{212A}@x.org"), normalize("k@x.org"));
        assert_eq!(
            normalize("a\u{37E}b@x.org"),
            Err(AddressError::AsciiLookalike('\u{37E}'))
        );
        // Long s, dotless i, dotted capital I: no folding.
        assert_eq!(norm("\u{17F}@x.org"), "\u{17F}@x.org");
        assert_ne!(norm("\u{17F}@x.org"), norm("s@x.org"));
        assert_ne!(norm("\u{131}@x.org"), norm("i@x.org"));
        assert_ne!(norm("\u{130}@x.org"), norm("i@x.org"));
        assert_ne!(norm("\u{130}@x.org"), norm("I@x.org"));
        // Fullwidth letters stay fullwidth (NFC, not NFKC).
        assert_eq!(norm("\u{FF21}@x.org"), "\u{FF21}@x.org");
        // The Angstrom sign is canonically Å: one address.
        assert_eq!(norm("\u{212B}@x.org"), norm("\u{C5}@x.org"));
    }

    #[test]
    fn lookalike_at_signs_are_rejected() {
        assert_eq!(
            normalize("alice\u{FF20}example.org"),
            Err(AddressError::LookalikeAt('\u{FF20}'))
        );
        assert_eq!(
            normalize("alice\u{FF20}x@example.org"),
            Err(AddressError::LookalikeAt('\u{FF20}'))
        );
        assert_eq!(
            normalize("\"alice\u{FE6B}x\"@example.org"),
            Err(AddressError::LookalikeAt('\u{FE6B}'))
        );
        assert_eq!(
            normalize("alice@ex\u{FF20}ample.org"),
            Err(AddressError::LookalikeAt('\u{FF20}'))
        );
    }

    #[test]
    fn malformed_addresses_are_errors() {
        use AddressError::*;
        let cases: &[(&str, AddressError)] = &[
            ("", Empty),
            ("<>", MissingAt),
            ("<alice@example.org>", InvalidLocalPartChar('<')),
            ("alice", MissingAt),
            ("@example.org", EmptyLocalPart),
            ("\"\"@example.org", EmptyLocalPart),
            ("@a.example,@b.example:u@example.org", SourceRoute),
            ("alice@", EmptyDomain),
            ("alice@[192.0.2.1]", AddressLiteral),
            ("alice@[IPv6:2001:db8::1]", AddressLiteral),
            ("alice@example.org.", DomainTrailingDot),
            ("alice@example..org", EmptyDomainLabel),
            ("alice@.example.org", EmptyDomainLabel),
            ("alice@example\u{3002}", DomainTrailingDot),
            ("alice@exa_mple.org", InvalidDomain),
            ("alice@exa mple.org", InvalidDomain),
            ("alice@xn--zz.example", InvalidDomain),
            ("a@b@example.org", InvalidDomain),
            ("John Doe@example.org", InvalidLocalPartChar(' ')),
            ("a(b)@example.org", InvalidLocalPartChar('(')),
            ("a\\b@example.org", InvalidLocalPartChar('\\')),
            ("\"unterminated@example.org", UnterminatedQuote),
            ("\"a\\", UnterminatedQuote),
            ("\"a\"b@example.org", TextAfterQuote),
            ("\"a\"", MissingAt),
            ("\"a\\\u{E9}\"@example.org", InvalidQuotedPair),
            ("a\r\n@example.org", ControlCharacter('\r')),
            ("a\0@example.org", ControlCharacter('\0')),
            ("\"a\tb\"@example.org", ControlCharacter('\t')),
            ("a\u{85}@example.org", ControlCharacter('\u{85}')),
            ("a@exa\nmple.org", ControlCharacter('\n')),
            ("a\u{200B}b@example.org", InvisibleCharacter('\u{200B}')),
            ("a\u{202E}b@example.org", InvisibleCharacter('\u{202E}')),
            ("a\u{AD}b@example.org", InvisibleCharacter('\u{AD}')),
            ("a\u{E000}@example.org", UnassignedCharacter('\u{E000}')),
            ("a\u{FFFF}@example.org", UnassignedCharacter('\u{FFFF}')),
        ];
        for (input, error) in cases {
            assert_eq!(normalize(input), Err(*error), "{input:?}");
        }
        assert_eq!(normalize_bytes(b"a\xff@example.org"), Err(InvalidUtf8));
    }

    #[test]
    fn length_limits() {
        let local = "a".repeat(MAX_LOCAL_PART);
        assert!(normalize(&format!("{local}@x.org")).is_ok());
        assert_eq!(
            normalize(&format!("{local}a@x.org")),
            Err(AddressError::LocalPartTooLong)
        );
        // Counted on the encoded form: quotes are octets of the local part.
        let spaced = format!("\"{}\"", " ".repeat(MAX_LOCAL_PART - 2));
        assert!(normalize(&format!("{spaced}@x.org")).is_ok());
        let spaced = format!("\"{}\"", " ".repeat(MAX_LOCAL_PART - 1));
        assert_eq!(
            normalize(&format!("{spaced}@x.org")),
            Err(AddressError::LocalPartTooLong)
        );
        // Redundant escapes do not count.
        let escaped = format!("\"{}\"@x.org", "\\a".repeat(MAX_LOCAL_PART));
        assert_eq!(norm(&escaped), format!("{local}@x.org"));

        let label = "a".repeat(MAX_LABEL);
        assert!(normalize(&format!("a@{label}.org")).is_ok());
        assert_eq!(
            normalize(&format!("a@{label}a.org")),
            Err(AddressError::DomainLabelTooLong)
        );
        let domain = [label.as_str(); 4].join("."); // 255 octets
        assert_eq!(domain.len(), MAX_DOMAIN);
        assert!(normalize(&format!("a@{domain}")).is_ok());
        assert_eq!(
            normalize(&format!("a@a{domain}")),
            Err(AddressError::DomainLabelTooLong)
        );
        assert_eq!(
            normalize(&format!("a@a.{domain}")),
            Err(AddressError::DomainTooLong)
        );
        assert_eq!(
            normalize(&"a".repeat(MAX_INPUT + 1)),
            Err(AddressError::InputTooLong)
        );
    }

    #[test]
    fn fuzz_body_accepts_the_vectors() {
        for input in [
            "Alice@Example.ORG",
            "\"John Doe\"@Example.com",
            "bob@bücher.example",
            "W\u{30A}@x.org",
            "",
            "<>",
            "\u{212A}@x.org",
        ] {
            fuzz_normalize(input.as_bytes());
        }
        fuzz_normalize(b"\xff@x");
    }

    /// Characters that exercise every rule: ASCII letters of both cases, specials, quotes,
    /// escapes, dots, UTF-8 letters, combining marks, look-alikes, full stops.
    const ALPHABET: &str = "[aAkKsSwWzZ09.+_ \"\\\\@()<>\\[\\]:,\u{e9}\u{c5}\u{fc}\u{301}\u{30a}\u{308}\u{212a}\u{17f}\u{131}\u{ff20}\u{3002}\u{200b}\u{7f}-]";

    proptest::proptest! {
        #[test]
        fn normalize_never_panics_and_is_idempotent(
            input in proptest::string::string_regex(&format!("{ALPHABET}{{0,40}}")).unwrap()
        ) {
            fuzz_normalize(input.as_bytes());
        }

        #[test]
        fn normalize_bytes_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..80)) {
            fuzz_normalize(&bytes);
        }

        #[test]
        fn plausible_addresses_normalise_idempotently(
            local in "[a-zA-Z0-9.+\u{e9}\u{c5}\u{fc}\u{301}\u{30a}\u{17f}W]{1,12}",
            quoted in proptest::bool::ANY,
            labels in proptest::collection::vec("[a-zA-Z0-9\u{fc}\u{df}-]{1,8}", 1..4),
        ) {
            let local = if quoted { format!("\"{local}\"") } else { local };
            let input = format!("{local}@{}", labels.join("."));
            fuzz_normalize(input.as_bytes());
        }
    }
}
