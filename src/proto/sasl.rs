//! Who a SASL exchange authenticates as, read from the client's first response
//! (RFC 4616 PLAIN, the LOGIN draft), so that the submission front knows the user once
//! the backend has said 235. The proxy never checks a password itself: this only names
//! the identity the backend verified.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

/// Longest identity accepted, in octets: RFC 4616 allows 255 per field; longer is not a
/// mail user.
pub const MAX_IDENTITY: usize = 255;

/// The SASL mechanisms whose identity can be read (the submission front offers only
/// these).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    Login,
}

impl Mechanism {
    /// The mechanism of an `AUTH` command, case-insensitive; `None` for any other.
    pub fn from_name(name: &str) -> Option<Mechanism> {
        if name.eq_ignore_ascii_case("PLAIN") {
            Some(Mechanism::Plain)
        } else if name.eq_ignore_ascii_case("LOGIN") {
            Some(Mechanism::Login)
        } else {
            None
        }
    }
}

/// The identity a successful exchange logs in as, from the client's first response
/// (base64 as on the wire; `=` is the empty response):
///
/// - PLAIN `authzid NUL authcid NUL passwd`: the authorization identity if given (the
///   backend only says 235 if the authcid may act as it, e.g. a master user), else the
///   authentication identity;
/// - LOGIN: the first response is the user name.
///
/// `None` when the response does not decode to a valid UTF-8 identity without control
/// characters; the exchange then cannot name a user.
pub fn identity(mechanism: Mechanism, first_response: &str) -> Option<String> {
    let decoded = if first_response == "=" {
        Vec::new()
    } else {
        STANDARD.decode(first_response).ok()?
    };
    let name = match mechanism {
        Mechanism::Plain => {
            let mut fields = decoded.split(|&b| b == 0);
            let authzid = fields.next()?;
            let authcid = fields.next()?;
            // The password is the third field; exactly three fields.
            fields.next()?;
            if fields.next().is_some() {
                return None;
            }
            if authzid.is_empty() {
                authcid
            } else {
                authzid
            }
        }
        Mechanism::Login => &decoded[..],
    };
    let name = std::str::from_utf8(name).ok()?;
    let valid =
        !name.is_empty() && name.len() <= MAX_IDENTITY && !name.chars().any(char::is_control);
    valid.then(|| name.to_owned())
}

/// Fuzz body (`sasl_identity`): never panics; an identity is never empty, never holds
/// a control character and fits [`MAX_IDENTITY`].
#[doc(hidden)]
pub fn fuzz_identity(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for mechanism in [Mechanism::Plain, Mechanism::Login] {
        if let Some(name) = identity(mechanism, text) {
            assert!(!name.is_empty() && name.len() <= MAX_IDENTITY);
            assert!(!name.chars().any(char::is_control));
        }
    }
    // The encoding of any bytes is decoded back to the same identity.
    let encoded = STANDARD.encode(data);
    if let Some(name) = identity(Mechanism::Login, &encoded) {
        assert_eq!(name.as_bytes(), data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(bytes: &[u8]) -> String {
        STANDARD.encode(bytes)
    }

    #[test]
    fn plain_names_the_authorization_identity_if_given_else_the_authentication_identity() {
        let plain = |s: &[u8]| identity(Mechanism::Plain, &b64(s));
        assert_eq!(plain(b"\0alice\0secret"), Some("alice".into()));
        assert_eq!(plain(b"alice\0proxy-master\0secret"), Some("alice".into()));
        assert_eq!(plain(b"\0alice@a.test\0"), Some("alice@a.test".into()));
        assert_eq!(plain(b"\0\0secret"), None, "no user");
        assert_eq!(plain(b"alice\0secret"), None, "two fields");
        assert_eq!(plain(b"\0alice\0se\0cret"), None, "four fields");
        assert_eq!(plain(b"\0al\x01ice\0secret"), None, "control character");
        assert_eq!(plain(b"\0\xffalice\0secret"), None, "not UTF-8");
        let long = [&b"\0"[..], &[b'a'; 256][..], b"\0p"].concat();
        assert_eq!(plain(&long), None);
        assert_eq!(identity(Mechanism::Plain, "not base64!"), None);
        assert_eq!(identity(Mechanism::Plain, "="), None);
    }

    #[test]
    fn login_names_the_first_response() {
        assert_eq!(identity(Mechanism::Login, &b64(b"bob")), Some("bob".into()));
        assert_eq!(identity(Mechanism::Login, "="), None);
        assert_eq!(identity(Mechanism::Login, &b64(b"b\nob")), None);
    }

    #[test]
    fn mechanism_names_are_case_insensitive_and_closed() {
        assert_eq!(Mechanism::from_name("plain"), Some(Mechanism::Plain));
        assert_eq!(Mechanism::from_name("LOGIN"), Some(Mechanism::Login));
        assert_eq!(Mechanism::from_name("CRAM-MD5"), None);
    }

    #[test]
    fn fuzz_body_holds_on_samples() {
        for sample in [
            &b""[..],
            b"\0a\0b",
            b"YWxpY2U=",
            b"=",
            b"\xff\xfe",
            b"a\0b\0c\0d",
        ] {
            fuzz_identity(sample);
        }
    }
}
