//! Raw YAML → typed [`Config`], collecting every error.
//!
//! Each value is converted on its own and a failure is recorded with its key path, then
//! validation goes on: a section is assembled only if all of its values converted, and
//! cross-field rules run on whatever did convert. The whole run is pure, so the fuzzer can
//! drive it; files named here are checked at startup, not now.

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_yaml::Value;
use tracing_subscriber::filter::Directive;

use super::raw::{
    self, HostPort, RawAdmin, RawCoi, RawConfig, RawDelivery, RawDeliveryLimits,
    RawDeliveryTimeouts, RawImap, RawLimits, RawListener, RawLog, RawMailboxWriter, RawPeer,
    RawPeerDns, RawPeerRoute, RawShutdown, RawSubmission, RawSubmissionLimits,
    RawSubmissionTimeouts, RawTimeouts, RawTls, RawTokens, RawUpstream,
};
use super::*;
use crate::coi::token::{Secret, Secrets};

/// Validates a parsed document. `Err` holds every problem found, never none.
pub(super) fn validate(document: &Value) -> Result<Config, ConfigErrors> {
    let mut validator = Validator::default();
    let config = validator.config(document);
    match config {
        Some(config) if validator.errors.is_empty() => Ok(config),
        _ => Err(ConfigErrors(validator.errors)),
    }
}

/// Mailbox-name characters the root may not contain: line breaks and NUL break the IMAP
/// line, '"' and '\' break quoting, and '*' and '%' are LIST wildcards, so a root holding
/// them would match mailboxes outside it.
const MAILBOX_ROOT_FORBIDDEN: &[char] = &['\r', '\n', '\0', '"', '\\', '*', '%'];

/// One timeout key of a section: its name, its value, its default and its minimum (see
/// [`Validator::timeouts`]).
type TimeoutKey<'v> = (&'static str, &'v Option<Value>, Duration, Duration);

/// Collects errors while converting one document.
#[derive(Default)]
struct Validator {
    errors: Vec<ConfigError>,
    /// The first listener that needs the `tls` section, and its mode: found while
    /// checking `imap`, enforced when checking `tls`.
    tls_required_by: Option<(String, ListenerTls)>,
}

/// One listener as far as it converted, so that the uniqueness and TLS rules still apply
/// to the parts that are valid.
struct PartialListener {
    path: String,
    name: Option<String>,
    address: Option<SocketAddr>,
    tls: Option<ListenerTls>,
}

impl Validator {
    fn config(&mut self, document: &Value) -> Option<Config> {
        let root: RawConfig = self.section(document, "")?;
        let imap = self.imap(root.imap.as_ref());
        let tls = self.tls(root.tls.as_ref());
        let coi = self.coi(root.coi.as_ref());
        let imap_listeners = imap.as_ref().map(|imap| imap.listeners.clone());
        let submission = self.submission(root.submission.as_ref(), imap_listeners.as_deref());
        let delivery = self.delivery(root.delivery.as_ref());
        let mailbox_writer = self.mailbox_writer(root.mailbox_writer.as_ref());
        let peer = self.peer(root.peer.as_ref(), root.mailbox_writer.is_some());
        let admin = self.admin(root.admin.as_ref());
        let log = self.log(root.log.as_ref());
        let shutdown = self.shutdown(root.shutdown.as_ref());
        // Every listener of every front, with its path, for the cross-front checks.
        let mut bound: Vec<(String, SocketAddr)> = Vec::new();
        if let Some(imap) = &imap {
            bound.extend(indexed("imap.listeners", &imap.listeners));
        }
        if let Some(Some(submission)) = &submission {
            bound.extend(indexed("submission.listeners", &submission.listeners));
        }
        if let Some(Some(delivery)) = &delivery {
            if let Some((path, address)) = bound
                .iter()
                .find(|(_, a)| bind_conflict(*a, delivery.address))
            {
                self.error(
                    "delivery.address",
                    format!("{} overlaps {address} of {path}", delivery.address),
                );
            }
            bound.push(("delivery.address".to_owned(), delivery.address));
        }
        let admin_address = admin.as_ref().and_then(|admin| admin.address);
        if let Some(address) = admin_address {
            self.check_admin_is_not_a_listener(address, &bound);
        }
        Some(Config {
            imap: imap?,
            tls: tls?,
            coi: coi?,
            submission: submission?,
            delivery: delivery?,
            mailbox_writer: mailbox_writer?,
            peer: peer?,
            admin: admin?,
            log: log?,
            shutdown: shutdown?,
        })
    }

    fn imap(&mut self, value: Option<&Value>) -> Option<ImapConfig> {
        let raw: RawImap = self.required_section(value, "imap")?;
        let listeners = self.listeners(
            raw.listeners.as_ref(),
            "imap.listeners",
            DEFAULT_LISTENER_NAME_PREFIX,
        );
        let upstream = self.upstream(raw.upstream.as_ref(), "imap.upstream");
        let limits = self.limits(raw.limits.as_ref());
        let timeouts = self.imap_timeouts(raw.timeouts.as_ref());
        let bare_lf = self.optional(raw.bare_lf.as_ref(), "imap.bare_lf", DEFAULT_BARE_LF, |v| {
            raw::keyword(
                v,
                "bare LF policy",
                &[
                    ("reject", BareLfPolicy::Reject),
                    ("canonicalize", BareLfPolicy::Canonicalize),
                ],
            )
        });
        let insecure_allow_plaintext_auth = self.optional(
            raw.insecure_allow_plaintext_auth.as_ref(),
            "imap.insecure_allow_plaintext_auth",
            DEFAULT_INSECURE_ALLOW_PLAINTEXT_AUTH,
            raw::boolean,
        );
        if let (Some(listeners), Some(upstream)) = (&listeners, &upstream) {
            self.check_upstream_is_not_a_listener(upstream, "imap", listeners);
        }
        Some(ImapConfig {
            listeners: listeners?,
            upstream: upstream?,
            limits: limits?,
            timeouts: timeouts?,
            bare_lf: bare_lf?,
            insecure_allow_plaintext_auth: insecure_allow_plaintext_auth?,
        })
    }

