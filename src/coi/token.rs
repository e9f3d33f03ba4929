//! COI version 1 tokens, byte-compatible with Dovecot's `lib-coi` (COI-PROTOCOL.md §4.2,
//! §4.4–4.6; DESIGN.md §3).
//!
//! ```text
//! 1-created:<unix>-validity:<secs>-hash:<H(from ":" to)>[-key:value...]-secret:<mac>[-key:value...]
//! ```
//!
//! - [`pair_hash`] and [`address_hash`] are `base64_std_nopad(SHA3-256(...))` over
//!   [normalised](super::address) envelope addresses.
//! - The MAC is `base64_std_nopad(SHA3-256(prefix ‖ suffix ‖ server secret))`: `prefix`
//!   runs up to and including `-secret:`, `suffix` is whatever follows the MAC (with its
//!   leading `-`). [`issue`] uses the first secret of a kind; [`verify`] tries every
//!   temporary secret, then every permanent one (rotation: prepend a new secret, keep the
//!   old ones), and compares only with `subtle::ConstantTimeEq` (SECURITY-CASES case 48).
//! - Validity: a token created up to [`MAX_CLOCK_SKEW`] in the future is accepted,
//!   otherwise it is valid while `now - created <= validity` ([`check_time`]).
//!
//! [`Token::parse`] reads exactly the layout Dovecot writes and is stricter than Dovecot
//! wherever Dovecot's reading is ambiguous or could not be written back byte for byte:
//! `created`, `validity`, `hash` come first and in that order, no known key twice, every
//! field has a `:`, numbers are canonical decimals. So `render(parse(s)) == s`, and the
//! fields a caller reads are the bytes the MAC covered. A `hash_algo` field is refused as
//! Dovecot refuses it (its parser compares the key with `sha3-256`), and never written.

use std::fmt;

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine as _;
use sha3::{Digest, Sha3_256};
use subtle::ConstantTimeEq;

use super::address::NormalizedAddress;

/// Longest token accepted or issued. A token must fit on one header line (RFC 5322 §2.1.1:
/// 998 characters) and in an ESMTP parameter; Dovecot's tokens are about 138 characters.
pub const MAX_TOKEN_LEN: usize = 998;

/// How far in the future `created` may lie: one day of clock skew between servers
/// (Dovecot's `coi_token_verify_validity`).
pub const MAX_CLOCK_SKEW: u64 = 86_400;

/// Validity of permanent tokens: 365 days, Dovecot's compile-time value.
pub const PERMANENT_VALIDITY: u64 = 31_536_000;

/// The only version, and the first element of every token.
const VERSION: &str = "1";

/// Where the MAC starts: the end of the MAC input's prefix.
const SECRET_MARKER: &str = "-secret:";

/// SHA3-256 output, in bytes.
const MAC_LEN: usize = 32;

/// The MAC in unpadded base64, in characters.
const MAC_BASE64_LEN: usize = (MAC_LEN * 4).div_ceil(3);

/// A token's length apart from its hash, options and MAC: the version, the three field
/// keys with their separators, `-secret:` and two 10-digit times: 1 + 9 + 10 + 10 + 10
/// + 6 + 8 (an allocation hint).
const TOKEN_LEN_WITHOUT_HASH: usize = 54;

/// `base64_std_nopad(SHA3-256(from ":" to))`: the pair a token is bound to (the token's
/// `hash`). The null reverse path (`None`) hashes as the empty string.
pub fn pair_hash(from: Option<&NormalizedAddress>, to: &NormalizedAddress) -> String {
    let from = from.map_or("", NormalizedAddress::as_str);
    sha3_base64(&[from.as_bytes(), b":", to.as_str().as_bytes()])
}

/// `base64_std_nopad(SHA3-256(address))`: Dovecot's `COI-From-Hash` of a contact. (The
/// COI client spec's lowercase hex of the same digest is a different string.)
pub fn address_hash(address: &NormalizedAddress) -> String {
    sha3_base64(&[address.as_str().as_bytes()])
}

/// Which secret list a token's MAC was made with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// Valid by MAC and time alone.
    Temporary,
    /// Valid by MAC and time, and only while the recipient's Contacts hold it.
    Permanent,
}

impl fmt::Display for TokenKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TokenKind::Temporary => "temporary",
            TokenKind::Permanent => "permanent",
        })
    }
}

/// The required fields of a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Field {
    Created,
    Validity,
    Hash,
    Secret,
}

impl Field {
    pub const ALL: [Field; 4] = [Field::Created, Field::Validity, Field::Hash, Field::Secret];

    /// The key as written in a token.
    pub fn key(self) -> &'static str {
        match self {
            Field::Created => "created",
            Field::Validity => "validity",
            Field::Hash => "hash",
            Field::Secret => "secret",
        }
    }

    fn from_key(key: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.key() == key)
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// A parsed COI v1 token. [`Token::render`] gives back exactly the string it was parsed
/// from (or the string [`issue`] made).
///
/// `Debug` leaves out the MAC: a token is a bearer capability, and without its MAC it is
/// useless to whoever reads a log.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    created: u64,
    validity: u64,
    hash: String,
    options: Vec<(String, String)>,
    secret: String,
    after_secret: Vec<(String, String)>,
}

/// Why a string is not a COI v1 token. The texts follow Dovecot's where it has one, since
/// the SMTP layer answers `501 5.5.4 Couldn't parse STOKEN: <text>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("Token longer than {MAX_TOKEN_LEN} characters")]
    TooLong,
    /// Only printable ASCII without space: a token is an ESMTP parameter value and a
    /// header value, so CR, LF, space and non-ASCII cannot occur.
    #[error("Invalid character 0x{0:02x} in token")]
    InvalidCharacter(u8),
    #[error("Unsupported version")]
    UnsupportedVersion,
    /// `--`, or a `-` at the end.
    #[error("Empty field")]
    EmptyField,
    #[error("Field without ':'")]
    MissingColon,
    #[error("Field with empty key")]
    EmptyKey,
    #[error("Missing {0}")]
    Missing(Field),
    #[error("Duplicate {0}")]
    Duplicate(Field),
    /// `created`, `validity` and `hash` must be the first three fields, in that order.
    #[error("Field {0} out of order")]
    OutOfOrder(Field),
    /// Not a canonical decimal `u64` (digits only, no leading zero).
    #[error("Invalid {0}")]
    InvalidNumber(Field),
    #[error("Invalid {0}: must not be 0")]
    Zero(Field),
    #[error("Empty {0}")]
    Empty(Field),
    #[error("Unsupported hash_algo")]
    HashAlgo,
}

