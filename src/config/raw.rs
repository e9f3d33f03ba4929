//! The YAML as written: section shapes and the syntax of scalar values.
//!
//! Every section is a `deny_unknown_fields` struct whose fields are loose
//! [`serde_yaml::Value`]s. The loose leaves let `validate` convert each value on its own, so
//! one bad value never hides the next one. The document is parsed into a `Value` first and
//! each mapping is split by [`section`] into known keys (deserialized into the struct) and
//! unknown keys (reported with their path): serde's own `deny_unknown_fields` stops at the
//! first unknown key, and the configuration must report all of them at once.
//!
//! The scalar parsers here ([`byte_size`], [`duration`], [`HostPort`], ...) only know
//! syntax; ranges and cross-field rules live in `validate`.

use std::fmt::Write as _;
use std::net::{Ipv6Addr, SocketAddr};
use std::time::Duration;

use serde::de::{self, DeserializeOwned, Visitor};
use serde::Deserialize;
use serde_yaml::{Mapping, Value};

use super::ConfigError;

/// The document root.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub imap: Option<Value>,
    pub tls: Option<Value>,
    pub coi: Option<Value>,
    pub submission: Option<Value>,
    pub delivery: Option<Value>,
    pub mailbox_writer: Option<Value>,
    pub peer: Option<Value>,
    pub admin: Option<Value>,
    pub log: Option<Value>,
    pub shutdown: Option<Value>,
}

/// `imap`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawImap {
    pub listeners: Option<Value>,
    pub upstream: Option<Value>,
    pub limits: Option<Value>,
    pub timeouts: Option<Value>,
    pub bare_lf: Option<Value>,
    pub insecure_allow_plaintext_auth: Option<Value>,
}

/// One entry of `imap.listeners` or `submission.listeners`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawListener {
    pub name: Option<Value>,
    pub address: Option<Value>,
    pub tls: Option<Value>,
}

/// `imap.upstream` or `submission.upstream`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    pub address: Option<Value>,
    pub tls: Option<Value>,
    pub server_name: Option<Value>,
    pub ca_file: Option<Value>,
    pub connect_timeout: Option<Value>,
}

/// `imap.limits`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub max_line_bytes: Option<Value>,
    pub max_literal_bytes: Option<Value>,
    pub max_sessions: Option<Value>,
}

/// `imap.timeouts`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTimeouts {
    pub tls_handshake: Option<Value>,
    pub pre_auth: Option<Value>,
    pub idle: Option<Value>,
    pub upstream_reply: Option<Value>,
    pub auth_failure_delay: Option<Value>,
}

/// `tls`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub certificate: Option<Value>,
    pub private_key: Option<Value>,
}

/// `coi`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCoi {
    pub mailbox_root: Option<Value>,
    pub tokens: Option<Value>,
    pub server: Option<Value>,
}

/// `coi.tokens`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTokens {
    pub temporary_secrets: Option<Value>,
    pub permanent_secrets: Option<Value>,
    pub temporary_validity: Option<Value>,
}

/// `submission`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSubmission {
    pub listeners: Option<Value>,
    pub upstream: Option<Value>,
    pub hostname: Option<Value>,
    pub sender_domains: Option<Value>,
    pub limits: Option<Value>,
    pub timeouts: Option<Value>,
    pub insecure_allow_plaintext_auth: Option<Value>,
    pub insecure_allow_any_sender: Option<Value>,
}

/// `delivery`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDelivery {
    pub address: Option<Value>,
    pub upstream: Option<Value>,
    pub hostname: Option<Value>,
    pub user_name: Option<Value>,
    pub spool_directory: Option<Value>,
    pub limits: Option<Value>,
    pub timeouts: Option<Value>,
}

/// `mailbox_writer`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMailboxWriter {
    pub master_user: Option<Value>,
    pub master_password: Option<Value>,
    pub max_connections: Option<Value>,
    pub max_idle_per_user: Option<Value>,
}

