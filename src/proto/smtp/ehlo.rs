//! EHLO keywords (RFC 5321 §4.1.1.1): what the submission front advertises, taken from
//! Postfix's EHLO reply through an allowlist and adjusted for what the proxy itself does.
//!
//! Advertise only what the proxy relays safely: CHUNKING stays off until BDAT bodies get
//! the same checks as DATA; STARTTLS and AUTH are the proxy's own (AUTH only after TLS,
//! SECURITY-CASES case 12); XCLIENT/XFORWARD are Postfix's trust of the proxy and never
//! reach a client; SIZE is the smaller of Postfix's and the proxy's limit.

/// The session facts that decide what is advertised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EhloView {
    /// The client connection is protected by TLS.
    pub tls_active: bool,
    /// The listener offers STARTTLS (port 587; not 465, which is TLS from the start).
    pub starttls_offered: bool,
    /// AUTH is allowed without TLS (an `insecure_*` option).
    pub plaintext_auth_allowed: bool,
    /// The client has authenticated: AUTH is not offered again (RFC 4954 §4).
    pub authenticated: bool,
    /// The proxy's message size limit (RFC 1870).
    pub max_message_bytes: u64,
}

/// SASL mechanisms whose authentication identity the proxy can read.
const SASL_ALLOWED: &[&str] = &["PLAIN", "LOGIN"];

/// Keywords passed through without parameters of their own that the proxy must change.
const PASSED: &[&str] = &[
    "8BITMIME",
    "DSN",
    "ENHANCEDSTATUSCODES",
    "PIPELINING",
    "SMTPUTF8",
];

/// One EHLO keyword with its parameters, as the proxy advertises it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keyword {
    pub name: String,
    pub params: Vec<String>,
}

impl Keyword {
    fn new(name: &str, params: Vec<String>) -> Self {
        Self {
            name: name.to_owned(),
            params,
        }
    }

    /// `ehlo-line = ehlo-keyword *( SP ehlo-param )`
    pub fn render(&self) -> String {
        let mut line = self.name.clone();
        for param in &self.params {
            line.push(' ');
            line.push_str(param);
        }
        line
    }
}

/// Filters the keyword lines of Postfix's EHLO reply (the lines after the greeting line)
/// for the client.
pub fn filter<'a>(upstream: impl IntoIterator<Item = &'a str>, view: &EhloView) -> Vec<Keyword> {
    let mut out = Vec::new();
    let mut size = view.max_message_bytes;
    for line in upstream {
        let mut words = line.split_ascii_whitespace();
        let Some(name) = words.next().map(str::to_ascii_uppercase) else {
            continue;
        };
        // `ehlo-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")`
        if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            continue;
        }
        match name.as_str() {
            // SIZE 0 (or no number) means "no fixed limit": the proxy's limit applies.
            "SIZE" => {
                if let Some(n) = words
                    .next()
                    .and_then(|n| n.parse::<u64>().ok())
                    .filter(|&n| n > 0)
                {
                    size = size.min(n);
                }
            }
            name if PASSED.contains(&name) => out.push(Keyword::new(name, Vec::new())),
            _ => {}
        }
    }
    out.push(Keyword::new("SIZE", vec![size.to_string()]));
    if view.starttls_offered && !view.tls_active {
        out.push(Keyword::new("STARTTLS", Vec::new()));
    }
    if !view.authenticated && (view.tls_active || view.plaintext_auth_allowed) {
        out.push(Keyword::new(
            "AUTH",
            SASL_ALLOWED.iter().map(|m| (*m).to_owned()).collect(),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Postfix 3.7's EHLO on a submission port, less the greeting line.
    const POSTFIX: &[&str] = &[
        "PIPELINING",
        "SIZE 10240000",
        "VRFY",
        "ETRN",
        "STARTTLS",
        "AUTH PLAIN LOGIN CRAM-MD5",
        "AUTH=PLAIN LOGIN",
        "ENHANCEDSTATUSCODES",
        "8BITMIME",
        "DSN",
        "SMTPUTF8",
        "CHUNKING",
        "XCLIENT NAME ADDR PROTO HELO REVERSE_NAME PORT LOGIN DESTADDR DESTPORT",
        "XFORWARD NAME ADDR PROTO HELO SOURCE",
    ];

    fn view() -> EhloView {
        EhloView {
            tls_active: false,
            starttls_offered: true,
            plaintext_auth_allowed: false,
            authenticated: false,
            max_message_bytes: 50 * 1024 * 1024,
        }
    }

    fn names(keywords: &[Keyword]) -> Vec<String> {
        keywords.iter().map(Keyword::render).collect()
    }

    #[test]
    fn before_tls_no_auth_and_starttls_is_the_proxys() {
        assert_eq!(
            names(&filter(POSTFIX.iter().copied(), &view())),
            [
                "PIPELINING",
                "ENHANCEDSTATUSCODES",
                "8BITMIME",
                "DSN",
                "SMTPUTF8",
                "SIZE 10240000",
                "STARTTLS"
            ]
        );
    }

    #[test]
    fn after_tls_auth_with_readable_mechanisms_only() {
        let v = EhloView {
            tls_active: true,
            ..view()
        };
        let out = names(&filter(POSTFIX.iter().copied(), &v));
        assert_eq!(out.last().map(String::as_str), Some("AUTH PLAIN LOGIN"));
        assert!(!out.iter().any(|k| k == "STARTTLS"), "{out:?}");
    }

    #[test]
    fn never_chunking_xclient_xforward_vrfy_or_unknown() {
        let v = EhloView {
            tls_active: true,
            ..view()
        };
        let out = names(&filter(POSTFIX.iter().copied(), &v)).join(" ");
        for absent in [
            "CHUNKING", "XCLIENT", "XFORWARD", "VRFY", "ETRN", "CRAM-MD5", "AUTH=",
        ] {
            assert!(!out.contains(absent), "{absent} in {out}");
        }
    }

    #[test]
    fn size_is_the_smaller_limit_and_zero_means_none() {
        let small = EhloView {
            max_message_bytes: 1000,
            ..view()
        };
        assert!(names(&filter(["SIZE 10240000"], &small)).contains(&"SIZE 1000".to_owned()));
        assert!(names(&filter(["SIZE 0"], &small)).contains(&"SIZE 1000".to_owned()));
        assert!(names(&filter(["SIZE"], &view())).contains(&"SIZE 52428800".to_owned()));
    }

    #[test]
    fn auth_is_not_offered_again_after_authentication() {
        let v = EhloView {
            tls_active: true,
            authenticated: true,
            ..view()
        };
        assert!(!names(&filter(POSTFIX.iter().copied(), &v))
            .iter()
            .any(|k| k.starts_with("AUTH")));
    }

    #[test]
    fn malformed_keywords_are_dropped() {
        assert_eq!(
            names(&filter(["PIPE\u{0}LINING", "8BIT_MIME", "DSN"], &view())),
            ["DSN", "SIZE 52428800", "STARTTLS"]
        );
    }
}