/// Why [`issue`] could not make a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IssueError {
    #[error("no {0} token secret configured")]
    NoSecret(TokenKind),
    #[error("cannot issue token: {0}")]
    Invalid(#[from] TokenError),
}

/// Why a token does not admit a delivery. The texts are Dovecot's reasons, for
/// `501 5.5.4 Invalid STOKEN: <text>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("{0}")]
    Malformed(#[from] TokenError),
    /// No configured secret produces this MAC (or the MAC is not base64 of 32 bytes).
    #[error("Secret is not valid")]
    SecretNotValid,
    /// The token is genuine but bound to another sender/recipient pair.
    #[error("from/to address pair doesn't match token's hash")]
    WrongPair,
    #[error("Token is expired")]
    Expired,
    #[error("Create timestamp is in the future")]
    CreatedInFuture,
}

/// A server secret for token MACs. `Debug` never shows it.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

/// An empty secret would make every MAC computable by anyone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a token secret must not be empty")]
pub struct EmptySecret;

impl Secret {
    /// The raw bytes (Dovecot uses the configured string as it is).
    pub fn new(value: impl Into<Vec<u8>>) -> Result<Secret, EmptySecret> {
        let value = value.into();
        if value.is_empty() {
            return Err(EmptySecret);
        }
        Ok(Secret(value))
    }

    /// The secret's bytes, for other keyed hashes of this crate (the de-duplication key).
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The configured secrets. The first of each list issues; all of them verify.
#[derive(Clone, Debug, Default)]
pub struct Secrets {
    pub temporary: Vec<Secret>,
    pub permanent: Vec<Secret>,
}

impl Secrets {
    pub fn of_kind(&self, kind: TokenKind) -> &[Secret] {
        match kind {
            TokenKind::Temporary => &self.temporary,
            TokenKind::Permanent => &self.permanent,
        }
    }
}

impl Token {
    /// Parses a token (COI-PROTOCOL §4.2):
    ///
    /// ```text
    /// token = "1" "-created:" number "-validity:" number "-hash:" value
    ///         *("-" key ":" value) "-secret:" value *("-" key ":" value)
    /// key   = 1*(%x21-2C / %x2E-39 / %x3B-7E)   ; printable, no "-" or ":"
    /// value = *(%x21-2C / %x2E-7E)              ; printable, no "-"
    /// ```
    pub fn parse(token: &str) -> Result<Token, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::TooLong);
        }
        if let Some(b) = token.bytes().find(|&b| !is_token_byte(b)) {
            return Err(TokenError::InvalidCharacter(b));
        }
        let mut parts = token.split('-');
        if parts.next() != Some(VERSION) {
            return Err(TokenError::UnsupportedVersion);
        }
        let mut fields = Vec::new();
        for part in parts {
            if part.is_empty() {
                return Err(TokenError::EmptyField);
            }
            let (key, value) = part.split_once(':').ok_or(TokenError::MissingColon)?;
            if key.is_empty() {
                return Err(TokenError::EmptyKey);
            }
            if key == "hash_algo" {
                return Err(TokenError::HashAlgo);
            }
            fields.push((key, value));
        }
        for field in Field::ALL {
            match fields.iter().filter(|(key, _)| *key == field.key()).count() {
                0 => return Err(TokenError::Missing(field)),
                1 => {}
                _ => return Err(TokenError::Duplicate(field)),
            }
        }
        // All four keys occur exactly once, so there are at least four fields.
        for (i, field) in [Field::Created, Field::Validity, Field::Hash]
            .into_iter()
            .enumerate()
        {
            if fields[i].0 != field.key() {
                return Err(TokenError::OutOfOrder(field));
            }
        }
        let created = number(Field::Created, fields[0].1)?;
        let validity = number(Field::Validity, fields[1].1)?;
        let hash = non_empty(Field::Hash, fields[2].1)?;
        let at = fields
            .iter()
            .position(|(key, _)| *key == Field::Secret.key())
            .ok_or(TokenError::Missing(Field::Secret))?;
        let secret = non_empty(Field::Secret, fields[at].1)?;
        let owned = |fields: &[(&str, &str)]| -> Vec<(String, String)> {
            fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        Ok(Token {
            created,
            validity,
            hash: hash.to_owned(),
            options: owned(&fields[3..at]),
            secret: secret.to_owned(),
            after_secret: owned(&fields[at + 1..]),
        })
    }

    /// The token as a string, byte for byte as parsed or issued.
    pub fn render(&self) -> String {
        let mut out = self.mac_prefix();
        out.push_str(&self.secret);
        push_fields(&mut out, &self.after_secret);
        out
    }

    /// Unix time the token was issued.
    pub fn created(&self) -> u64 {
        self.created
    }

    /// Seconds after `created` the token stays valid.
    pub fn validity(&self) -> u64 {
        self.validity
    }

    /// The pair hash the token is bound to.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// Other fields before the MAC, in order (covered by the MAC).
    pub fn options(&self) -> &[(String, String)] {
        &self.options
    }

    /// The MAC (the `secret` field), unpadded base64.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// Fields after the MAC, in order (covered by the MAC as its suffix; never issued).
    pub fn after_secret(&self) -> &[(String, String)] {
        &self.after_secret
    }

    /// [`check_time`] for this token.
    pub fn check_time(&self, now: u64) -> Result<(), VerifyError> {
        check_time(self.created, self.validity, now)
    }

    /// Everything up to and including `-secret:`, with room for the rest of the token.
    /// Built by hand rather than with `format!`: it runs twice for every token injected
    /// (MAC input, then the rendered field), once per visible recipient of every chat
    /// message.
    fn mac_prefix(&self) -> String {
        let extra = |fields: &[(String, String)]| -> usize {
            fields.iter().map(|(k, v)| k.len() + v.len() + 2).sum()
        };
        let mut out = String::with_capacity(
            TOKEN_LEN_WITHOUT_HASH
                + self.hash.len()
                + extra(&self.options)
                + self.secret.len().max(MAC_BASE64_LEN)
                + extra(&self.after_secret),
        );
        out.push_str(VERSION);
        for (field, number) in [
            (Field::Created, self.created),
            (Field::Validity, self.validity),
        ] {
            out.push('-');
            out.push_str(field.key());
            out.push(':');
            push_decimal(&mut out, number);
        }
        out.push('-');
        out.push_str(Field::Hash.key());
        out.push(':');
        out.push_str(&self.hash);
        push_fields(&mut out, &self.options);
        out.push_str(SECRET_MARKER);
        out
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render())
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("created", &self.created)
            .field("validity", &self.validity)
            .field("hash", &self.hash)
            .field("options", &self.options)
            .field("secret", &"<redacted>")
            .field("after_secret", &self.after_secret)
            .finish()
    }
}