/// `peer`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPeer {
    pub address: Option<Value>,
    pub certificate: Option<Value>,
    pub private_key: Option<Value>,
    pub ca_file: Option<Value>,
    pub delivery_timeout: Option<Value>,
    pub max_message_bytes: Option<Value>,
    pub routes: Option<Value>,
    pub dns: Option<Value>,
}

/// One entry of `peer.routes`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPeerRoute {
    pub domain: Option<Value>,
    pub address: Option<Value>,
}

/// `peer.dns`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPeerDns {
    pub nameservers: Option<Value>,
    pub timeout: Option<Value>,
    pub max_ttl: Option<Value>,
    pub negative_ttl: Option<Value>,
    pub error_ttl: Option<Value>,
}

/// `delivery.limits`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDeliveryLimits {
    pub max_message_bytes: Option<Value>,
    pub max_recipients: Option<Value>,
    pub max_sessions: Option<Value>,
    pub spool_memory_bytes: Option<Value>,
}

/// `delivery.timeouts`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDeliveryTimeouts {
    pub command: Option<Value>,
    pub upstream_reply: Option<Value>,
}

/// `submission.limits`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSubmissionLimits {
    pub max_line_bytes: Option<Value>,
    pub max_message_bytes: Option<Value>,
    pub max_recipients: Option<Value>,
    pub max_sessions: Option<Value>,
}

/// `submission.timeouts`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSubmissionTimeouts {
    pub tls_handshake: Option<Value>,
    pub pre_auth: Option<Value>,
    pub command: Option<Value>,
    pub upstream_reply: Option<Value>,
}

/// `admin`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub address: Option<Value>,
}

/// `log`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    pub format: Option<Value>,
    pub level: Option<Value>,
}

/// `shutdown`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawShutdown {
    pub grace: Option<Value>,
}

/// Parses the text into a YAML tree. Only syntax fails here (including duplicate keys,
/// nesting deeper than serde_yaml's recursion limit and alias bombs).
pub(super) fn parse_document(yaml: &str) -> Result<Value, ConfigError> {
    serde_yaml::from_str(yaml).map_err(|e| ConfigError {
        path: String::new(),
        message: format!("invalid YAML: {}", single_line(&e.to_string())),
    })
}