    /// The listeners at `path` (`imap.listeners`, `submission.listeners`); unnamed ones
    /// are called `<name_prefix><index>`.
    fn listeners(
        &mut self,
        value: Option<&Value>,
        path: &str,
        name_prefix: &str,
    ) -> Option<Vec<Listener>> {
        let items = self.required(value, path, raw::sequence)?;
        if items.is_empty() {
            self.error(path, "must list at least one listener");
            return None;
        }
        let partial: Vec<PartialListener> = items
            .iter()
            .enumerate()
            .map(|(index, item)| self.listener(item, raw::element(path, index), name_prefix, index))
            .collect();

        self.check_listeners_unique(&partial);
        if self.tls_required_by.is_none() {
            self.tls_required_by = partial.iter().find_map(|l| match l.tls {
                Some(mode @ (ListenerTls::Starttls | ListenerTls::Implicit)) => {
                    Some((l.path.clone(), mode))
                }
                _ => None,
            });
        }

        partial
            .into_iter()
            .map(|l| {
                Some(Listener {
                    name: l.name?,
                    address: l.address?,
                    tls: l.tls?,
                })
            })
            .collect()
    }

    fn listener(
        &mut self,
        value: &Value,
        path: String,
        name_prefix: &str,
        index: usize,
    ) -> PartialListener {
        let Some(raw) = self.section::<RawListener>(value, &path) else {
            return PartialListener {
                path,
                name: None,
                address: None,
                tls: None,
            };
        };
        let name = self.optional(
            raw.name.as_ref(),
            &raw::child(&path, "name"),
            format!("{name_prefix}{index}"),
            listener_name,
        );
        let address = self.required(
            raw.address.as_ref(),
            &raw::child(&path, "address"),
            raw::socket_addr,
        );
        let tls = self.required(raw.tls.as_ref(), &raw::child(&path, "tls"), |v| {
            raw::keyword(
                v,
                "TLS mode",
                &[
                    ("none", ListenerTls::None),
                    ("starttls", ListenerTls::Starttls),
                    ("implicit", ListenerTls::Implicit),
                ],
            )
        });
        PartialListener {
            path,
            name,
            address,
            tls,
        }
    }

    /// Names label metrics and addresses are bound, so both must be unique. Each later
    /// listener is reported against the first one it collides with.
    fn check_listeners_unique(&mut self, listeners: &[PartialListener]) {
        for (i, later) in listeners.iter().enumerate() {
            let earlier = &listeners[..i];
            if let Some(name) = &later.name {
                if let Some(first) = earlier.iter().find(|l| l.name.as_ref() == Some(name)) {
                    self.error(
                        raw::child(&later.path, "name"),
                        format!("duplicate listener name {name:?} (also {})", first.path),
                    );
                }
            }
            if let Some(address) = later.address {
                let clash = earlier.iter().find_map(|l| {
                    l.address
                        .filter(|&a| bind_conflict(a, address))
                        .map(|a| (l, a))
                });
                if let Some((first, first_address)) = clash {
                    let message = if first_address == address {
                        format!("duplicate address {address} (also {})", first.path)
                    } else {
                        format!(
                            "address {address} overlaps {first_address} of {}",
                            first.path
                        )
                    };
                    self.error(raw::child(&later.path, "address"), message);
                }
            }
        }
    }

    fn upstream(&mut self, value: Option<&Value>, path: &str) -> Option<Upstream> {
        let raw: RawUpstream = self.required_section(value, path)?;
        let key = |name: &str| raw::child(path, name);
        let address = self.required(raw.address.as_ref(), &key("address"), |v| {
            HostPort::parse(raw::string(v)?)
        });
        let implicit = self.optional(
            raw.tls.as_ref(),
            &key("tls"),
            matches!(DEFAULT_UPSTREAM_TLS, UpstreamTls::Implicit { .. }),
            |v| {
                raw::keyword(
                    v,
                    "upstream TLS mode",
                    &[("none", false), ("implicit", true)],
                )
            },
        );
        let server_name = self.present(raw.server_name.as_ref(), &key("server_name"), server_name);
        let ca_file = self.present(raw.ca_file.as_ref(), &key("ca_file"), file_path);
        let connect_timeout = self.optional(
            raw.connect_timeout.as_ref(),
            &key("connect_timeout"),
            DEFAULT_UPSTREAM_CONNECT_TIMEOUT,
            |v| bounded_duration(v, Duration::ZERO),
        );

        let tls = match implicit? {
            false => {
                for (given, name) in [
                    (matches!(server_name, Some(Some(_))), "server_name"),
                    (matches!(ca_file, Some(Some(_))), "ca_file"),
                ] {
                    if given {
                        self.error(key(name), "only allowed with tls: implicit");
                    }
                }
                Some(UpstreamTls::None)
            }
            true => {
                let ca_file = match ca_file {
                    Some(Some(ca_file)) => Some(ca_file),
                    Some(None) => {
                        // The process trusts no system roots for the upstream, so without
                        // a CA file no upstream certificate could ever verify.
                        self.error(key("ca_file"), "missing: required with tls: implicit");
                        None
                    }
                    None => None,
                };
                let server_name = match (server_name, &address) {
                    (Some(Some(name)), _) => Some(name),
                    (Some(None), Some(address)) => {
                        // The default must be a valid TLS name too, or the first connect
                        // fails; say so now, where the fix (set server_name) is obvious.
                        let name = server_name_str(&address.host).map_err(|e| {
                            format!(
                                "{e}; the default is the upstream host, set server_name explicitly"
                            )
                        });
                        self.record(&key("server_name"), name)
                    }
                    _ => None,
                };
                match (server_name, ca_file) {
                    (Some(server_name), Some(ca_file)) => Some(UpstreamTls::Implicit {
                        server_name,
                        ca_file,
                    }),
                    _ => None,
                }
            }
        };

        let address = address?;
        Some(Upstream {
            host: address.host,
            port: address.port,
            tls: tls?,
            connect_timeout: connect_timeout?,
        })
    }

    /// An upstream that is one of our own listeners would make every session connect to
    /// the proxy itself, recursively. `front` is the section: "imap", "submission".
    fn check_upstream_is_not_a_listener(
        &mut self,
        upstream: &Upstream,
        front: &str,
        listeners: &[Listener],
    ) {
        let Ok(ip) = upstream.host.parse::<IpAddr>() else {
            return;
        };
        let target = SocketAddr::new(ip, upstream.port);
        let reaches = |listener: SocketAddr| {
            listener == target
                || (listener.port() == target.port()
                    && listener.ip().is_unspecified()
                    && listener.is_ipv4() == target.is_ipv4()
                    && (ip.is_loopback() || ip.is_unspecified()))
        };
        if let Some((index, listener)) = listeners
            .iter()
            .enumerate()
            .find(|(_, l)| reaches(l.address))
        {
            self.error(
                format!("{front}.upstream.address"),
                format!(
                    "{target} is the proxy's own listener {} ({}): sessions would loop back into the proxy",
                    raw::element(&format!("{front}.listeners"), index),
                    listener.address
                ),
            );
        }
    }