/// Issues a token of `kind` with the first secret of that kind: `created` and `validity`
/// in seconds, `hash` from [`pair_hash`], `options` written in order before the MAC.
pub fn issue(
    kind: TokenKind,
    created: u64,
    validity: u64,
    hash: &str,
    options: &[(String, String)],
    secrets: &Secrets,
) -> Result<Token, IssueError> {
    let secret = secrets
        .of_kind(kind)
        .first()
        .ok_or(IssueError::NoSecret(kind))?;
    if created == 0 {
        return Err(TokenError::Zero(Field::Created).into());
    }
    if validity == 0 {
        return Err(TokenError::Zero(Field::Validity).into());
    }
    check_value(non_empty(Field::Hash, hash)?)?;
    for (key, value) in options {
        check_option(key, value)?;
    }
    let mut token = Token {
        created,
        validity,
        hash: hash.to_owned(),
        options: options.to_vec(),
        secret: String::new(),
        after_secret: Vec::new(),
    };
    let prefix = token.mac_prefix();
    STANDARD_NO_PAD.encode_string(mac(&prefix, "", secret), &mut token.secret);
    if prefix.len() + token.secret.len() > MAX_TOKEN_LEN {
        return Err(TokenError::TooLong.into());
    }
    Ok(token)
}

// --- verify path: MAC and pair compared only with `ct_eq` (SECURITY-CASES case 48; checked by tests::verify_path_is_constant_time) ---

/// Verifies a token presented for the pair `expected_hash` ([`pair_hash`] of the envelope)
/// at unix time `now`: its MAC against every temporary, then every permanent secret, its
/// pair, its time. A permanent token must in addition be found in the recipient's
/// Contacts; that is the caller's check.
pub fn verify(
    token: &str,
    expected_hash: &str,
    now: u64,
    secrets: &Secrets,
) -> Result<TokenKind, VerifyError> {
    let parsed = Token::parse(token)?;
    let kind = matching_secret(token, secrets).ok_or(VerifyError::SecretNotValid)?;
    if !bool::from(parsed.hash.as_bytes().ct_eq(expected_hash.as_bytes())) {
        return Err(VerifyError::WrongPair);
    }
    parsed.check_time(now)?;
    Ok(kind)
}

/// Dovecot's `coi_secret_verify` on the token as received: the MAC runs from the first
/// `-secret:` to the next `-`, and must be base64 of exactly 32 bytes.
fn matching_secret(token: &str, secrets: &Secrets) -> Option<TokenKind> {
    let start = token.find(SECRET_MARKER)? + SECRET_MARKER.len();
    let (prefix, rest) = token.split_at(start);
    let (given, suffix) = rest.split_at(rest.find('-').unwrap_or(rest.len()));
    let given = STANDARD_NO_PAD.decode(given).ok()?;
    let given = <[u8; MAC_LEN]>::try_from(given.as_slice()).ok()?;
    for kind in [TokenKind::Temporary, TokenKind::Permanent] {
        for secret in secrets.of_kind(kind) {
            if bool::from(mac(prefix, suffix, secret)[..].ct_eq(&given[..])) {
                return Some(kind);
            }
        }
    }
    None
}

// --- end of verify path ---

/// The time rule (COI-PROTOCOL §4.6): created at most [`MAX_CLOCK_SKEW`] in the future,
/// else `now - created <= validity`; boundaries inclusive. Total for every input: no
/// overflow, whatever the clock says (SECURITY-CASES case 65).
pub fn check_time(created: u64, validity: u64, now: u64) -> Result<(), VerifyError> {
    match now.checked_sub(created) {
        Some(age) if age <= validity => Ok(()),
        Some(_) => Err(VerifyError::Expired),
        None => match created.checked_sub(now) {
            Some(ahead) if ahead <= MAX_CLOCK_SKEW => Ok(()),
            _ => Err(VerifyError::CreatedInFuture),
        },
    }
}

/// Fuzz body (`coi_token`): parsing never panics and a parsed token renders back to its
/// input; re-issuing its fields verifies; `verify` never panics and only succeeds on a
/// token that parses.
#[doc(hidden)]
pub fn fuzz_token(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let secrets = fuzz_secrets();
    let parsed = Token::parse(&text);
    if let Ok(token) = &parsed {
        assert_eq!(token.render(), text, "a token renders as it was read");
        assert_eq!(Token::parse(&token.render()).as_ref(), Ok(token));
        assert!(token.created() > 0 && token.validity() > 0);
        for kind in [TokenKind::Temporary, TokenKind::Permanent] {
            let issued = issue(
                kind,
                token.created(),
                token.validity(),
                token.hash(),
                token.options(),
                &secrets,
            );
            match issued {
                Ok(issued) => {
                    let rendered = issued.render();
                    assert_eq!(Token::parse(&rendered).as_ref(), Ok(&issued));
                    assert_eq!(
                        verify(&rendered, token.hash(), token.created(), &secrets),
                        Ok(kind)
                    );
                }
                Err(e) => assert_eq!(e, IssueError::Invalid(TokenError::TooLong)),
            }
        }
    }
    let hash = parsed.as_ref().map_or("", |t| t.hash());
    for now in [0, 1, 1_577_836_800, u64::MAX - MAX_CLOCK_SKEW, u64::MAX] {
        match verify(&text, hash, now, &secrets) {
            Err(VerifyError::Malformed(e)) => assert_eq!(parsed.as_ref().err(), Some(&e)),
            Ok(_) | Err(_) => assert!(parsed.is_ok()),
        }
    }
}

/// The secrets of COI-PROTOCOL §6.3, so that the vectors verify in the fuzzer too.
fn fuzz_secrets() -> Secrets {
    let secret = |s: &str| Secret::new(s).expect("non-empty literal");
    Secrets {
        temporary: vec![secret("tmp-secret-A")],
        permanent: vec![secret("perm-secret-1"), secret("alice-server-perm")],
    }
}

// === helpers ===

fn sha3_base64(parts: &[&[u8]]) -> String {
    let mut hasher = Sha3_256::new();
    for part in parts {
        hasher.update(part);
    }
    STANDARD_NO_PAD.encode(hasher.finalize())
}

/// `SHA3-256(prefix ‖ suffix ‖ secret)` (Dovecot's secret-suffix MAC).
fn mac(prefix: &str, suffix: &str, secret: &Secret) -> [u8; MAC_LEN] {
    Sha3_256::new()
        .chain_update(prefix)
        .chain_update(suffix)
        .chain_update(&secret.0)
        .finalize()
        .into()
}

