//! The COI configuration a user sets with SETMETADATA (COI-PROTOCOL.md §2.2–2.4).
//!
//! Clients read and write the entries under [`CLIENT_PREFIX`]. Dovecot reserves every
//! path under `vendor/vendor.dovecot/` for its own plugins and refuses them from IMAP, so
//! the proxy answers these paths itself and persists the values under [`STORAGE_PREFIX`]
//! in the user's own server METADATA: the backend stays the only durable state, and the
//! values survive a proxy restart.

/// Where clients see the COI configuration.
pub const CLIENT_PREFIX: &str = "/private/vendor/vendor.dovecot/coi/config";

/// Where the proxy stores it in Dovecot (hidden from clients).
pub const STORAGE_PREFIX: &str = "/private/vendor/coi-proxy/config";

/// One COI configuration entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    Enabled,
    MailboxRoot,
    MessageFilter,
}

impl Entry {
    pub const ALL: [Entry; 3] = [Entry::Enabled, Entry::MessageFilter, Entry::MailboxRoot];

    pub fn name(self) -> &'static str {
        match self {
            Entry::Enabled => "enabled",
            Entry::MailboxRoot => "mailbox-root",
            Entry::MessageFilter => "message-filter",
        }
    }

    pub fn client_path(self) -> String {
        format!("{CLIENT_PREFIX}/{}", self.name())
    }

    pub fn storage_path(self) -> String {
        format!("{STORAGE_PREFIX}/{}", self.name())
    }

    /// The entry a client path names (entry names are case-insensitive, RFC 5464 §3.2).
    pub fn from_client_path(path: &[u8]) -> Option<Entry> {
        Entry::ALL
            .into_iter()
            .find(|e| path.eq_ignore_ascii_case(e.client_path().as_bytes()))
    }
}

/// `message-filter` values (lowercase only, COI-PROTOCOL §2.2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MessageFilter {
    Active,
    #[default]
    None,
    Seen,
}

impl MessageFilter {
    pub fn parse(value: &[u8]) -> Option<MessageFilter> {
        match value {
            b"none" => Some(MessageFilter::None),
            b"active" => Some(MessageFilter::Active),
            b"seen" => Some(MessageFilter::Seen),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MessageFilter::Active => "active",
            MessageFilter::None => "none",
            MessageFilter::Seen => "seen",
        }
    }
}

/// Why a SETMETADATA of a COI entry is refused; the texts follow Dovecot's plugin so that
/// clients see the same answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SetError {
    #[error("Invalid enabled value. Must be yes or NIL.")]
    InvalidEnabled,
    #[error("Invalid message-filter value")]
    InvalidMessageFilter,
    #[error("unable to set /private/vendor/vendor.dovecot/coi/config/mailbox-root")]
    ReadOnly,
}

/// A validated change to one entry: the value to store, or `None` to remove it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub entry: Entry,
    pub value: Option<&'static str>,
}

/// Validates a client's SETMETADATA value for a COI entry.
pub fn validate_set(entry: Entry, value: Option<&[u8]>) -> Result<Change, SetError> {
    let value = match (entry, value) {
        (Entry::MailboxRoot, _) => return Err(SetError::ReadOnly),
        (Entry::Enabled, None) => None,
        (Entry::Enabled, Some(b"yes")) => Some("yes"),
        (Entry::Enabled, Some(_)) => return Err(SetError::InvalidEnabled),
        // NIL resets the filter to its default (Dovecot would dereference NULL here).
        (Entry::MessageFilter, None) => None,
        (Entry::MessageFilter, Some(v)) => Some(
            MessageFilter::parse(v)
                .ok_or(SetError::InvalidMessageFilter)?
                .as_str(),
        ),
    };
    Ok(Change { entry, value })
}

/// The stored COI configuration of one user, as read back from the backend.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserConfig {
    pub enabled: bool,
    pub message_filter: MessageFilter,
}

impl UserConfig {
    /// Interprets stored values: COI is on only for exactly `yes`, and a stored value that
    /// is not a valid filter means `none` (COI-PROTOCOL §2.2).
    pub fn from_stored(enabled: Option<&[u8]>, message_filter: Option<&[u8]>) -> Self {
        Self {
            enabled: enabled == Some(b"yes"),
            message_filter: message_filter
                .and_then(MessageFilter::parse)
                .unwrap_or_default(),
        }
    }

    /// The filter in effect: it is only read while COI is enabled.
    pub fn effective_filter(&self) -> MessageFilter {
        if self.enabled {
            self.message_filter
        } else {
            MessageFilter::None
        }
    }
}