    fn limits(&mut self, value: Option<&Value>) -> Option<ImapLimits> {
        let raw: RawLimits = self.optional_section(value, "imap.limits")?;
        let max_line_bytes = self.optional(
            raw.max_line_bytes.as_ref(),
            "imap.limits.max_line_bytes",
            DEFAULT_MAX_LINE_BYTES,
            memory_size_in(MAX_LINE_BYTES_RANGE),
        );
        let max_literal_bytes = self.optional(
            raw.max_literal_bytes.as_ref(),
            "imap.limits.max_literal_bytes",
            DEFAULT_MAX_LITERAL_BYTES,
            byte_size_in(MAX_LITERAL_BYTES_RANGE),
        );
        let max_sessions = self.optional(
            raw.max_sessions.as_ref(),
            "imap.limits.max_sessions",
            DEFAULT_MAX_SESSIONS,
            at_least_one,
        );
        Some(ImapLimits {
            max_line_bytes: max_line_bytes?,
            max_literal_bytes: max_literal_bytes?,
            max_sessions: max_sessions?,
        })
    }

    fn imap_timeouts(&mut self, value: Option<&Value>) -> Option<ImapTimeouts> {
        const PATH: &str = "imap.timeouts";
        let raw: RawTimeouts = self.optional_section(value, PATH)?;
        let [tls_handshake, pre_auth, idle, upstream_reply, auth_failure_delay] = self.timeouts(
            PATH,
            [
                (
                    "tls_handshake",
                    &raw.tls_handshake,
                    DEFAULT_TLS_HANDSHAKE_TIMEOUT,
                    Duration::ZERO,
                ),
                (
                    "pre_auth",
                    &raw.pre_auth,
                    DEFAULT_PRE_AUTH_TIMEOUT,
                    Duration::ZERO,
                ),
                ("idle", &raw.idle, DEFAULT_IDLE_TIMEOUT, MIN_IDLE_TIMEOUT),
                (
                    "upstream_reply",
                    &raw.upstream_reply,
                    DEFAULT_UPSTREAM_REPLY_TIMEOUT,
                    Duration::ZERO,
                ),
                (
                    "auth_failure_delay",
                    &raw.auth_failure_delay,
                    DEFAULT_AUTH_FAILURE_DELAY,
                    Duration::ZERO,
                ),
            ],
        )?;
        Some(ImapTimeouts {
            tls_handshake,
            pre_auth,
            idle,
            upstream_reply,
            auth_failure_delay,
        })
    }

    /// `Some(None)`: no `tls` section and no listener needs one; `None`: invalid.
    fn tls(&mut self, value: Option<&Value>) -> Option<Option<TlsFiles>> {
        let Some(value) = value else {
            let Some((listener, mode)) = &self.tls_required_by else {
                return Some(None);
            };
            let message = format!(
                "missing: certificate and private_key are required because {listener} uses tls: {}",
                listener_tls_name(*mode)
            );
            self.error("tls", message);
            return None;
        };
        let raw: RawTls = self.section(value, "tls")?;
        let certificate = self.required(raw.certificate.as_ref(), "tls.certificate", file_path);
        let private_key = self.required(raw.private_key.as_ref(), "tls.private_key", file_path);
        Some(Some(TlsFiles {
            certificate: certificate?,
            private_key: private_key?,
        }))
    }

    fn coi(&mut self, value: Option<&Value>) -> Option<CoiConfig> {
        let raw: RawCoi = self.optional_section(value, "coi")?;
        let mailbox_root = self.optional(
            raw.mailbox_root.as_ref(),
            "coi.mailbox_root",
            DEFAULT_MAILBOX_ROOT.to_owned(),
            mailbox_root,
        );
        let tokens = self.tokens(raw.tokens.as_ref());
        let server = self.present(raw.server.as_ref(), "coi.server", |v| {
            let text = raw::string(v)?;
            crate::coi::headers::HeaderRewriter::new(Some(text))
                .map(|_| text.to_owned())
                .map_err(|_| {
                    format!("invalid {text:?} (expected host:port, e.g. \"coi.example.org:4433\")")
                })
        });
        Some(CoiConfig {
            mailbox_root: mailbox_root?,
            tokens: tokens?,
            server: server?,
        })
    }

    fn tokens(&mut self, value: Option<&Value>) -> Option<TokenConfig> {
        let raw: RawTokens = self.optional_section(value, "coi.tokens")?;
        let temporary = self.secrets(
            raw.temporary_secrets.as_ref(),
            "coi.tokens.temporary_secrets",
        );
        let permanent = self.secrets(
            raw.permanent_secrets.as_ref(),
            "coi.tokens.permanent_secrets",
        );
        let temporary_validity = self.optional(
            raw.temporary_validity.as_ref(),
            "coi.tokens.temporary_validity",
            DEFAULT_TEMPORARY_TOKEN_VALIDITY,
            token_validity,
        );
        Some(TokenConfig {
            secrets: Secrets {
                temporary: temporary?,
                permanent: permanent?,
            },
            temporary_validity: temporary_validity?,
        })
    }