/// Reads the mapping at `path` as the section shape `T`.
///
/// Every key `T` does not declare becomes an "unknown key" error at `path.key`; the known
/// keys are still deserialized, so their values get checked in the same run. A value that
/// is not a mapping is one error and yields `None`. A YAML `null` (a key with nothing after
/// the colon) counts as an empty section.
pub(super) fn section<T: DeserializeOwned + Default>(
    value: &Value,
    path: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<T> {
    let mapping = match value {
        Value::Null => return Some(T::default()),
        Value::Mapping(mapping) => mapping,
        other => {
            errors.push(ConfigError {
                path: path.to_owned(),
                message: format!("expected a mapping, found {}", kind(other)),
            });
            return None;
        }
    };
    let known = struct_fields::<T>();
    let mut kept = Mapping::with_capacity(mapping.len());
    for (key, value) in mapping {
        match key.as_str() {
            // Cloning is cheap at configuration size and keeps the document intact.
            Some(name) if known.contains(&name) => {
                kept.insert(key.clone(), value.clone());
            }
            Some(name) => errors.push(ConfigError {
                path: child(path, name),
                message: format!("unknown key (known keys: {})", known.join(", ")),
            }),
            None => errors.push(ConfigError {
                path: path.to_owned(),
                message: format!("keys must be strings, found {}", kind(key)),
            }),
        }
    }
    // Every kept key is declared and every field is a loose `Option<Value>`, so this cannot
    // fail today; should a stricter field type ever be added, its error still gets a path.
    match serde_yaml::from_value(Value::Mapping(kept)) {
        Ok(raw) => Some(raw),
        Err(e) => {
            errors.push(ConfigError {
                path: path.to_owned(),
                message: single_line(&e.to_string()),
            });
            None
        }
    }
}

/// The path of key `name` under `parent`: `imap.upstream`, or `imap["odd key"]` when the
/// key would make the path ambiguous or span lines.
pub(super) fn child(parent: &str, name: &str) -> String {
    let plain = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    let mut path = parent.to_owned();
    if plain {
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(name);
    } else {
        // Debug quoting escapes dots, quotes and line breaks alike.
        let _ = write!(path, "[{name:?}]");
    }
    path
}

/// The path of element `index` of the sequence at `parent`: `imap.listeners[1]`.
pub(super) fn element(parent: &str, index: usize) -> String {
    format!("{parent}[{index}]")
}

/// What a value is, for "expected X, found Y" messages.
pub(super) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a floating-point number",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// A string scalar. Numbers and booleans are not silently turned into strings: `level: 1`
/// is far more likely a mistake than a filter directive.
pub(super) fn string(value: &Value) -> Result<&str, String> {
    value
        .as_str()
        .ok_or_else(|| format!("expected a string, found {}", kind(value)))
}

/// `true` or `false`.
pub(super) fn boolean(value: &Value) -> Result<bool, String> {
    value
        .as_bool()
        .ok_or_else(|| format!("expected true or false, found {}", kind(value)))
}

/// A non-negative integer scalar.
pub(super) fn unsigned(value: &Value) -> Result<u64, String> {
    match value {
        Value::Number(n) => n.as_u64().ok_or_else(|| {
            if n.is_f64() {
                // Integers beyond u64 also arrive here, as floats.
                format!("expected a whole number, found {n}")
            } else {
                format!("expected a non-negative integer, found {n}")
            }
        }),
        other => Err(format!("expected an integer, found {}", kind(other))),
    }
}

/// A list.
pub(super) fn sequence(value: &Value) -> Result<&[Value], String> {
    value
        .as_sequence()
        .map(Vec::as_slice)
        .ok_or_else(|| format!("expected a list, found {}", kind(value)))
}

/// One of a closed set of lowercase words, e.g. a TLS mode.
pub(super) fn keyword<T: Copy>(
    value: &Value,
    what: &str,
    choices: &[(&str, T)],
) -> Result<T, String> {
    let word = string(value)?;
    choices
        .iter()
        .find(|(name, _)| *name == word)
        .map(|(_, choice)| *choice)
        .ok_or_else(|| {
            let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
            format!(
                "invalid {what} {word:?} (expected one of: {})",
                names.join(", ")
            )
        })
}

/// A socket address to bind: an IP literal and a port, IPv6 in brackets.
pub(super) fn socket_addr(value: &Value) -> Result<SocketAddr, String> {
    let text = string(value)?;
    text.parse().map_err(|_| {
        format!(
            "invalid socket address {text:?} (expected ip:port, e.g. \"0.0.0.0:143\" or \"[::]:993\")"
        )
    })
}

/// A duration with a unit, e.g. "30s", "5m", "1h 30m", "500ms" (humantime syntax).
///
/// A bare number is refused: "30" could mean seconds or milliseconds, and guessing wrong
/// is a factor of 1000.
pub(super) fn duration(value: &Value) -> Result<Duration, String> {
    let text = match value {
        Value::String(text) => text,
        Value::Number(n) => {
            return Err(format!(
                "invalid duration {n}: a unit is required, e.g. \"{n}s\""
            ))
        }
        other => {
            return Err(format!(
                "expected a duration such as \"30s\", found {}",
                kind(other)
            ))
        }
    };
    humantime::parse_duration(text).map_err(|e| format!("invalid duration {text:?}: {e}"))
}

/// Units accepted in byte sizes, binary only: "MB" versus "MiB" is a classic 5 % surprise,
/// so decimal units are refused rather than guessed.
const BYTE_UNITS: &[(&str, u64)] = &[
    ("B", 1),
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
];

/// A byte size: a non-negative integer (bytes) or a string such as "64KiB", "50 MiB",
/// "512B" or "1024".
pub(super) fn byte_size(value: &Value) -> Result<u64, String> {
    match value {
        Value::Number(_) => unsigned(value),
        Value::String(text) => parse_byte_size(text),
        other => Err(format!(
            "expected a byte size such as 65536 or \"64KiB\", found {}",
            kind(other)
        )),
    }
}

/// The string form of [`byte_size`].
pub(super) fn parse_byte_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let digits_end = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(digits_end);
    let unit = unit.trim_start();
    if digits.is_empty() {
        return Err(format!(
            "invalid byte size {text:?} (expected a whole number and an optional unit B, KiB, MiB or GiB, e.g. \"64KiB\")"
        ));
    }
    let scale = if unit.is_empty() {
        Some(1)
    } else {
        BYTE_UNITS
            .iter()
            .find(|(name, _)| *name == unit)
            .map(|&(_, scale)| scale)
    };
    let Some(scale) = scale else {
        return Err(format!(
            "invalid byte size {text:?}: unknown unit {unit:?} (expected B, KiB, MiB or GiB)"
        ));
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| format!("invalid byte size {text:?}: too large"))
}

