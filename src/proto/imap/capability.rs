//! What the proxy advertises: the upstream's capabilities through an allowlist, adjusted
//! for what the proxy itself does (TLS, plaintext-auth policy, APPENDLIMIT, COI).
//!
//! Advertise only what can be relayed: `COMPRESS=*` would turn the stream opaque,
//! `-PLUS` SASL mechanisms would bind to the proxy's TLS channel instead of Dovecot's,
//! and a SASL mechanism whose identity the proxy cannot read is refused (the proxy must
//! know who logged in). Unknown capabilities are dropped rather than passed on blindly.

use super::command::is_atom_char;

/// The session facts that decide what is advertised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CapabilityView {
    /// The client connection is protected by TLS (implicit or after STARTTLS).
    pub tls_active: bool,
    /// The listener offers STARTTLS.
    pub starttls_offered: bool,
    /// The session is authenticated.
    pub authenticated: bool,
    /// LOGIN/AUTHENTICATE are allowed without TLS (`insecure_allow_plaintext_auth`).
    pub plaintext_auth_allowed: bool,
    /// The proxy's literal limit, advertised as APPENDLIMIT (RFC 7889).
    pub append_limit: u64,
}

impl CapabilityView {
    /// Authentication is possible on this connection now.
    pub fn auth_allowed(&self) -> bool {
        self.tls_active || self.plaintext_auth_allowed
    }
}

/// The capability the proxy adds after authentication (COI-PROTOCOL §2.1).
pub const COI: &str = "COI";

/// SASL mechanisms whose authentication identity the proxy can read.
const SASL_ALLOWED: &[&str] = &["PLAIN", "LOGIN"];

/// Capabilities passed through unchanged: base protocols and extensions that change no
/// framing and need no proxy state. Matching is case-insensitive; entries ending in `=`
/// match any value.
const ALLOWED: &[&str] = &[
    "IMAP4rev1",
    "IMAP4rev2",
    "ACL",
    "BINARY",
    "CATENATE",
    "CHILDREN",
    "CONDSTORE",
    "CONTEXT=",
    "CREATE-SPECIAL-USE",
    "ENABLE",
    "ESEARCH",
    "ESORT",
    "I18NLEVEL=",
    "ID",
    "IDLE",
    "LIST-EXTENDED",
    "LIST-STATUS",
    "LITERAL+",
    "LITERAL-",
    "LOGIN-REFERRALS",
    "METADATA",
    "METADATA-SERVER",
    "MOVE",
    "MULTIAPPEND",
    "NAMESPACE",
    "NOTIFY",
    "OBJECTID",
    "PREVIEW",
    "PREVIEW=",
    "QRESYNC",
    "QUOTA",
    "QUOTA=",
    "RIGHTS=",
    "SASL-IR",
    "SAVEDATE",
    "SEARCHRES",
    "SNIPPET=",
    "SORT",
    "SORT=",
    "SPECIAL-USE",
    "STATUS=",
    "THREAD=",
    "UIDPLUS",
    "UNSELECT",
    "URL-PARTIAL",
    "URLAUTH",
    "UTF8=ACCEPT",
    "WITHIN",
];

fn allowed(cap: &[u8]) -> bool {
    ALLOWED.iter().any(|a| match a.strip_suffix('=') {
        Some(prefix) => {
            cap.len() > a.len()
                && cap[..a.len()].eq_ignore_ascii_case(a.as_bytes())
                && cap[prefix.len()] == b'='
        }
        None => cap.eq_ignore_ascii_case(a.as_bytes()),
    })
}