    /// A list of token secrets, each at least [`MIN_TOKEN_SECRET_LEN`] bytes, no
    /// duplicates; absent means none. A bad secret is never echoed in the message.
    fn secrets(&mut self, value: Option<&Value>, path: &str) -> Option<Vec<Secret>> {
        let items = self.optional(value, path, &[][..], raw::sequence)?;
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for (index, item) in items.iter().enumerate() {
            let at = raw::element(path, index);
            let secret = raw::string(item).and_then(|text| {
                if text.len() < MIN_TOKEN_SECRET_LEN {
                    return Err(format!(
                        "too short ({} bytes; at least {MIN_TOKEN_SECRET_LEN})",
                        text.len()
                    ));
                }
                if items[..index]
                    .iter()
                    .any(|earlier| earlier.as_str() == Some(text))
                {
                    return Err("duplicate secret".to_owned());
                }
                Secret::new(text.as_bytes().to_vec()).map_err(|e| e.to_string())
            });
            match self.record(&at, secret) {
                Some(secret) => out.push(secret),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    /// `None` inside: the section is absent (no mailbox writer).
    fn mailbox_writer(&mut self, value: Option<&Value>) -> Option<Option<MailboxWriterConfig>> {
        let Some(value) = value else {
            return Some(None);
        };
        let raw: RawMailboxWriter = self.section(value, "mailbox_writer")?;
        let master_user = self.required(
            raw.master_user.as_ref(),
            "mailbox_writer.master_user",
            |v| {
                let user = raw::string(v)?;
                if user.is_empty() || user.chars().any(char::is_control) {
                    return Err("must be a non-empty name without control characters".into());
                }
                Ok(user.to_owned())
            },
        );
        let master_password = self.required(
            raw.master_password.as_ref(),
            "mailbox_writer.master_password",
            |v| {
                let password = raw::string(v)?;
                if password.is_empty() {
                    return Err("must not be empty".into());
                }
                Ok(password.to_owned())
            },
        );
        let max_connections = self.optional(
            raw.max_connections.as_ref(),
            "mailbox_writer.max_connections",
            crate::proxy::writer::DEFAULT_MAX_CONNECTIONS,
            at_least_one,
        );
        let max_idle_per_user = self.optional(
            raw.max_idle_per_user.as_ref(),
            "mailbox_writer.max_idle_per_user",
            crate::proxy::writer::DEFAULT_MAX_IDLE_PER_USER,
            |v| usize::try_from(raw::unsigned(v)?).map_err(|_| "too large".to_owned()),
        );
        Some(Some(MailboxWriterConfig {
            master_user: master_user?,
            master_password: master_password?,
            max_connections: max_connections?,
            max_idle_per_user: max_idle_per_user?,
        }))
    }

    /// `None` inside: the section is absent (no delivery hook).
    fn delivery(&mut self, value: Option<&Value>) -> Option<Option<DeliveryConfig>> {
        let Some(value) = value else {
            return Some(None);
        };
        let raw: RawDelivery = self.section(value, "delivery")?;
        let address = self.required(raw.address.as_ref(), "delivery.address", raw::socket_addr);
        let upstream = self.upstream(raw.upstream.as_ref(), "delivery.upstream");
        let hostname = self.required(raw.hostname.as_ref(), "delivery.hostname", |v| {
            domain_name(raw::string(v)?)
        });
        let user_name = self.optional(
            raw.user_name.as_ref(),
            "delivery.user_name",
            DEFAULT_USER_NAME,
            |v| {
                raw::keyword(
                    v,
                    "user name form",
                    &[
                        ("address", UserName::Address),
                        ("local_part", UserName::LocalPart),
                    ],
                )
            },
        );
        let spool_directory = self.present(
            raw.spool_directory.as_ref(),
            "delivery.spool_directory",
            file_path,
        );
        let limits = self.delivery_limits(raw.limits.as_ref());
        let timeouts = self.delivery_timeouts(raw.timeouts.as_ref());
        if let (Some(address), Some(upstream)) = (address, &upstream) {
            let listener = Listener {
                name: "delivery".to_owned(),
                address,
                tls: ListenerTls::None,
            };
            self.check_upstream_is_not_a_listener(upstream, "delivery", &[listener]);
        }
        Some(Some(DeliveryConfig {
            address: address?,
            upstream: upstream?,
            hostname: hostname?,
            user_name: user_name?,
            spool_directory: spool_directory?,
            limits: limits?,
            timeouts: timeouts?,
        }))
    }

    fn delivery_limits(&mut self, value: Option<&Value>) -> Option<DeliveryLimits> {
        let raw: RawDeliveryLimits = self.optional_section(value, "delivery.limits")?;
        let max_message_bytes = self.optional(
            raw.max_message_bytes.as_ref(),
            "delivery.limits.max_message_bytes",
            DEFAULT_DELIVERY_MAX_MESSAGE_BYTES,
            byte_size_in(MAX_LITERAL_BYTES_RANGE),
        );
        let max_recipients = self.optional(
            raw.max_recipients.as_ref(),
            "delivery.limits.max_recipients",
            DEFAULT_DELIVERY_MAX_RECIPIENTS,
            at_least_one,
        );
        let max_sessions = self.optional(
            raw.max_sessions.as_ref(),
            "delivery.limits.max_sessions",
            DEFAULT_DELIVERY_MAX_SESSIONS,
            at_least_one,
        );
        let spool_memory_bytes = self.optional(
            raw.spool_memory_bytes.as_ref(),
            "delivery.limits.spool_memory_bytes",
            DEFAULT_SPOOL_MEMORY_BYTES,
            memory_size_in(SPOOL_MEMORY_BYTES_RANGE),
        );
        Some(DeliveryLimits {
            max_message_bytes: max_message_bytes?,
            max_recipients: max_recipients?,
            max_sessions: max_sessions?,
            spool_memory_bytes: spool_memory_bytes?,
        })
    }

    fn delivery_timeouts(&mut self, value: Option<&Value>) -> Option<DeliveryTimeouts> {
        const PATH: &str = "delivery.timeouts";
        let raw: RawDeliveryTimeouts = self.optional_section(value, PATH)?;
        let [command, upstream_reply] = self.timeouts(
            PATH,
            [
                (
                    "command",
                    &raw.command,
                    DEFAULT_SUBMISSION_COMMAND_TIMEOUT,
                    Duration::ZERO,
                ),
                (
                    "upstream_reply",
                    &raw.upstream_reply,
                    DEFAULT_SUBMISSION_UPSTREAM_REPLY_TIMEOUT,
                    Duration::ZERO,
                ),
            ],
        )?;
        Some(DeliveryTimeouts {
            command,
            upstream_reply,
        })
    }

    /// `None` inside: the section is absent (no submission front).
    fn submission(
        &mut self,
        value: Option<&Value>,
        imap_listeners: Option<&[Listener]>,
    ) -> Option<Option<SubmissionConfig>> {
        const PATH: &str = "submission";
        let Some(value) = value else {
            return Some(None);
        };
        let raw: RawSubmission = self.section(value, PATH)?;
        let listeners = self.listeners(
            raw.listeners.as_ref(),
            "submission.listeners",
            DEFAULT_SUBMISSION_LISTENER_NAME_PREFIX,
        );
        if let (Some(imap), Some(listeners)) = (imap_listeners, &listeners) {
            self.check_fronts_do_not_overlap(imap, listeners);
        }
        let upstream = self.upstream(raw.upstream.as_ref(), "submission.upstream");
        let hostname = self.required(raw.hostname.as_ref(), "submission.hostname", |v| {
            let name = raw::string(v)?;
            domain_name(name)
        });
        let sender_domains = self.optional(
            raw.sender_domains.as_ref(),
            "submission.sender_domains",
            Vec::new(),
            |v| {
                raw::sequence(v)?
                    .iter()
                    .map(|item| domain_name(raw::string(item)?).map(|d| d.to_ascii_lowercase()))
                    .collect()
            },
        );
        let limits = self.submission_limits(raw.limits.as_ref());
        let timeouts = self.submission_timeouts(raw.timeouts.as_ref());
        let insecure_allow_plaintext_auth = self.optional(
            raw.insecure_allow_plaintext_auth.as_ref(),
            "submission.insecure_allow_plaintext_auth",
            DEFAULT_INSECURE_ALLOW_PLAINTEXT_AUTH,
            raw::boolean,
        );
        let insecure_allow_any_sender = self.optional(
            raw.insecure_allow_any_sender.as_ref(),
            "submission.insecure_allow_any_sender",
            false,
            raw::boolean,
        );
        if let (Some(listeners), Some(upstream)) = (&listeners, &upstream) {
            self.check_upstream_is_not_a_listener(upstream, PATH, listeners);
        }
        Some(Some(SubmissionConfig {
            listeners: listeners?,
            upstream: upstream?,
            hostname: hostname?,
            sender_domains: sender_domains?,
            limits: limits?,
            timeouts: timeouts?,
            insecure_allow_plaintext_auth: insecure_allow_plaintext_auth?,
            insecure_allow_any_sender: insecure_allow_any_sender?,
        }))
    }

    fn submission_limits(&mut self, value: Option<&Value>) -> Option<SubmissionLimits> {
        let raw: RawSubmissionLimits = self.optional_section(value, "submission.limits")?;
        let max_line_bytes = self.optional(
            raw.max_line_bytes.as_ref(),
            "submission.limits.max_line_bytes",
            DEFAULT_SUBMISSION_MAX_LINE_BYTES,
            memory_size_in(SUBMISSION_MAX_LINE_BYTES_RANGE),
        );
        let max_message_bytes = self.optional(
            raw.max_message_bytes.as_ref(),
            "submission.limits.max_message_bytes",
            DEFAULT_SUBMISSION_MAX_MESSAGE_BYTES,
            byte_size_in(SUBMISSION_MAX_MESSAGE_BYTES_RANGE),
        );
        let max_recipients = self.optional(
            raw.max_recipients.as_ref(),
            "submission.limits.max_recipients",
            DEFAULT_SUBMISSION_MAX_RECIPIENTS,
            at_least_one,
        );
        let max_sessions = self.optional(
            raw.max_sessions.as_ref(),
            "submission.limits.max_sessions",
            DEFAULT_MAX_SESSIONS,
            at_least_one,
        );
        Some(SubmissionLimits {
            max_line_bytes: max_line_bytes?,
            max_message_bytes: max_message_bytes?,
            max_recipients: max_recipients?,
            max_sessions: max_sessions?,
        })
    }

    fn submission_timeouts(&mut self, value: Option<&Value>) -> Option<SubmissionTimeouts> {
        const PATH: &str = "submission.timeouts";
        let raw: RawSubmissionTimeouts = self.optional_section(value, PATH)?;
        let [tls_handshake, pre_auth, command, upstream_reply] = self.timeouts(
            PATH,
            [
                (
                    "tls_handshake",
                    &raw.tls_handshake,
                    DEFAULT_TLS_HANDSHAKE_TIMEOUT,
                    Duration::ZERO,
                ),
                (
                    "pre_auth",
                    &raw.pre_auth,
                    DEFAULT_PRE_AUTH_TIMEOUT,
                    Duration::ZERO,
                ),
                (
                    "command",
                    &raw.command,
                    DEFAULT_SUBMISSION_COMMAND_TIMEOUT,
                    Duration::ZERO,
                ),
                (
                    "upstream_reply",
                    &raw.upstream_reply,
                    DEFAULT_SUBMISSION_UPSTREAM_REPLY_TIMEOUT,
                    Duration::ZERO,
                ),
            ],
        )?;
        Some(SubmissionTimeouts {
            tls_handshake,
            pre_auth,
            command,
            upstream_reply,
        })
    }

    /// `has_mailbox_writer`: the document has a `mailbox_writer` section (valid or not),
    /// which peer links need.
    fn peer(&mut self, value: Option<&Value>, has_mailbox_writer: bool) -> Option<PeerConfig> {
        let raw: RawPeer = self.optional_section(value, "peer")?;
        let link = self.peer_link(&raw, has_mailbox_writer);
        let routes = self.peer_routes(raw.routes.as_ref());
        let dns = self.peer_dns(raw.dns.as_ref());
        Some(PeerConfig {
            routes: routes?,
            dns: dns?,
            link: link?,
        })
    }

    /// `peer.address` and the keys beside it. `Some(None)`: no `address`, so no peer
    /// links; then each other link key is an error, so that an operator who forgot
    /// `address` is told rather than silently left without links. With `address`, the
    /// certificate, its key and the CA file are required.
    fn peer_link(
        &mut self,
        raw: &RawPeer,
        has_mailbox_writer: bool,
    ) -> Option<Option<PeerLinkConfig>> {
        let key = |name: &str| raw::child("peer", name);
        let others = [
            ("certificate", &raw.certificate),
            ("private_key", &raw.private_key),
            ("ca_file", &raw.ca_file),
            ("delivery_timeout", &raw.delivery_timeout),
            ("max_message_bytes", &raw.max_message_bytes),
        ];
        let Some(address) = raw.address.as_ref() else {
            let mut ok = true;
            for (name, value) in others {
                if value.is_some() {
                    self.error(
                        key(name),
                        "only meaningful with peer.address, which is not set (no peer links)",
                    );
                    ok = false;
                }
            }
            return ok.then_some(None);
        };
        let mut address = self.record(&key("address"), raw::socket_addr(address));
        if address.is_some() && !has_mailbox_writer {
            self.error(
                key("address"),
                "requires the mailbox_writer section: messages that arrive over peer links are stored, and Contacts read, through it",
            );
            address = None;
        }
        let mut required = |name: &str, value: &Option<Value>| match value {
            Some(value) => self.record(&key(name), file_path(value)),
            None => {
                self.error(key(name), "missing: required when peer.address is set");
                None
            }
        };
        let certificate = required("certificate", &raw.certificate);
        let private_key = required("private_key", &raw.private_key);
        let ca_file = required("ca_file", &raw.ca_file);
        let delivery_timeout = self.optional(
            raw.delivery_timeout.as_ref(),
            &key("delivery_timeout"),
            DEFAULT_PEER_DELIVERY_TIMEOUT,
            duration_in(PEER_DELIVERY_TIMEOUT_RANGE),
        );
        let max_message_bytes = self.optional(
            raw.max_message_bytes.as_ref(),
            &key("max_message_bytes"),
            DEFAULT_PEER_MAX_MESSAGE_BYTES,
            byte_size_in(PEER_MAX_MESSAGE_BYTES_RANGE),
        );
        Some(Some(PeerLinkConfig {
            address: address?,
            tls: TlsFiles {
                certificate: certificate?,
                private_key: private_key?,
            },
            ca_file: ca_file?,
            delivery_timeout: delivery_timeout?,
            max_message_bytes: max_message_bytes?,
        }))
    }

    /// `peer.routes`: absent means none. Each domain at most once, compared after
    /// normalisation ("B.Example." and "b.example" are one domain).
    fn peer_routes(&mut self, value: Option<&Value>) -> Option<Vec<PeerRoute>> {
        const PATH: &str = "peer.routes";
        let items = self.optional(value, PATH, &[][..], raw::sequence)?;
        let mut routes = Vec::with_capacity(items.len());
        // Every valid domain with the path of its route, for the duplicate check.
        let mut seen: Vec<(String, String)> = Vec::with_capacity(items.len());
        let mut ok = true;
        for (index, item) in items.iter().enumerate() {
            let path = raw::element(PATH, index);
            let Some(raw) = self.section::<RawPeerRoute>(item, &path) else {
                ok = false;
                continue;
            };
            let domain_path = raw::child(&path, "domain");
            let domain = self.required(raw.domain.as_ref(), &domain_path, peer_domain);
            if let Some(domain) = &domain {
                if let Some((_, first)) = seen.iter().find(|(d, _)| d == domain) {
                    self.error(
                        &domain_path,
                        format!("duplicate route for {domain:?} (also {first})"),
                    );
                    ok = false;
                }
                seen.push((domain.clone(), path.clone()));
            }
            let address = self.required(raw.address.as_ref(), &raw::child(&path, "address"), |v| {
                HostPort::parse(raw::string(v)?)
            });
            match (domain, address) {
                (Some(domain), Some(address)) => routes.push(PeerRoute {
                    domain,
                    host: address.host,
                    port: address.port,
                }),
                _ => ok = false,
            }
        }
        ok.then_some(routes)
    }

    /// `peer.dns.nameservers`: `Some(None)` when absent (the system's resolv.conf);
    /// otherwise at least one ip:port, none twice, no port 0 (which nothing answers from).
    fn peer_nameservers(&mut self, value: Option<&Value>) -> Option<Option<Vec<SocketAddr>>> {
        const PATH: &str = "peer.dns.nameservers";
        let Some(items) = self.present(value, PATH, raw::sequence)? else {
            return Some(None);
        };
        if items.is_empty() {
            self.error(
                PATH,
                "must list at least one nameserver (leave the key out to use the system's resolv.conf)",
            );
            return None;
        }
        // Each valid address with its index, for the duplicate check.
        let mut valid: Vec<(usize, SocketAddr)> = Vec::with_capacity(items.len());
        let mut ok = true;
        for (index, item) in items.iter().enumerate() {
            let address = raw::socket_addr(item).and_then(|address| {
                if address.port() == 0 {
                    return Err(format!("{address}: port 0 is not a nameserver port"));
                }
                if let Some((first, _)) = valid.iter().find(|(_, a)| *a == address) {
                    return Err(format!(
                        "duplicate nameserver {address} (also {})",
                        raw::element(PATH, *first)
                    ));
                }
                Ok(address)
            });
            match self.record(&raw::element(PATH, index), address) {
                Some(address) => valid.push((index, address)),
                None => ok = false,
            }
        }
        ok.then(|| Some(valid.into_iter().map(|(_, address)| address).collect()))
    }

    fn peer_dns(&mut self, value: Option<&Value>) -> Option<PeerDnsConfig> {
        const PATH: &str = "peer.dns";
        let raw: RawPeerDns = self.optional_section(value, PATH)?;
        let nameservers = self.peer_nameservers(raw.nameservers.as_ref());
        let [timeout, max_ttl, negative_ttl, error_ttl] = self.timeouts(
            PATH,
            [
                (
                    "timeout",
                    &raw.timeout,
                    DEFAULT_PEER_DNS_TIMEOUT,
                    Duration::ZERO,
                ),
                (
                    "max_ttl",
                    &raw.max_ttl,
                    DEFAULT_PEER_DNS_MAX_TTL,
                    Duration::ZERO,
                ),
                (
                    "negative_ttl",
                    &raw.negative_ttl,
                    DEFAULT_PEER_DNS_NEGATIVE_TTL,
                    Duration::ZERO,
                ),
                (
                    "error_ttl",
                    &raw.error_ttl,
                    DEFAULT_PEER_DNS_ERROR_TTL,
                    Duration::ZERO,
                ),
            ],
        )?;
        Some(PeerDnsConfig {
            nameservers: nameservers?,
            timeout,
            max_ttl,
            negative_ttl,
            error_ttl,
        })
    }

    fn admin(&mut self, value: Option<&Value>) -> Option<AdminConfig> {
        let raw: RawAdmin = self.optional_section(value, "admin")?;
        let address = self.optional(
            raw.address.as_ref(),
            "admin.address",
            Some(DEFAULT_ADMIN_ADDRESS),
            |v| {
                if v.as_str() == Some(ADMIN_ADDRESS_OFF) {
                    return Ok(None);
                }
                raw::socket_addr(v)
                    .map(Some)
                    .map_err(|e| format!("{e}; use \"{ADMIN_ADDRESS_OFF}\" to disable"))
            },
        )?;
        Some(AdminConfig { address })
    }

    /// The admin endpoint and a front's listener cannot share a bound address.
    fn check_admin_is_not_a_listener(&mut self, admin: SocketAddr, bound: &[(String, SocketAddr)]) {
        if let Some((path, address)) = bound.iter().find(|(_, a)| bind_conflict(*a, admin)) {
            self.error(
                "admin.address",
                format!("{admin} overlaps {address} of {path}"),
            );
        }
    }

    /// An IMAP and a submission listener cannot share a bound address.
    fn check_fronts_do_not_overlap(&mut self, imap: &[Listener], submission: &[Listener]) {
        for (index, listener) in submission.iter().enumerate() {
            if let Some((first, other)) = imap
                .iter()
                .enumerate()
                .find(|(_, l)| bind_conflict(l.address, listener.address))
            {
                self.error(
                    raw::child(&raw::element("submission.listeners", index), "address"),
                    format!(
                        "address {} overlaps {} of {}",
                        listener.address,
                        other.address,
                        raw::element("imap.listeners", first)
                    ),
                );
            }
        }
    }

    fn log(&mut self, value: Option<&Value>) -> Option<LogConfig> {
        let raw: RawLog = self.optional_section(value, "log")?;
        let format = self.optional(raw.format.as_ref(), "log.format", DEFAULT_LOG_FORMAT, |v| {
            raw::keyword(
                v,
                "log format",
                &[("text", LogFormat::Text), ("json", LogFormat::Json)],
            )
        });
        let level = self.optional(
            raw.level.as_ref(),
            "log.level",
            DEFAULT_LOG_LEVEL.to_owned(),
            log_level,
        );
        Some(LogConfig {
            format: format?,
            level: level?,
        })
    }

    fn shutdown(&mut self, value: Option<&Value>) -> Option<ShutdownConfig> {
        let raw: RawShutdown = self.optional_section(value, "shutdown")?;
        let grace = self.optional(
            raw.grace.as_ref(),
            "shutdown.grace",
            DEFAULT_SHUTDOWN_GRACE,
            |v| bounded_duration(v, Duration::ZERO),
        )?;
        Some(ShutdownConfig { grace })
    }

    // Plumbing: each helper records at most one error per value and returns `None`
    // exactly when it did.

    fn error(&mut self, path: impl Into<String>, message: impl AsRef<str>) {
        self.errors.push(ConfigError {
            path: path.into(),
            message: raw::single_line(message.as_ref()),
        });
    }

    fn record<T>(&mut self, path: &str, result: Result<T, String>) -> Option<T> {
        result.map_err(|message| self.error(path, message)).ok()
    }

    fn section<T: DeserializeOwned + Default>(&mut self, value: &Value, path: &str) -> Option<T> {
        raw::section(value, path, &mut self.errors)
    }

    fn required_section<T: DeserializeOwned + Default>(
        &mut self,
        value: Option<&Value>,
        path: &str,
    ) -> Option<T> {
        let Some(value) = value else {
            self.error(path, "missing required section");
            return None;
        };
        self.section(value, path)
    }

    fn optional_section<T: DeserializeOwned + Default>(
        &mut self,
        value: Option<&Value>,
        path: &str,
    ) -> Option<T> {
        match value {
            Some(value) => self.section(value, path),
            None => Some(T::default()),
        }
    }

    /// `Some(None)`: the key is absent (or null); `None`: present but invalid.
    fn present<'v, T>(
        &mut self,
        value: Option<&'v Value>,
        path: &str,
        convert: impl FnOnce(&'v Value) -> Result<T, String>,
    ) -> Option<Option<T>> {
        match value {
            None => Some(None),
            Some(value) => self.record(path, convert(value)).map(Some),
        }
    }

    fn optional<'v, T>(
        &mut self,
        value: Option<&'v Value>,
        path: &str,
        default: T,
        convert: impl FnOnce(&'v Value) -> Result<T, String>,
    ) -> Option<T> {
        self.present(value, path, convert)
            .map(|value| value.unwrap_or(default))
    }

    /// The timeouts of the section at `path`, all or none: each key (name, value,
    /// default, minimum) is a [`bounded_duration`] above its minimum, or its default when
    /// absent, and every invalid one is recorded before `None` is returned.
    fn timeouts<const N: usize>(
        &mut self,
        path: &str,
        keys: [TimeoutKey<'_>; N],
    ) -> Option<[Duration; N]> {
        let mut timeouts = [Duration::ZERO; N];
        let mut ok = true;
        for (timeout, (name, value, default, min)) in timeouts.iter_mut().zip(keys) {
            let path = raw::child(path, name);
            match self.optional(value.as_ref(), &path, default, |v| bounded_duration(v, min)) {
                Some(duration) => *timeout = duration,
                None => ok = false,
            }
        }
        ok.then_some(timeouts)
    }

    fn required<'v, T>(
        &mut self,
        value: Option<&'v Value>,
        path: &str,
        convert: impl FnOnce(&'v Value) -> Result<T, String>,
    ) -> Option<T> {
        match self.present(value, path, convert)? {
            Some(value) => Some(value),
            None => {
                self.error(path, "missing required key");
                None
            }
        }
    }
}

/// `[a-z0-9_-]{1,32}`: the name becomes a metric label and a log field.
fn listener_name(value: &Value) -> Result<String, String> {
    let name = raw::string(value)?;
    let valid = (1..=MAX_LISTENER_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !valid {
        return Err(format!(
            "invalid listener name {name:?} (expected 1 to {MAX_LISTENER_NAME_LEN} of a-z, 0-9, '_', '-')"
        ));
    }
    Ok(name.to_owned())
}

fn listener_tls_name(mode: ListenerTls) -> &'static str {
    match mode {
        ListenerTls::None => "none",
        ListenerTls::Starttls => "starttls",
        ListenerTls::Implicit => "implicit",
    }
}

/// Two listen addresses that cannot both be bound: the same address, or the same port
/// where one side is the wildcard of the same family (Linux refuses that bind). Port 0
/// asks the kernel for a fresh port each time, so it never clashes.
fn bind_conflict(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port()
        && a.port() != 0
        && (a.ip() == b.ip()
            || (a.is_ipv4() == b.is_ipv4() && (a.ip().is_unspecified() || b.ip().is_unspecified())))
}

/// A name the upstream certificate is checked against: a DNS name or an IP literal.
fn server_name(value: &Value) -> Result<String, String> {
    server_name_str(raw::string(value)?)
}

fn server_name_str(name: &str) -> Result<String, String> {
    rustls_pki_types::ServerName::try_from(name)
        .map(|_| name.to_owned())
        .map_err(|_| format!("invalid TLS server name {name:?}"))
}

/// A file name; whether the file exists is checked at startup, not here.
fn file_path(value: &Value) -> Result<PathBuf, String> {
    let path = raw::string(value)?;
    if path.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if path.contains('\0') {
        return Err(format!("invalid file name {path:?}: contains NUL"));
    }
    Ok(PathBuf::from(path))
}

fn mailbox_root(value: &Value) -> Result<String, String> {
    let root = raw::string(value)?;
    if root.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if root.contains(MAILBOX_ROOT_FORBIDDEN) {
        return Err(format!(
            "invalid mailbox root {root:?}: must not contain CR, LF, NUL, '\"', '\\', '*' or '%'"
        ));
    }
    Ok(root.to_owned())
}

/// A tracing filter such as "info" or "coi_proxy=debug,info", parsed the way `EnvFilter`
/// parses it so a typo fails here rather than when logging starts.
fn log_level(value: &Value) -> Result<String, String> {
    let level = raw::string(value)?;
    if level.trim().is_empty() {
        return Err("must not be empty".to_owned());
    }
    for directive in level.split(',').filter(|d| !d.is_empty()) {
        directive
            .parse::<Directive>()
            .map_err(|e| format!("invalid log filter directive {directive:?}: {e}"))?;
    }
    Ok(level.to_owned())
}

/// A duration above `min` (or equal to it when `min` is not zero) and at most
/// [`MAX_DURATION`].
fn bounded_duration(value: &Value, min: Duration) -> Result<Duration, String> {
    let duration = raw::duration(value)?;
    if duration.is_zero() {
        return Err("must be greater than zero".to_owned());
    }
    if duration < min {
        return Err(format!(
            "{} is too short (at least {})",
            humantime::format_duration(duration),
            humantime::format_duration(min)
        ));
    }
    if duration > MAX_DURATION {
        return Err(format!(
            "{} is too long (at most {})",
            humantime::format_duration(duration),
            humantime::format_duration(MAX_DURATION)
        ));
    }
    Ok(duration)
}

/// A duration in `range`, whose start is above zero.
fn duration_in(range: RangeInclusive<Duration>) -> impl Fn(&Value) -> Result<Duration, String> {
    move |value| {
        let duration = raw::duration(value)?;
        if !range.contains(&duration) {
            return Err(format!(
                "{} is out of range ({} to {})",
                humantime::format_duration(duration),
                humantime::format_duration(*range.start()),
                humantime::format_duration(*range.end())
            ));
        }
        Ok(duration)
    }
}

/// A count of at least one (sessions, recipients).
fn at_least_one(value: &Value) -> Result<usize, String> {
    match usize::try_from(raw::unsigned(value)?) {
        Ok(0) => Err("must be at least 1".to_owned()),
        Ok(n) => Ok(n),
        Err(_) => Err("too large for this platform".to_owned()),
    }
}

/// The paths of a front's listeners, for messages naming them.
fn indexed<'a>(
    path: &'a str,
    listeners: &'a [Listener],
) -> impl Iterator<Item = (String, SocketAddr)> + 'a {
    listeners
        .iter()
        .enumerate()
        .map(move |(index, l)| (raw::element(path, index), l.address))
}

/// A DNS name as used in a greeting or an address: letters, digits, '-', '.', 1-253
/// bytes, no empty label.
fn domain_name(name: &str) -> Result<String, String> {
    let valid = (1..=253).contains(&name.len())
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if valid {
        Ok(name.to_owned())
    } else {
        Err(format!("invalid domain name {name:?}"))
    }
}

/// A mail domain of `peer.routes`, normalised as discovery normalises the domains it is
/// asked about, so that a route matches however the domain is spelt.
fn peer_domain(value: &Value) -> Result<String, String> {
    let domain = raw::string(value)?;
    crate::net::discovery::normalize_domain(domain).ok_or_else(|| {
        format!(
            "invalid domain name {domain:?} (expected a mail domain such as \"b.example\"; IDNs are accepted and stored as A-labels)"
        )
    })
}

/// A token validity: more than zero, at most [`MAX_TOKEN_VALIDITY`], whole seconds
/// (tokens carry seconds).
fn token_validity(value: &Value) -> Result<Duration, String> {
    let duration = raw::duration(value)?;
    if duration < Duration::from_secs(1) {
        return Err("must be at least 1s".to_owned());
    }
    if duration > MAX_TOKEN_VALIDITY {
        // In days: humantime would say "11months 30days 3h 50m 24s" for 365 days.
        const DAY: u64 = 86_400;
        return Err(format!(
            "{:.1} days is too long (at most {} days)",
            duration.as_secs_f64() / DAY as f64,
            MAX_TOKEN_VALIDITY.as_secs() / DAY
        ));
    }
    Ok(duration)
}

/// A byte size in `range`.
fn byte_size_in(range: RangeInclusive<u64>) -> impl Fn(&Value) -> Result<u64, String> {
    move |value| {
        let n = raw::byte_size(value)?;
        if !range.contains(&n) {
            return Err(out_of_range(n, *range.start(), *range.end()));
        }
        Ok(n)
    }
}

/// A byte size in `range`, for a buffer held in memory whole (a line).
fn memory_size_in(range: RangeInclusive<usize>) -> impl Fn(&Value) -> Result<usize, String> {
    let in_range = byte_size_in(*range.start() as u64..=*range.end() as u64);
    // Within `range`, so the size fits a usize.
    move |value| in_range(value).map(|n| n as usize)
}

fn out_of_range(n: u64, min: u64, max: u64) -> String {
    format!(
        "{} is out of range ({} to {})",
        show_bytes(n),
        show_bytes(min),
        show_bytes(max)
    )
}

/// "64 KiB" when exact, else the byte count: messages echo sizes in the unit a config
/// file would use.
fn show_bytes(n: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (unit, scale) in UNITS {
        if n >= scale && n.is_multiple_of(scale) {
            return format!("{} {unit}", n / scale);
        }
    }
    format!("{n} B")
}