/// An upstream address: a host name or IP literal and a port. Unlike [`socket_addr`] the
/// host may be a name (a Kubernetes service, "localhost"), resolved when connecting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct HostPort {
    /// Without brackets: "::1", not "[::1]", so it can serve as a TLS server name too.
    pub host: String,
    pub port: u16,
}

impl HostPort {
    /// Parses "host:port", "192.0.2.1:143" or "[2001:db8::1]:993".
    pub(super) fn parse(text: &str) -> Result<Self, String> {
        let invalid = |why: &str| {
            format!("invalid address {text:?}: {why} (expected host:port, IPv6 as [::1]:143)")
        };
        let (host, port) = text
            .rsplit_once(':')
            .ok_or_else(|| invalid("missing port"))?;
        let port: u16 = match port.parse() {
            Ok(0) | Err(_) => return Err(invalid("port must be 1-65535")),
            Ok(port) => port,
        };
        let host = if let Some(inner) = host.strip_prefix('[') {
            let inner = inner
                .strip_suffix(']')
                .ok_or_else(|| invalid("unclosed '['"))?;
            inner
                .parse::<Ipv6Addr>()
                .map_err(|_| invalid("not an IPv6 address inside brackets"))?;
            inner
        } else if host.contains(':') {
            return Err(invalid("IPv6 addresses must be in brackets"));
        } else if !is_host_name(host) {
            return Err(invalid("not a host name or IP address"));
        } else {
            host
        };
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }
}

/// Letters, digits, '-', '_' and '.', 1-253 bytes: what DNS, /etc/hosts and IPv4 literals
/// use. Anything else (spaces, '/', '@') is a paste error, not a name to look up.
fn is_host_name(host: &str) -> bool {
    (1..=253).contains(&host.len())
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Keeps one error per output line whatever a library message contains.
pub(super) fn single_line(message: &str) -> String {
    message.replace(['\r', '\n'], " ")
}

/// The field names of a derived `Deserialize` struct, read from the list serde hands to
/// `deserialize_struct`. Reading them from the derive keeps the unknown-key check and
/// the struct from drifting apart.
fn struct_fields<T: DeserializeOwned>() -> &'static [&'static str] {
    let mut fields: &'static [&'static str] = &[];
    // The probe always ends with an error after recording the list; that error is the
    // expected way out, not a failure.
    let _ = T::deserialize(FieldsProbe {
        fields: &mut fields,
    });
    fields
}

/// A deserializer that records the field list of the struct asking for it, then stops.
struct FieldsProbe<'a> {
    fields: &'a mut &'static [&'static str],
}

impl<'de> de::Deserializer<'de> for FieldsProbe<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("field probe: not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        *self.fields = fields;
        Err(de::Error::custom("field probe: done"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}