/// Filters an upstream capability list for the client. The result keeps the upstream
/// order, then appends what the proxy adds.
pub fn filter<'a>(
    upstream: impl IntoIterator<Item = &'a [u8]>,
    view: &CapabilityView,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut append_limit = view.append_limit;
    for cap in upstream {
        // `capability = ("AUTH=" auth-type) / atom`: anything else (controls, `]`, `{`)
        // could break the list or a `[CAPABILITY ...]` code.
        if cap.is_empty() || !cap.iter().all(|&b| is_atom_char(b)) {
            continue;
        }
        let Ok(text) = std::str::from_utf8(cap) else {
            continue;
        };
        let upper = text.to_ascii_uppercase();
        if let Some(mechanism) = upper.strip_prefix("AUTH=") {
            if view.auth_allowed() && !view.authenticated && SASL_ALLOWED.contains(&mechanism) {
                out.push(text.to_owned());
            }
        } else if let Some(limit) = upper.strip_prefix("APPENDLIMIT") {
            // The smaller of the two limits holds; a bare APPENDLIMIT means "per mailbox".
            if let Some(n) = limit.strip_prefix('=').and_then(|n| n.parse::<u64>().ok()) {
                append_limit = append_limit.min(n);
            }
        } else if allowed(cap) {
            out.push(text.to_owned());
        }
    }
    if !view.authenticated {
        if view.starttls_offered && !view.tls_active {
            out.push("STARTTLS".into());
        }
        if !view.auth_allowed() {
            out.push("LOGINDISABLED".into());
        }
    }
    out.push(format!("APPENDLIMIT={append_limit}"));
    if view.authenticated {
        out.push(COI.into());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOVECOT_PRE_LOGIN: &str =
        "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ STARTTLS AUTH=PLAIN AUTH=LOGIN AUTH=SCRAM-SHA-256-PLUS AUTH=SCRAM-SHA-256";
    const DOVECOT_POST_LOGIN: &str = "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT SORT=DISPLAY THREAD=REFERENCES THREAD=REFS THREAD=ORDEREDSUBJECT MULTIAPPEND URL-PARTIAL CATENATE UNSELECT CHILDREN NAMESPACE UIDPLUS LIST-EXTENDED I18NLEVEL=1 CONDSTORE QRESYNC ESEARCH ESORT SEARCHRES WITHIN CONTEXT=SEARCH LIST-STATUS BINARY MOVE SNIPPET=FUZZY PREVIEW=FUZZY PREVIEW STATUS=SIZE SAVEDATE LITERAL+ NOTIFY SPECIAL-USE METADATA COMPRESS=DEFLATE XAPPLEPUSHSERVICE";

    fn view() -> CapabilityView {
        CapabilityView {
            tls_active: false,
            starttls_offered: true,
            authenticated: false,
            plaintext_auth_allowed: false,
            append_limit: 1000,
        }
    }

    fn run(caps: &str, view: &CapabilityView) -> String {
        filter(caps.split(' ').map(str::as_bytes), view).join(" ")
    }

    #[test]
    fn before_tls_login_is_disabled_and_starttls_is_the_proxys() {
        assert_eq!(
            run(DOVECOT_PRE_LOGIN, &view()),
            "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ STARTTLS LOGINDISABLED APPENDLIMIT=1000"
        );
    }

    #[test]
    fn after_tls_plain_mechanisms_appear_and_plus_never() {
        let v = CapabilityView {
            tls_active: true,
            ..view()
        };
        assert_eq!(
            run(DOVECOT_PRE_LOGIN, &v),
            "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ AUTH=PLAIN AUTH=LOGIN APPENDLIMIT=1000"
        );
    }

    #[test]
    fn after_login_coi_is_added_and_compress_removed() {
        let v = CapabilityView {
            tls_active: true,
            authenticated: true,
            ..view()
        };
        let out = run(DOVECOT_POST_LOGIN, &v);
        assert!(out.ends_with(" METADATA APPENDLIMIT=1000 COI"), "{out}");
        assert!(!out.contains("COMPRESS"));
        assert!(
            !out.contains("XAPPLEPUSHSERVICE"),
            "unknown capabilities are dropped"
        );
        assert!(out.contains("SNIPPET=FUZZY") && out.contains("I18NLEVEL=1"));
    }

    #[test]
    fn smaller_upstream_append_limit_wins() {
        assert!(run("IMAP4rev1 APPENDLIMIT=10", &view()).ends_with("APPENDLIMIT=10"));
        assert!(run("IMAP4rev1 APPENDLIMIT=99999", &view()).ends_with("APPENDLIMIT=1000"));
    }

    #[test]
    fn capabilities_that_are_not_atoms_are_dropped() {
        assert_eq!(
            run("IMAP4rev1 SORT=\x01 THREAD=R{FS RIGHTS=x]y ID", &view()),
            "IMAP4rev1 ID STARTTLS LOGINDISABLED APPENDLIMIT=1000"
        );
    }

    #[test]
    fn value_capabilities_need_their_value() {
        assert!(!allowed(b"SORT="));
        assert!(allowed(b"sort=display"));
        assert!(!allowed(b"SORTX"));
        assert!(!allowed(b"COMPRESS=DEFLATE"));
    }
}