/// Which COI entries a GETMETADATA `entry` with `depth` selects (RFC 5464 §4.2.2): the
/// entry itself, and for a prefix its children (DEPTH 1) or descendants (infinity).
pub fn selected_by(requested: &[u8], depth_one: bool, depth_infinity: bool) -> Vec<Entry> {
    let requested = requested.strip_suffix(b"/").unwrap_or(requested);
    Entry::ALL
        .into_iter()
        .filter(|e| {
            let path = e.client_path();
            let path = path.as_bytes();
            if path.eq_ignore_ascii_case(requested) {
                return true;
            }
            let Some(rest) = path.get(requested.len()..) else {
                return false;
            };
            let is_prefix = path[..requested.len()].eq_ignore_ascii_case(requested)
                && rest.first() == Some(&b'/');
            let extra_levels = rest.iter().filter(|&&b| b == b'/').count();
            is_prefix && (depth_infinity || (depth_one && extra_levels == 1))
        })
        .collect()
}

/// True if a client path lies in a tree the proxy owns (the COI config tree, or its own
/// storage), so the upstream must not see it.
pub fn is_reserved(path: &[u8]) -> bool {
    let lower = path.to_ascii_lowercase();
    [
        CLIENT_PREFIX,
        STORAGE_PREFIX,
        "/private/vendor/vendor.dovecot/coi",
    ]
    .iter()
    .any(|p| {
        lower == p.as_bytes()
            || (lower.starts_with(p.as_bytes()) && lower.get(p.len()) == Some(&b'/'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enabled_accepts_only_lowercase_yes_or_nil() {
        assert_eq!(
            validate_set(Entry::Enabled, Some(b"yes")).unwrap().value,
            Some("yes")
        );
        assert_eq!(validate_set(Entry::Enabled, None).unwrap().value, None);
        for bad in [&b"YES"[..], b"true", b"no", b""] {
            assert_eq!(
                validate_set(Entry::Enabled, Some(bad)),
                Err(SetError::InvalidEnabled)
            );
        }
    }

    #[test]
    fn message_filter_values_and_nil_reset() {
        for v in ["none", "active", "seen"] {
            assert_eq!(
                validate_set(Entry::MessageFilter, Some(v.as_bytes()))
                    .unwrap()
                    .value,
                Some(v)
            );
        }
        assert_eq!(
            validate_set(Entry::MessageFilter, None).unwrap().value,
            None
        );
        assert_eq!(
            validate_set(Entry::MessageFilter, Some(b"inactive")),
            Err(SetError::InvalidMessageFilter)
        );
        assert_eq!(
            validate_set(Entry::MessageFilter, Some(b"Active")),
            Err(SetError::InvalidMessageFilter)
        );
    }

    #[test]
    fn mailbox_root_is_read_only() {
        assert_eq!(
            validate_set(Entry::MailboxRoot, Some(b"X")),
            Err(SetError::ReadOnly)
        );
        assert_eq!(
            validate_set(Entry::MailboxRoot, None),
            Err(SetError::ReadOnly)
        );
    }

    #[test]
    fn stored_values_are_interpreted_strictly() {
        let c = UserConfig::from_stored(Some(b"yes"), Some(b"seen"));
        assert_eq!(c.effective_filter(), MessageFilter::Seen);
        assert!(!UserConfig::from_stored(Some(b"Yes"), None).enabled);
        assert_eq!(
            UserConfig::from_stored(Some(b"yes"), Some(b"junk")).message_filter,
            MessageFilter::None
        );
        assert_eq!(
            UserConfig::from_stored(None, Some(b"active")).effective_filter(),
            MessageFilter::None
        );
    }

    #[test]
    fn depth_selects_children_and_descendants() {
        let cfg = CLIENT_PREFIX.as_bytes();
        assert_eq!(selected_by(cfg, false, false), vec![]);
        assert_eq!(selected_by(cfg, true, false), Entry::ALL.to_vec());
        assert_eq!(
            selected_by(b"/private/vendor/vendor.dovecot/coi", true, false),
            vec![]
        );
        assert_eq!(
            selected_by(b"/private/vendor/vendor.dovecot/coi", false, true),
            Entry::ALL.to_vec()
        );
        assert_eq!(
            selected_by(Entry::Enabled.client_path().as_bytes(), false, false),
            vec![Entry::Enabled]
        );
        assert_eq!(
            selected_by(
                b"/PRIVATE/vendor/vendor.dovecot/coi/config/ENABLED",
                false,
                false
            ),
            vec![Entry::Enabled]
        );
        assert_eq!(
            selected_by(b"/private/vendor/vendor.dovecot/coi/configx", true, true),
            vec![]
        );
    }

    #[test]
    fn reserved_paths() {
        assert!(is_reserved(
            b"/private/vendor/vendor.dovecot/coi/config/enabled"
        ));
        assert!(is_reserved(b"/private/vendor/coi-proxy/config/enabled"));
        assert!(is_reserved(b"/Private/Vendor/vendor.dovecot/coi"));
        assert!(!is_reserved(b"/private/vendor/vendor.dovecot/coix"));
        assert!(!is_reserved(b"/private/comment"));
    }
}