/// Printable ASCII without space.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_graphic()
}

/// `n` in decimal, as `Display` writes it.
fn push_decimal(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend(digits[at..].iter().map(|&d| char::from(d)));
}

fn push_fields(out: &mut String, fields: &[(String, String)]) {
    for (key, value) in fields {
        out.push('-');
        out.push_str(key);
        out.push(':');
        out.push_str(value);
    }
}

/// `number` of a required field: a canonical decimal `u64` (digits only, no leading
/// zero, so that it renders back the same) above 0.
fn number(field: Field, value: &str) -> Result<u64, TokenError> {
    let canonical = !value.is_empty()
        && value.bytes().all(|b| b.is_ascii_digit())
        && (value.len() == 1 || !value.starts_with('0'));
    if !canonical {
        return Err(TokenError::InvalidNumber(field));
    }
    match value.parse::<u64>() {
        Ok(0) => Err(TokenError::Zero(field)),
        Ok(n) => Ok(n),
        Err(_) => Err(TokenError::InvalidNumber(field)),
    }
}

fn non_empty(field: Field, value: &str) -> Result<&str, TokenError> {
    if value.is_empty() {
        return Err(TokenError::Empty(field));
    }
    Ok(value)
}

/// A value [`issue`] writes must read back as the same value.
fn check_value(value: &str) -> Result<(), TokenError> {
    match value.bytes().find(|&b| !is_token_byte(b) || b == b'-') {
        Some(b) => Err(TokenError::InvalidCharacter(b)),
        None => Ok(()),
    }
}

fn check_option(key: &str, value: &str) -> Result<(), TokenError> {
    if key.is_empty() {
        return Err(TokenError::EmptyKey);
    }
    if let Some(b) = key.bytes().find(|&b| b == b':') {
        return Err(TokenError::InvalidCharacter(b));
    }
    check_value(key)?;
    check_value(value)?;
    if key == "hash_algo" {
        return Err(TokenError::HashAlgo);
    }
    match Field::from_key(key) {
        Some(field) => Err(TokenError::Duplicate(field)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coi::address::normalize;

    const V1: &str = "1-created:1577836800-validity:31536000-hash:TdHUhOQ7ODVMjIHvrButNUNYwPWiGb8maGg8jKuFw4k-secret:2gOGPjhKTwAic/FIxxsRdCBo21SGgbte4D004oIXHRY";
    const V2: &str = "1-created:1700000000-validity:604800-hash:6qBSL/BDAMqGoyZDH0YGEaqrnJSKSS5dyE0VQV1IK1Y-secret:FDxDsgidfPeiiYBAL0o1Wld7xiZ0BYHDPQa4IZVDR0U";
    const V3: &str = "1-created:1577836800-validity:86400-hash:TdHUhOQ7ODVMjIHvrButNUNYwPWiGb8maGg8jKuFw4k-foo:bar-secret:Uf+wB89kwar+RYl9pfrXiF3RddunotNrCtmYTTqGUpU";
    const V4: &str = "1-created:1577836800-validity:86400-hash:TdHUhOQ7ODVMjIHvrButNUNYwPWiGb8maGg8jKuFw4k-secret:0rzKGbw4JVSnMkyqhqeE+wV4c+P+jg6Qv/2ubglDhtQ-x:y";
    const V5: &str = "1-created:1577836800-validity:31536000-hash:Wjt8eq0Za1LhDTH9RyH4c0FwwHOrYmd0rR5WdYzkaM0-secret:Qv0///JjJ2OY84N7VS+rs8OWlqiMt3KwRBm5v6aFjPw";
    const JAN_2020: u64 = 1_577_836_800;

    fn addr(path: &str) -> NormalizedAddress {
        normalize(path).unwrap()
    }

    fn secret(s: &str) -> Secret {
        Secret::new(s).unwrap()
    }

    fn secrets(temporary: &[&str], permanent: &[&str]) -> Secrets {
        Secrets {
            temporary: temporary.iter().map(|s| secret(s)).collect(),
            permanent: permanent.iter().map(|s| secret(s)).collect(),
        }
    }

    fn sha3_hex(input: &str) -> String {
        Sha3_256::digest(input.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn v1_hash() -> String {
        pair_hash(Some(&addr("Alice@Example.ORG")), &addr("bob@example.net"))
    }

    #[test]
    fn hash_vectors_6_2() {
        let alice = addr("alice@example.org");
        let bob = addr("bob@example.net");
        let expected_hex = "4dd1d484e43b38354c8c81efac1bad354358c0f5a219bf2668683c8cab85c389";
        assert_eq!(sha3_hex("alice@example.org:bob@example.net"), expected_hex);
        let rows: [(String, &str); 10] = [
            (
                pair_hash(Some(&alice), &bob),
                "TdHUhOQ7ODVMjIHvrButNUNYwPWiGb8maGg8jKuFw4k",
            ),
            (
                pair_hash(Some(&bob), &alice),
                "Wjt8eq0Za1LhDTH9RyH4c0FwwHOrYmd0rR5WdYzkaM0",
            ),
            (
                pair_hash(Some(&alice), &addr("bob+chat@example.net")),
                "z0Ieg+SW4UlbtZWw3y0z3nbDvJ48cnn07OipJM571j8",
            ),
            (
                pair_hash(
                    Some(&addr("Carol@Mail.Example")),
                    &addr("Dave.Smith@Chat.Example"),
                ),
                "6qBSL/BDAMqGoyZDH0YGEaqrnJSKSS5dyE0VQV1IK1Y",
            ),
            (
                pair_hash(None, &bob),
                "AQnZOrZJ1hlSYszuYfrS5fcWHgGXYDWp+iFsP5/GJI8",
            ),
            (
                address_hash(&alice),
                "xAxnjQtFYigt1naoByWwAO7dWeb9GovCTXN2GOWdHyM",
            ),
            (
                address_hash(&bob),
                "962jWz/2TwJEdJChAU0MvqkL4hf9R9F6MPLlVOImikk",
            ),
            (
                address_hash(&addr("john.doe@coi-dev.org")),
                "dLPERsGJWABFqUK5C3RhEovDNLO2fp9jwMBhiSSMm7A",
            ),
            (
                address_hash(&addr("john.doe@example.com")),
                "g00WVBMzZs702B6BpwmfQTsbhbn8ndYhQEkTA97FZTI",
            ),
            (
                address_hash(&addr("\"John Doe\"@Example.com")),
                "PUV5jGnUXSq5tcmFihJwWZPIq9S16p3g4t1lwE6V7Xk",
            ),
        ];
        for (computed, expected) in &rows {
            assert_eq!(computed, expected);
            assert_eq!(computed.len(), 43);
        }
        assert_ne!(rows[0].0, rows[2].0);
        for (input, hex) in [
            (
                "alice@example.org",
                "c40c678d0b4562282dd676a80725b000eedd59e6fd1a8bc24d737618e59d1f23",
            ),
            (
                "john.doe@coi-dev.org",
                "74b3c446c189580045a942b90b7461128bc334b3b67e9f63c0c06189248c9bb0",
            ),
            (
                "john.doe@example.com",
                "834d1654133366cef4d81e81a7099f413b1b85b9fc9dd62140491303dec56532",
            ),
            (
                "\"john doe\"@example.com",
                "3d45798c69d45d2ab9b5c9858a12705993c8abd4b5ea9de0e2dd65c04e95ed79",
            ),
        ] {
            assert_eq!(sha3_hex(input), hex, "{input}");
        }
        // Both spellings of the null sender hash alike.
        let null = crate::coi::address::normalize_reverse_path("<>").unwrap();
        assert_eq!(pair_hash(null.as_ref(), &bob), rows[4].0);
    }

    #[test]
    fn v1_permanent() {
        let hash = v1_hash();
        let mac_input =
            format!("1-created:1577836800-validity:31536000-hash:{hash}-secret:perm-secret-1");
        assert_eq!(
            sha3_hex(&mac_input),
            "da03863e384a4f002273f148c71b11742068db548681bb5ee03d34e282171d16"
        );
        let keys = secrets(&["tmp-x"], &["perm-secret-1"]);
        let token = issue(
            TokenKind::Permanent,
            JAN_2020,
            31_536_000,
            &hash,
            &[],
            &keys,
        )
        .unwrap();
        assert_eq!(token.render(), V1);
        assert_eq!(Token::parse(V1), Ok(token));
        assert_eq!(verify(V1, &hash, JAN_2020, &keys), Ok(TokenKind::Permanent));
        assert_eq!(
            verify(V1, &hash, JAN_2020, &secrets(&[], &["nope"])),
            Err(VerifyError::SecretNotValid)
        );
        assert_eq!(
            verify(V1, &hash, JAN_2020, &secrets(&["nope"], &[])),
            Err(VerifyError::SecretNotValid)
        );
        let other = pair_hash(
            Some(&addr("Alice@Example.ORG")),
            &addr("bob+chat@example.net"),
        );
        assert_eq!(
            verify(V1, &other, JAN_2020, &keys),
            Err(VerifyError::WrongPair)
        );
        // The Dovecot cross-check: `doveadm coi token verify --secret perm-secret-1 --time
        // 1577836800` with the pair alice@example.org, bob@example.net.
        assert_eq!(
            verify(V1, &hash, JAN_2020, &secrets(&[], &["perm-secret-1"])),
            Ok(TokenKind::Permanent)
        );
    }

    #[test]
    fn v2_temporary() {
        let hash = pair_hash(
            Some(&addr("Carol@Mail.Example")),
            &addr("Dave.Smith@Chat.Example"),
        );
        let keys = secrets(&["tmp-secret-A"], &[]);
        let token = issue(
            TokenKind::Temporary,
            1_700_000_000,
            604_800,
            &hash,
            &[],
            &keys,
        )
        .unwrap();
        assert_eq!(token.render(), V2);
        assert_eq!(
            verify(V2, &hash, 1_700_300_000, &keys),
            Ok(TokenKind::Temporary)
        );
        assert_eq!(
            verify(V2, &hash, 1_700_604_800, &keys),
            Ok(TokenKind::Temporary)
        );
        assert_eq!(
            verify(V2, &hash, 1_700_604_801, &keys),
            Err(VerifyError::Expired)
        );
    }

    #[test]
    fn v3_option_before_the_secret() {
        let hash = v1_hash();
        let keys = secrets(&[], &["perm-secret-1"]);
        let options = [("foo".to_owned(), "bar".to_owned())];
        let token = issue(
            TokenKind::Permanent,
            JAN_2020,
            86_400,
            &hash,
            &options,
            &keys,
        )
        .unwrap();
        assert_eq!(token.render(), V3);
        let parsed = Token::parse(V3).unwrap();
        assert_eq!(parsed.options(), &options);
        assert_eq!(parsed.render(), V3);
        assert_eq!(verify(V3, &hash, JAN_2020, &keys), Ok(TokenKind::Permanent));
        // The option is covered by the MAC.
        let dropped = V3.replace("-foo:bar", "");
        assert_eq!(
            verify(&dropped, &hash, JAN_2020, &keys),
            Err(VerifyError::SecretNotValid)
        );
    }

    #[test]
    fn v4_field_after_the_secret() {
        let hash = v1_hash();
        let keys = secrets(&[], &["perm-secret-1"]);
        let parsed = Token::parse(V4).unwrap();
        assert_eq!(parsed.after_secret(), &[("x".to_owned(), "y".to_owned())]);
        assert!(parsed.options().is_empty());
        assert_eq!(parsed.render(), V4);
        assert_eq!(
            sha3_base64(&[format!(
                "1-created:1577836800-validity:86400-hash:{hash}-secret:-x:yperm-secret-1"
            )
            .as_bytes()]),
            parsed.secret()
        );
        assert_eq!(verify(V4, &hash, JAN_2020, &keys), Ok(TokenKind::Permanent));
        // The suffix is covered: dropping it, or moving it before the secret, breaks the MAC.
        let without = V4.strip_suffix("-x:y").unwrap();
        assert_eq!(
            verify(without, &hash, JAN_2020, &keys),
            Err(VerifyError::SecretNotValid)
        );
        let moved = V4
            .replace("-secret:", "-x:y-secret:")
            .strip_suffix("-x:y")
            .unwrap()
            .to_owned();
        assert_eq!(
            verify(&moved, &hash, JAN_2020, &keys),
            Err(VerifyError::SecretNotValid)
        );
    }

    #[test]
    fn v5_reverse_direction() {
        let hash = pair_hash(Some(&addr("bob@example.net")), &addr("alice@example.org"));
        let keys = secrets(&[], &["alice-server-perm"]);
        let token = issue(
            TokenKind::Permanent,
            JAN_2020,
            31_536_000,
            &hash,
            &[],
            &keys,
        )
        .unwrap();
        assert_eq!(token.render(), V5);
        assert_eq!(verify(V5, &hash, JAN_2020, &keys), Ok(TokenKind::Permanent));
        // Bound to bob -> alice, not to alice -> bob.
        assert_eq!(
            verify(V5, &v1_hash(), JAN_2020, &keys),
            Err(VerifyError::WrongPair)
        );
    }

    #[test]
    fn v6_validity_boundaries() {
        let (created, validity) = (JAN_2020, 86_400);
        assert_eq!(check_time(created, validity, 1_577_923_200), Ok(()));
        assert_eq!(
            check_time(created, validity, 1_577_923_201),
            Err(VerifyError::Expired)
        );
        assert_eq!(check_time(created, validity, 1_577_750_400), Ok(()));
        assert_eq!(
            check_time(created, validity, 1_577_750_399),
            Err(VerifyError::CreatedInFuture)
        );
        assert_eq!(check_time(created, validity, created), Ok(()));
        // Through verify, with V3 (same created and validity).
        let hash = v1_hash();
        let keys = secrets(&[], &["perm-secret-1"]);
        assert!(verify(V3, &hash, 1_577_923_200, &keys).is_ok());
        assert_eq!(
            verify(V3, &hash, 1_577_923_201, &keys),
            Err(VerifyError::Expired)
        );
        assert!(verify(V3, &hash, 1_577_750_400, &keys).is_ok());
        assert_eq!(
            verify(V3, &hash, 1_577_750_399, &keys),
            Err(VerifyError::CreatedInFuture)
        );
    }

    #[test]
    fn decimals_are_written_as_display_writes_them() {
        for n in [0, 1, 9, 10, 99, 100, 1_767_225_600, u64::MAX / 10, u64::MAX] {
            let mut out = String::from("x");
            push_decimal(&mut out, n);
            assert_eq!(out, format!("x{n}"));
        }
    }

    #[test]
    fn absurd_times_do_not_overflow() {
        assert_eq!(
            check_time(u64::MAX, u64::MAX, 0),
            Err(VerifyError::CreatedInFuture)
        );
        assert_eq!(check_time(u64::MAX, 1, u64::MAX - MAX_CLOCK_SKEW), Ok(()));
        assert_eq!(check_time(1, u64::MAX, u64::MAX), Ok(()));
        assert_eq!(
            check_time(1, u64::MAX - 2, u64::MAX),
            Err(VerifyError::Expired)
        );
        assert_eq!(check_time(1, 1, 0), Ok(()));
        assert_eq!(check_time(u64::MAX, u64::MAX, u64::MAX), Ok(()));
        // A clock jump back by a day and a second makes a fresh token "future".
        assert_eq!(
            check_time(JAN_2020, 86_400, JAN_2020 - MAX_CLOCK_SKEW - 1),
            Err(VerifyError::CreatedInFuture)
        );
        let token = format!(
            "1-created:{}-validity:{}-hash:h-secret:s",
            u64::MAX,
            u64::MAX
        );
        assert!(Token::parse(&token).is_ok());
        let overflow = format!("1-created:{}0-validity:1-hash:h-secret:s", u64::MAX);
        assert_eq!(
            Token::parse(&overflow),
            Err(TokenError::InvalidNumber(Field::Created))
        );
    }

    #[test]
    fn v7_negative_parse_cases() {
        use Field::*;
        use TokenError::*;
        let fixed: &[(&str, TokenError)] = &[
            ("2-created:1-validity:1-hash:h-secret:s", UnsupportedVersion),
            (
                "10-created:1-validity:1-hash:h-secret:s",
                UnsupportedVersion,
            ),
            ("", UnsupportedVersion),
            ("1", Missing(Created)),
            (
                "1-hash_algo:sha3-created:1-validity:1-hash:h-secret:s",
                HashAlgo,
            ),
            ("1-validity:1-hash:h-secret:s", Missing(Created)),
            ("1-created:1-hash:h-secret:s", Missing(Validity)),
            ("1-created:1-validity:1-secret:s", Missing(Hash)),
            ("1-created:1-validity:1-hash:h", Missing(Secret)),
            ("1-created:1-validity:0-hash:h-secret:s", Zero(Validity)),
            ("1-created:0-validity:1-hash:h-secret:s", Zero(Created)),
            (
                "1-created:1-validity:01-hash:h-secret:s",
                InvalidNumber(Validity),
            ),
            (
                "1-created:x-validity:1-hash:h-secret:s",
                InvalidNumber(Created),
            ),
            (
                "1-created:+1-validity:1-hash:h-secret:s",
                InvalidNumber(Created),
            ),
            (
                "1-created:-validity:1-hash:h-secret:s",
                InvalidNumber(Created),
            ),
            ("1-created:1-validity:-1-hash:h-secret:s", MissingColon),
            ("1-created:1-validity:1-hash:-secret:s", Empty(Hash)),
            ("1-created:1-validity:1-hash:h-secret:", Empty(Secret)),
            ("1-created:1-validity:1-hash:h-secret", MissingColon),
            ("1-created:1-validity:1-hash:h-secret:s-", EmptyField),
            ("1-created:1-validity:1-hash:h--secret:s", EmptyField),
            ("1-created:1-validity:1-hash:h-:v-secret:s", EmptyKey),
            (
                "1-created:1-validity:1-hash:h-hash:i-secret:s",
                Duplicate(Hash),
            ),
            (
                "1-created:1-validity:1-hash:h-secret:s-secret:t",
                Duplicate(Secret),
            ),
            (
                "1-validity:1-created:1-hash:h-secret:s",
                OutOfOrder(Created),
            ),
            (
                "1-created:1-hash:h-validity:1-secret:s",
                OutOfOrder(Validity),
            ),
            (
                "1-created:1-validity:1-foo:bar-hash:h-secret:s",
                OutOfOrder(Hash),
            ),
            (
                "1-created:1-validity:1-hash:h-secret:s\r\n",
                InvalidCharacter(b'\r'),
            ),
            (
                "1-created:1-validity:1-hash:h\n-secret:s",
                InvalidCharacter(b'\n'),
            ),
            (
                "1-created:1-validity:1-hash:h h-secret:s",
                InvalidCharacter(b' '),
            ),
            (
                "1-created:1-validity:1-hash:\u{e9}-secret:s",
                InvalidCharacter(0xc3),
            ),
        ];
        let built = [
            (V1.replacen('1', "2", 1), UnsupportedVersion),
            (
                V1.replace("-secret:", "-hash_algo:sha3-256-secret:"),
                HashAlgo,
            ),
            (format!("{V1}{}", "-a:b".repeat(250)), TooLong),
        ];
        let cases = fixed
            .iter()
            .map(|(input, error)| ((*input).to_owned(), *error))
            .chain(built);
        let keys = secrets(&[], &["perm-secret-1"]);
        for (input, error) in cases {
            assert_eq!(Token::parse(&input), Err(error), "{input:?}");
            assert_eq!(
                verify(&input, &v1_hash(), JAN_2020, &keys),
                Err(VerifyError::Malformed(error)),
                "{input:?}"
            );
        }
        assert_eq!(Missing(Validity).to_string(), "Missing validity");
        assert_eq!(HashAlgo.to_string(), "Unsupported hash_algo");
    }

    #[test]
    fn issue_refuses_what_it_cannot_write() {
        let keys = secrets(&["t"], &["p"]);
        let opt = |k: &str, v: &str| vec![(k.to_owned(), v.to_owned())];
        let issue_with = |hash: &str, options: &[(String, String)]| {
            issue(TokenKind::Temporary, JAN_2020, 1, hash, options, &keys)
        };
        assert!(issue_with("h", &opt("k", "v:w")).is_ok());
        assert!(issue_with("h", &opt("k", "")).is_ok());
        let invalid = |e| Err(IssueError::Invalid(e));
        assert_eq!(issue_with("", &[]), invalid(TokenError::Empty(Field::Hash)));
        assert_eq!(
            issue_with("a-b", &[]),
            invalid(TokenError::InvalidCharacter(b'-'))
        );
        assert_eq!(
            issue_with("h", &opt("k", "a-b")),
            invalid(TokenError::InvalidCharacter(b'-'))
        );
        assert_eq!(
            issue_with("h", &opt("k", "a\r\nb")),
            invalid(TokenError::InvalidCharacter(b'\r'))
        );
        assert_eq!(
            issue_with("h", &opt("k:x", "v")),
            invalid(TokenError::InvalidCharacter(b':'))
        );
        assert_eq!(
            issue_with("h", &opt("", "v")),
            invalid(TokenError::EmptyKey)
        );
        assert_eq!(
            issue_with("h", &opt("hash_algo", "sha3-256")),
            invalid(TokenError::InvalidCharacter(b'-'))
        );
        assert_eq!(
            issue_with("h", &opt("hash_algo", "sha3")),
            invalid(TokenError::HashAlgo)
        );
        assert_eq!(
            issue_with("h", &opt("secret", "x")),
            invalid(TokenError::Duplicate(Field::Secret))
        );
        assert_eq!(
            issue_with("h", &opt("k", &"v".repeat(MAX_TOKEN_LEN))),
            invalid(TokenError::TooLong)
        );
        assert_eq!(
            issue(TokenKind::Temporary, 0, 1, "h", &[], &keys),
            invalid(TokenError::Zero(Field::Created))
        );
        assert_eq!(
            issue(TokenKind::Temporary, 1, 0, "h", &[], &keys),
            invalid(TokenError::Zero(Field::Validity))
        );
        assert_eq!(
            issue(TokenKind::Permanent, 1, 1, "h", &[], &secrets(&["t"], &[])),
            Err(IssueError::NoSecret(TokenKind::Permanent))
        );
        // Never hash_algo.
        let token = issue(TokenKind::Permanent, 1, 1, "h", &opt("a", "b"), &keys).unwrap();
        assert!(!token.render().contains("hash_algo"));
    }

    #[test]
    fn kinds_and_rotation() {
        let hash = v1_hash();
        let old = secrets(&["tmp-old"], &["perm-old"]);
        let temporary = issue(TokenKind::Temporary, JAN_2020, 600, &hash, &[], &old).unwrap();
        let permanent = issue(TokenKind::Permanent, JAN_2020, 600, &hash, &[], &old).unwrap();
        assert_ne!(temporary.secret(), permanent.secret());
        assert_eq!(
            verify(&temporary.render(), &hash, JAN_2020, &old),
            Ok(TokenKind::Temporary)
        );
        assert_eq!(
            verify(&permanent.render(), &hash, JAN_2020, &old),
            Ok(TokenKind::Permanent)
        );
        // A permanent secret never turns into a temporary acceptance and vice versa.
        let swapped = secrets(&["perm-old"], &["tmp-old"]);
        assert_eq!(
            verify(&permanent.render(), &hash, JAN_2020, &swapped),
            Ok(TokenKind::Temporary)
        );
        let only_temporary = secrets(&["tmp-old"], &[]);
        assert_eq!(
            verify(&permanent.render(), &hash, JAN_2020, &only_temporary),
            Err(VerifyError::SecretNotValid)
        );

        // Rotation: a new secret is prepended, the old one kept.
        let rotated = secrets(&["tmp-new", "tmp-old"], &["perm-new", "perm-old"]);
        assert_eq!(
            verify(&temporary.render(), &hash, JAN_2020, &rotated),
            Ok(TokenKind::Temporary)
        );
        assert_eq!(
            verify(&permanent.render(), &hash, JAN_2020, &rotated),
            Ok(TokenKind::Permanent)
        );
        let fresh = issue(TokenKind::Permanent, JAN_2020, 600, &hash, &[], &rotated).unwrap();
        assert_eq!(
            verify(
                &fresh.render(),
                &hash,
                JAN_2020,
                &secrets(&[], &["perm-new"])
            ),
            Ok(TokenKind::Permanent)
        );
        assert_eq!(
            verify(&fresh.render(), &hash, JAN_2020, &old),
            Err(VerifyError::SecretNotValid)
        );
        // After the old secret is dropped, old tokens fail.
        let dropped = secrets(&["tmp-new"], &["perm-new"]);
        assert_eq!(
            verify(&permanent.render(), &hash, JAN_2020, &dropped),
            Err(VerifyError::SecretNotValid)
        );
    }

    #[test]
    fn replay_on_other_pairs_and_times() {
        // SECURITY-CASES case 47: minted for A -> B, presented on A -> C, C -> B, B -> A.
        let (a, b, c) = (
            addr("a@a.example"),
            addr("b@b.example"),
            addr("c@c.example"),
        );
        let keys = secrets(&["t"], &[]);
        let token = issue(
            TokenKind::Temporary,
            JAN_2020,
            3600,
            &pair_hash(Some(&a), &b),
            &[],
            &keys,
        )
        .unwrap()
        .render();
        let at = |from: &NormalizedAddress, to: &NormalizedAddress, now| {
            verify(&token, &pair_hash(Some(from), to), now, &keys)
        };
        assert_eq!(at(&a, &b, JAN_2020), Ok(TokenKind::Temporary));
        assert_eq!(at(&a, &c, JAN_2020), Err(VerifyError::WrongPair));
        assert_eq!(at(&c, &b, JAN_2020), Err(VerifyError::WrongPair));
        assert_eq!(at(&b, &a, JAN_2020), Err(VerifyError::WrongPair));
        assert_eq!(
            verify(&token, &pair_hash(None, &b), JAN_2020, &keys),
            Err(VerifyError::WrongPair)
        );
        assert_eq!(at(&a, &b, JAN_2020 + 3601), Err(VerifyError::Expired));
        assert_eq!(at(&a, &b, JAN_2020 - 86_400), Ok(TokenKind::Temporary));
        assert_eq!(
            at(&a, &b, JAN_2020 - 86_401),
            Err(VerifyError::CreatedInFuture)
        );
    }

    #[test]
    fn mac_must_be_canonical_base64_of_32_bytes() {
        let hash = v1_hash();
        let keys = secrets(&[], &["perm-secret-1"]);
        let mac = V1.rsplit_once(':').unwrap().1;
        for bad in [
            format!("{mac}="),
            format!("{mac}A"),
            mac[..42].to_owned(),
            // Same first 42 characters, different trailing bits: another encoding of
            // nearly the same bytes, refused rather than decoded loosely.
            format!("{}Z", &mac[..42]),
            "*".repeat(43),
        ] {
            let token = format!("{}{bad}", V1.strip_suffix(mac).unwrap());
            assert_eq!(
                verify(&token, &hash, JAN_2020, &keys),
                Err(VerifyError::SecretNotValid),
                "{token}"
            );
        }
    }

    #[test]
    fn every_single_byte_change_fails_verification() {
        let keys = secrets(&["tmp-secret-A"], &["perm-secret-1"]);
        for (token, hash, now) in [
            (V1, v1_hash(), JAN_2020),
            (V3, v1_hash(), JAN_2020),
            (V4, v1_hash(), JAN_2020),
        ] {
            assert!(verify(token, &hash, now, &keys).is_ok());
            assert_tamper_fails(token, &hash, now, &keys);
        }
    }

    /// Replaces each byte of `token` in turn with several other characters; none of the
    /// results may verify.
    fn assert_tamper_fails(token: &str, hash: &str, now: u64, keys: &Secrets) {
        let bytes = token.as_bytes();
        for i in 0..bytes.len() {
            for replacement in [b'A', b'a', b'0', b'9', b'-', b':', b'+', b'/', b'x'] {
                let replacement = if replacement == bytes[i] {
                    bytes[i] ^ 1
                } else {
                    replacement
                };
                let mut tampered = bytes.to_vec();
                tampered[i] = replacement;
                let tampered = String::from_utf8(tampered).unwrap();
                assert!(
                    verify(&tampered, hash, now, keys).is_err(),
                    "{tampered} still verifies"
                );
            }
        }
    }

    #[test]
    fn debug_output_hides_secrets_and_macs() {
        let keys = secrets(&["tmp-secret-A"], &["perm-secret-1"]);
        let shown = format!("{keys:?}");
        assert!(!shown.contains("tmp-secret-A") && !shown.contains("perm-secret-1"));
        assert!(shown.contains("<redacted>"));
        let token = Token::parse(V1).unwrap();
        let shown = format!("{token:?}");
        assert!(!shown.contains(token.secret()));
        assert!(shown.contains("TdHUhOQ7ODVMjIHvrButNUNYwPWiGb8maGg8jKuFw4k"));
        assert!(matches!(Secret::new(""), Err(EmptySecret)));
    }

    #[test]
    fn verify_path_is_constant_time() {
        // SECURITY-CASES case 48: the MAC and the pair are compared with `ct_eq` only.
        let source = include_str!("token.rs");
        let start = source.find("// --- verify path").expect("start marker");
        let end = start
            + source[start..]
                .find("// --- end of verify path ---")
                .expect("end marker");
        let section = &source[start..end];
        assert!(section.contains("pub fn verify("));
        assert!(section.contains("fn matching_secret("));
        assert_eq!(section.matches(".ct_eq(").count(), 2, "{section}");
        for forbidden in [
            "==",
            "!=",
            ".eq(",
            ".ne(",
            "memcmp",
            "starts_with",
            "assert",
        ] {
            assert!(
                !section.contains(forbidden),
                "`{forbidden}` in the verify path"
            );
        }
    }

    #[test]
    fn fuzz_body_accepts_the_vectors() {
        for input in [
            V1,
            V2,
            V3,
            V4,
            V5,
            "",
            "1",
            "1-created:1-validity:1-hash:h-secret:s",
        ] {
            fuzz_token(input.as_bytes());
        }
        fuzz_token(b"\xff1-created");
    }

    fn token_strategy() -> impl proptest::strategy::Strategy<Value = Token> {
        use proptest::prelude::*;
        let field = "[!-,.-9;-~]{1,6}";
        let value = "[!-,.-~]{0,8}";
        (
            1..=u64::MAX,
            1..=u64::MAX,
            "[A-Za-z0-9+/]{1,43}",
            proptest::collection::vec((field, value), 0..3),
            "[A-Za-z0-9+/]{1,43}",
            proptest::collection::vec((field, value), 0..3),
        )
            .prop_filter(
                "known keys are not options",
                |(_, _, _, before, _, after)| {
                    before
                        .iter()
                        .chain(after)
                        .all(|(k, _)| Field::from_key(k).is_none() && k != "hash_algo")
                },
            )
            .prop_map(
                |(created, validity, hash, options, secret, after_secret)| Token {
                    created,
                    validity,
                    hash,
                    options,
                    secret,
                    after_secret,
                },
            )
    }

    proptest::proptest! {
        #[test]
        fn render_parse_round_trip(token in token_strategy()) {
            let rendered = token.render();
            proptest::prop_assert_eq!(Token::parse(&rendered), Ok(token));
            fuzz_token(rendered.as_bytes());
        }

        #[test]
        fn parse_and_verify_never_panic(input in "[-:0-9a-z/+=\r\n ]{0,80}") {
            fuzz_token(input.as_bytes());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            fuzz_token(&bytes);
        }
    }

    proptest::proptest! {
        // Each case verifies every one-byte change of a token (~2,000 verifications).
        #![proptest_config(proptest::test_runner::Config::with_cases(24))]

        #[test]
        fn issued_tokens_verify_and_tampering_fails(
            token in token_strategy(),
            permanent in proptest::bool::ANY,
            now_offset in 0..=86_400u64,
        ) {
            let kind = if permanent { TokenKind::Permanent } else { TokenKind::Temporary };
            let keys = secrets(&["tmp-secret-A"], &["perm-secret-1"]);
            let issued = issue(kind, token.created, token.validity, &token.hash, &token.options, &keys).unwrap();
            let rendered = issued.render();
            let now = token.created.saturating_add(now_offset.min(token.validity));
            proptest::prop_assert_eq!(verify(&rendered, &token.hash, now, &keys), Ok(kind));
            assert_tamper_fails(&rendered, &token.hash, now, &keys);
        }

    }
}
