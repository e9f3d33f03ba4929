//! Unit tests for loading: defaults, every error kind with its exact path, scalar syntax
//! edge cases, and the fuzz entry on hostile input.

use std::net::SocketAddr;
use std::time::Duration;

use serde_yaml::Value;

use super::raw::{self, HostPort};
use super::*;

/// The smallest valid document, extended by the tests through `with`.
const MINIMAL: &str = "
imap:
  listeners:
    - address: \"127.0.0.1:1143\"
      tls: none
  upstream:
    address: \"127.0.0.1:10143\"
";

fn ok(yaml: &str) -> Config {
    match load_str(yaml) {
        Ok(config) => config,
        Err(errors) => panic!("expected a valid config, got:\n{errors}\n--- yaml ---{yaml}"),
    }
}

fn errors(yaml: &str) -> Vec<ConfigError> {
    match load_str(yaml) {
        Ok(config) => panic!("expected errors, got {config:#?}\n--- yaml ---{yaml}"),
        Err(errors) => errors.0,
    }
}

/// Each error as its key path and message, in the order reported.
fn paths_and_messages(errors: &[ConfigError]) -> Vec<(&str, &str)> {
    errors
        .iter()
        .map(|e| (e.path.as_str(), e.message.as_str()))
        .collect()
}

/// Asserts that loading fails with exactly one error, at `path`, whose message contains
/// `message`.
#[track_caller]
fn assert_only_error(yaml: &str, path: &str, message: &str) {
    let errors = errors(yaml);
    assert_eq!(errors.len(), 1, "expected one error, got {errors:#?}");
    assert_eq!(errors[0].path, path, "{errors:#?}");
    assert!(
        errors[0].message.contains(message),
        "message {:?} lacks {message:?}",
        errors[0].message
    );
}

/// The minimal document with extra YAML appended under the same root; the extra text
/// uses two-space indentation relative to the root.
fn minimal_with(extra: &str) -> String {
    format!("{MINIMAL}{extra}")
}

/// A document with the given listener list (YAML flow or block under `listeners:`).
fn with_listeners(listeners: &str) -> String {
    format!("imap:\n  listeners:\n{listeners}\n  upstream:\n    address: \"127.0.0.1:10143\"\n")
}

/// A document with the given upstream section body.
fn with_upstream(upstream: &str) -> String {
    format!(
        "imap:\n  listeners:\n    - address: \"127.0.0.1:1143\"\n      tls: none\n  upstream:\n{upstream}\n"
    )
}

fn limits(body: &str) -> String {
    minimal_with(&format!("  limits:\n{body}\n"))
}

fn timeouts(body: &str) -> String {
    minimal_with(&format!("  timeouts:\n{body}\n"))
}

fn string(s: &str) -> Value {
    Value::String(s.to_owned())
}

// ---------------------------------------------------------------------------------------
// Defaults

#[test]
fn minimal_config_gets_every_default_constant() {
    let config = ok(MINIMAL);
    let imap = &config.imap;
    assert_eq!(imap.upstream.tls, DEFAULT_UPSTREAM_TLS);
    assert_eq!(
        imap.upstream.connect_timeout,
        DEFAULT_UPSTREAM_CONNECT_TIMEOUT
    );
    assert_eq!(imap.limits.max_line_bytes, DEFAULT_MAX_LINE_BYTES);
    assert_eq!(imap.limits.max_literal_bytes, DEFAULT_MAX_LITERAL_BYTES);
    assert_eq!(imap.limits.max_sessions, DEFAULT_MAX_SESSIONS);
    assert_eq!(imap.timeouts.tls_handshake, DEFAULT_TLS_HANDSHAKE_TIMEOUT);
    assert_eq!(imap.timeouts.pre_auth, DEFAULT_PRE_AUTH_TIMEOUT);
    assert_eq!(imap.timeouts.idle, DEFAULT_IDLE_TIMEOUT);
    assert_eq!(imap.timeouts.upstream_reply, DEFAULT_UPSTREAM_REPLY_TIMEOUT);
    assert_eq!(imap.timeouts.auth_failure_delay, DEFAULT_AUTH_FAILURE_DELAY);
    assert_eq!(imap.bare_lf, DEFAULT_BARE_LF);
    assert_eq!(
        imap.insecure_allow_plaintext_auth,
        DEFAULT_INSECURE_ALLOW_PLAINTEXT_AUTH
    );
    assert_eq!(config.tls, None);
    assert_eq!(config.coi.mailbox_root, DEFAULT_MAILBOX_ROOT);
    assert_eq!(config.admin.address, Some(DEFAULT_ADMIN_ADDRESS));
    assert_eq!(config.log.format, DEFAULT_LOG_FORMAT);
    assert_eq!(config.log.level, DEFAULT_LOG_LEVEL);
    assert_eq!(config.shutdown.grace, DEFAULT_SHUTDOWN_GRACE);
    assert_eq!(
        config.peer,
        PeerConfig {
            routes: Vec::new(),
            dns: PeerDnsConfig {
                nameservers: None,
                timeout: DEFAULT_PEER_DNS_TIMEOUT,
                max_ttl: DEFAULT_PEER_DNS_MAX_TTL,
                negative_ttl: DEFAULT_PEER_DNS_NEGATIVE_TTL,
                error_ttl: DEFAULT_PEER_DNS_ERROR_TTL,
            },
            link: None,
        }
    );
}

#[test]
fn default_constants_have_their_documented_values() {
    assert_eq!(DEFAULT_MAX_LINE_BYTES, 65_536);
    assert_eq!(DEFAULT_MAX_LITERAL_BYTES, 52_428_800);
    assert_eq!(DEFAULT_MAX_SESSIONS, 10_000);
    assert_eq!(DEFAULT_UPSTREAM_CONNECT_TIMEOUT, Duration::from_secs(5));
    assert_eq!(DEFAULT_TLS_HANDSHAKE_TIMEOUT, Duration::from_secs(10));
    assert_eq!(DEFAULT_PRE_AUTH_TIMEOUT, Duration::from_secs(60));
    assert_eq!(DEFAULT_IDLE_TIMEOUT, Duration::from_secs(1800));
    assert_eq!(DEFAULT_UPSTREAM_REPLY_TIMEOUT, Duration::from_secs(30));
    assert_eq!(DEFAULT_AUTH_FAILURE_DELAY, Duration::from_secs(2));
    assert_eq!(DEFAULT_SHUTDOWN_GRACE, Duration::from_secs(30));
    assert_eq!(DEFAULT_ADMIN_ADDRESS.to_string(), "127.0.0.1:9090");
    assert_eq!(DEFAULT_PEER_DNS_TIMEOUT, Duration::from_secs(3));
    assert_eq!(DEFAULT_PEER_DNS_MAX_TTL, Duration::from_secs(3600));
    assert_eq!(DEFAULT_PEER_DNS_NEGATIVE_TTL, Duration::from_secs(60));
    assert_eq!(DEFAULT_PEER_DNS_ERROR_TTL, Duration::from_secs(5));
    assert_eq!(DEFAULT_PEER_DELIVERY_TIMEOUT, Duration::from_secs(3));
    assert_eq!(DEFAULT_PEER_MAX_MESSAGE_BYTES, 10 * 1024 * 1024);
    assert_eq!(
        PEER_DELIVERY_TIMEOUT_RANGE,
        Duration::from_millis(100)..=Duration::from_secs(30)
    );
    assert_eq!(PEER_MAX_MESSAGE_BYTES_RANGE, 1024..=1 << 30);
}

#[test]
fn default_limits_lie_inside_their_own_ranges() {
    assert!(MAX_LINE_BYTES_RANGE.contains(&DEFAULT_MAX_LINE_BYTES));
    assert!(MAX_LITERAL_BYTES_RANGE.contains(&DEFAULT_MAX_LITERAL_BYTES));
    assert!(DEFAULT_IDLE_TIMEOUT >= MIN_IDLE_TIMEOUT);
    for default in [
        DEFAULT_UPSTREAM_CONNECT_TIMEOUT,
        DEFAULT_TLS_HANDSHAKE_TIMEOUT,
        DEFAULT_PRE_AUTH_TIMEOUT,
        DEFAULT_IDLE_TIMEOUT,
        DEFAULT_UPSTREAM_REPLY_TIMEOUT,
        DEFAULT_AUTH_FAILURE_DELAY,
        DEFAULT_SHUTDOWN_GRACE,
        DEFAULT_PEER_DNS_TIMEOUT,
        DEFAULT_PEER_DNS_MAX_TTL,
        DEFAULT_PEER_DNS_NEGATIVE_TTL,
        DEFAULT_PEER_DNS_ERROR_TTL,
    ] {
        assert!(!default.is_zero() && default <= MAX_DURATION);
    }
    // A failure is kept shorter than a negative answer, which is kept no longer than a
    // positive one may be.
    assert!(DEFAULT_PEER_DNS_ERROR_TTL < DEFAULT_PEER_DNS_NEGATIVE_TTL);
    assert!(DEFAULT_PEER_DNS_NEGATIVE_TTL <= DEFAULT_PEER_DNS_MAX_TTL);
    assert!(PEER_DELIVERY_TIMEOUT_RANGE.contains(&DEFAULT_PEER_DELIVERY_TIMEOUT));
    assert!(PEER_MAX_MESSAGE_BYTES_RANGE.contains(&DEFAULT_PEER_MAX_MESSAGE_BYTES));
    // The peer protocol refuses larger announcements outright (MessageTooLarge).
    assert_eq!(
        *PEER_MAX_MESSAGE_BYTES_RANGE.end(),
        crate::proto::peer::MAX_BODY_LEN
    );
}

#[test]
fn unnamed_listeners_are_named_after_their_index() {
    let config = ok(&with_listeners(
        "    - address: \"127.0.0.1:1\"\n      tls: none\n    - name: second\n      address: \"127.0.0.1:2\"\n      tls: none\n    - address: \"127.0.0.1:3\"\n      tls: none",
    ));
    let names: Vec<&str> = config
        .imap
        .listeners
        .iter()
        .map(|l| l.name.as_str())
        .collect();
    assert_eq!(names, ["imap-0", "second", "imap-2"]);
}

#[test]
fn upstream_server_name_defaults_to_the_upstream_host() {
    let config = ok(&with_upstream(
        "    address: \"dovecot.example.org:993\"\n    tls: implicit\n    ca_file: /ca.pem",
    ));
    assert_eq!(config.imap.upstream.host, "dovecot.example.org");
    assert_eq!(config.imap.upstream.port, 993);
    assert_eq!(
        config.imap.upstream.tls,
        UpstreamTls::Implicit {
            server_name: "dovecot.example.org".to_owned(),
            ca_file: "/ca.pem".into(),
        }
    );
}

#[test]
fn upstream_ipv6_host_is_stored_without_brackets() {
    let config = ok(&with_upstream(
        "    address: \"[::1]:10993\"\n    tls: implicit\n    ca_file: /ca.pem",
    ));
    assert_eq!(config.imap.upstream.host, "::1");
    assert_eq!(
        config.imap.upstream.tls,
        UpstreamTls::Implicit {
            server_name: "::1".to_owned(),
            ca_file: "/ca.pem".into(),
        }
    );
}

#[test]
fn admin_address_off_disables_the_admin_listener() {
    let config = ok(&minimal_with("admin:\n  address: off\n"));
    assert_eq!(config.admin.address, None);
}

#[test]
fn empty_optional_sections_count_as_absent() {
    let config = ok(&minimal_with(
        "  limits:\n  timeouts:\ncoi:\nadmin:\nlog:\nshutdown:\ntls:\npeer:\n  routes:\n  dns:\n",
    ));
    assert_eq!(config, ok(MINIMAL));
}

#[test]
fn every_key_set_explicitly_is_used() {
    let config = ok("
imap:
  listeners:
    - {name: front, address: \"[::1]:993\", tls: implicit}
  upstream:
    address: \"127.0.0.1:10143\"
    connect_timeout: 250ms
  limits: {max_line_bytes: 8KiB, max_literal_bytes: 1048576, max_sessions: 3}
  timeouts: {tls_handshake: 1s, pre_auth: 2m, idle: 1h 30m, upstream_reply: 7s, auth_failure_delay: 250ms}
  bare_lf: canonicalize
  insecure_allow_plaintext_auth: true
tls: {certificate: c.pem, private_key: k.pem}
coi: {mailbox_root: Chat}
admin: {address: \"[::]:9191\"}
log: {format: json, level: \"coi_proxy=debug,info\"}
shutdown: {grace: 5s}
");
    let imap = &config.imap;
    assert_eq!(imap.listeners[0].name, "front");
    assert_eq!(imap.listeners[0].tls, ListenerTls::Implicit);
    assert_eq!(imap.upstream.connect_timeout, Duration::from_millis(250));
    assert_eq!(imap.limits.max_line_bytes, 8192);
    assert_eq!(imap.limits.max_literal_bytes, 1_048_576);
    assert_eq!(imap.limits.max_sessions, 3);
    assert_eq!(imap.timeouts.tls_handshake, Duration::from_secs(1));
    assert_eq!(imap.timeouts.pre_auth, Duration::from_secs(120));
    assert_eq!(imap.timeouts.idle, Duration::from_secs(5400));
    assert_eq!(imap.timeouts.upstream_reply, Duration::from_secs(7));
    assert_eq!(imap.timeouts.auth_failure_delay, Duration::from_millis(250));
    assert_eq!(imap.bare_lf, BareLfPolicy::Canonicalize);
    assert!(imap.insecure_allow_plaintext_auth);
    assert_eq!(
        config.tls,
        Some(TlsFiles {
            certificate: "c.pem".into(),
            private_key: "k.pem".into()
        })
    );
    assert_eq!(config.coi.mailbox_root, "Chat");
    assert_eq!(
        config.admin.address,
        Some("[::]:9191".parse::<SocketAddr>().expect("literal"))
    );
    assert_eq!(config.log.format, LogFormat::Json);
    assert_eq!(config.log.level, "coi_proxy=debug,info");
    assert_eq!(config.shutdown.grace, Duration::from_secs(5));
}

#[test]
fn anchors_and_aliases_resolve_to_their_values() {
    let config = ok("
imap:
  listeners:
    - {name: a, address: \"127.0.0.1:1\", tls: &plain none}
    - {name: b, address: \"127.0.0.1:2\", tls: *plain}
  upstream: {address: \"127.0.0.1:10143\", connect_timeout: &short 3s}
shutdown: {grace: *short}
");
    assert_eq!(config.imap.listeners[1].tls, ListenerTls::None);
    assert_eq!(config.shutdown.grace, Duration::from_secs(3));
}

#[test]
fn undefined_alias_is_a_syntax_error() {
    assert_only_error(
        &minimal_with("shutdown: {grace: *nope}\n"),
        "",
        "invalid YAML:",
    );
}

// ---------------------------------------------------------------------------------------
// Errors and their paths

#[test]
fn unknown_nested_key_is_reported_with_its_path() {
    assert_only_error(
        &with_upstream("    address: \"127.0.0.1:10143\"\n    colour: blue"),
        "imap.upstream.colour",
        "unknown key",
    );
}

#[test]
fn unknown_key_message_lists_the_known_keys_of_its_section() {
    assert_only_error(
        &with_upstream("    address: \"127.0.0.1:10143\"\n    colour: blue"),
        "imap.upstream.colour",
        "unknown key (known keys: address, tls, server_name, ca_file, connect_timeout)",
    );
}

#[test]
fn unknown_keys_in_different_sections_are_all_reported() {
    let errors = errors(&minimal_with(
        "  colour: red\nlog:\n  colour: green\nextra: 1\n",
    ));
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["extra", "imap.colour", "log.colour"]);
    assert!(errors.iter().all(|e| e.message.starts_with("unknown key")));
}

#[test]
fn unknown_key_in_a_list_element_names_its_index() {
    assert_only_error(
        &with_listeners(
            "    - address: \"127.0.0.1:1\"\n      tls: none\n    - address: \"127.0.0.1:2\"\n      tls: none\n      port: 3",
        ),
        "imap.listeners[1].port",
        "unknown key",
    );
}

#[test]
fn unknown_key_that_would_make_the_path_ambiguous_is_quoted() {
    assert_only_error(
        &minimal_with("  \"a.b\": 1\n"),
        "imap[\"a.b\"]",
        "unknown key",
    );
    assert_only_error(
        &minimal_with("  \"x\\ny\": 1\n"),
        "imap[\"x\\ny\"]",
        "unknown key",
    );
}

#[test]
fn non_string_key_is_reported_at_its_mapping() {
    assert_only_error(
        &minimal_with("  42: x\n"),
        "imap",
        "keys must be strings, found an integer",
    );
}

#[test]
fn empty_document_reports_missing_imap_section() {
    assert_only_error("", "imap", "missing required section");
    assert_only_error("# only a comment\n", "imap", "missing required section");
}

#[test]
fn document_that_is_not_a_mapping_is_reported_at_the_root() {
    assert_only_error("- a\n- b\n", "", "expected a mapping, found a list");
    assert_only_error("just words", "", "expected a mapping, found a string");
}

#[test]
fn section_of_the_wrong_type_is_reported_once() {
    assert_only_error(
        &with_upstream("    - address: \"127.0.0.1:10143\""),
        "imap.upstream",
        "expected a mapping, found a list",
    );
}

#[test]
fn yaml_syntax_error_is_one_document_level_error_with_its_location() {
    assert_only_error("imap: [\n", "", "invalid YAML:");
    let error = &errors("imap:\n  listeners: [\n")[0];
    assert!(error.message.contains("line"), "{error:?}");
}

#[test]
fn duplicate_keys_are_a_syntax_error() {
    assert_only_error(&minimal_with("log: {}\nlog: {}\n"), "", "duplicate");
}

#[test]
fn multiple_documents_are_refused() {
    assert_only_error(&format!("{MINIMAL}---\n{MINIMAL}"), "", "invalid YAML:");
}

#[test]
fn missing_listeners_are_reported() {
    assert_only_error(
        "imap:\n  upstream:\n    address: \"127.0.0.1:10143\"\n",
        "imap.listeners",
        "missing required key",
    );
}

#[test]
fn empty_listener_list_is_reported() {
    assert_only_error(
        &with_listeners("    []"),
        "imap.listeners",
        "must list at least one listener",
    );
}

#[test]
fn listeners_that_are_not_a_list_are_reported() {
    assert_only_error(
        &with_listeners("    address: \"127.0.0.1:1\""),
        "imap.listeners",
        "expected a list, found a mapping",
    );
}

#[test]
fn listener_address_must_be_an_ip_socket_address() {
    assert_only_error(
        &with_listeners(
            "    - address: \"127.0.0.1:1\"\n      tls: none\n    - address: \"x:99999\"\n      tls: none",
        ),
        "imap.listeners[1].address",
        "invalid socket address \"x:99999\"",
    );
    assert_only_error(
        &with_listeners("    - address: 143\n      tls: none"),
        "imap.listeners[0].address",
        "expected a string, found an integer",
    );
}

#[test]
fn listener_address_and_tls_are_required() {
    let errors = errors(&with_listeners("    - name: a"));
    let found = paths_and_messages(&errors);
    assert_eq!(
        found,
        [
            ("imap.listeners[0].address", "missing required key"),
            ("imap.listeners[0].tls", "missing required key"),
        ]
    );
}

#[test]
fn listener_tls_mode_must_be_one_of_the_three() {
    assert_only_error(
        &with_listeners("    - address: \"127.0.0.1:1\"\n      tls: ssl"),
        "imap.listeners[0].tls",
        "invalid TLS mode \"ssl\" (expected one of: none, starttls, implicit)",
    );
    // YAML 1.2 reads `no` as a string, so it is refused as a word, not taken as false.
    assert_only_error(
        &with_listeners("    - address: \"127.0.0.1:1\"\n      tls: no"),
        "imap.listeners[0].tls",
        "invalid TLS mode \"no\"",
    );
}

#[test]
fn listener_name_must_be_short_lowercase_ascii() {
    for bad in ["IMAP", "\"\"", "imap.tls", "\"a b\"", &"a".repeat(33)] {
        assert_only_error(
            &with_listeners(&format!(
                "    - name: {bad}\n      address: \"127.0.0.1:1\"\n      tls: none"
            )),
            "imap.listeners[0].name",
            "invalid listener name",
        );
    }
    ok(&with_listeners(&format!(
        "    - name: {}\n      address: \"127.0.0.1:1\"\n      tls: none",
        "a_-9".repeat(8)
    )));
}

#[test]
fn duplicate_listener_names_are_reported_against_the_first() {
    assert_only_error(
        &with_listeners(
            "    - {name: a, address: \"127.0.0.1:1\", tls: none}\n    - {name: a, address: \"127.0.0.1:2\", tls: none}",
        ),
        "imap.listeners[1].name",
        "duplicate listener name \"a\" (also imap.listeners[0])",
    );
}

#[test]
fn default_listener_name_collides_with_an_explicit_one() {
    assert_only_error(
        &with_listeners(
            "    - {address: \"127.0.0.1:1\", tls: none}\n    - {name: imap-0, address: \"127.0.0.1:2\", tls: none}",
        ),
        "imap.listeners[1].name",
        "duplicate listener name \"imap-0\"",
    );
}

#[test]
fn duplicate_listener_addresses_are_reported_against_the_first() {
    assert_only_error(
        &with_listeners(
            "    - {name: a, address: \"127.0.0.1:1\", tls: none}\n    - {name: b, address: \"127.0.0.1:1\", tls: none}",
        ),
        "imap.listeners[1].address",
        "duplicate address 127.0.0.1:1 (also imap.listeners[0])",
    );
}

#[test]
fn listener_overlapping_a_wildcard_on_the_same_port_is_reported() {
    assert_only_error(
        &with_listeners(
            "    - {name: a, address: \"127.0.0.1:143\", tls: none}\n    - {name: b, address: \"0.0.0.0:143\", tls: none}",
        ),
        "imap.listeners[1].address",
        "address 0.0.0.0:143 overlaps 127.0.0.1:143 of imap.listeners[0]",
    );
}

#[test]
fn listeners_on_port_zero_never_clash() {
    // Port 0 asks the kernel for a fresh port: tests bind several listeners this way.
    ok(&with_listeners(
        "    - {name: a, address: \"127.0.0.1:0\", tls: none}\n    - {name: b, address: \"127.0.0.1:0\", tls: none}",
    ));
}

#[test]
fn listeners_of_different_families_on_one_port_are_allowed() {
    // Whether [::] also covers IPv4 depends on IPV6_V6ONLY, which is not config's call.
    ok(&with_listeners(
        "    - {name: a, address: \"0.0.0.0:143\", tls: none}\n    - {name: b, address: \"[::]:143\", tls: none}",
    ));
}

#[test]
fn valid_parts_of_a_broken_listener_still_take_part_in_uniqueness() {
    let errors = errors(&with_listeners(
        "    - {name: a, address: \"127.0.0.1:1\", tls: none}\n    - {name: a, address: \"127.0.0.1:1\", tls: bogus}",
    ));
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "imap.listeners[1].tls",
            "imap.listeners[1].name",
            "imap.listeners[1].address"
        ]
    );
}

#[test]
fn tls_section_is_required_by_a_starttls_listener() {
    assert_only_error(
        &with_listeners(
            "    - {address: \"127.0.0.1:1\", tls: none}\n    - {address: \"127.0.0.1:2\", tls: starttls}",
        ),
        "tls",
        "missing: certificate and private_key are required because imap.listeners[1] uses tls: starttls",
    );
}

#[test]
fn tls_section_is_required_by_an_implicit_listener() {
    assert_only_error(
        &with_listeners("    - {address: \"127.0.0.1:1\", tls: implicit}"),
        "tls",
        "uses tls: implicit",
    );
}

#[test]
fn tls_section_needs_both_files() {
    let yaml = format!(
        "{}tls:\n  certificate: c.pem\n",
        with_listeners("    - {address: \"127.0.0.1:1\", tls: implicit}")
    );
    // Only the missing key is reported, not the section as a whole.
    assert_only_error(&yaml, "tls.private_key", "missing required key");
}

#[test]
fn tls_file_names_must_not_be_empty() {
    assert_only_error(
        &minimal_with("tls: {certificate: \"\", private_key: k.pem}\n"),
        "tls.certificate",
        "must not be empty",
    );
}

#[test]
fn missing_upstream_is_reported() {
    assert_only_error(
        "imap:\n  listeners:\n    - {address: \"127.0.0.1:1\", tls: none}\n",
        "imap.upstream",
        "missing required section",
    );
}

#[test]
fn upstream_address_is_required() {
    assert_only_error(
        &with_upstream("    connect_timeout: 1s"),
        "imap.upstream.address",
        "missing required key",
    );
}

#[test]
fn upstream_address_must_be_host_and_port() {
    for (bad, why) in [
        ("dovecot", "missing port"),
        ("dovecot:0", "port must be 1-65535"),
        ("dovecot:65536", "port must be 1-65535"),
        ("dovecot:", "port must be 1-65535"),
        ("::1:143", "IPv6 addresses must be in brackets"),
        ("[::1:143", "unclosed '['"),
        ("[dovecot]:143", "not an IPv6 address inside brackets"),
        (":143", "not a host name or IP address"),
        ("mail server:143", "not a host name or IP address"),
    ] {
        assert_only_error(
            &with_upstream(&format!("    address: \"{bad}\"")),
            "imap.upstream.address",
            why,
        );
    }
}

#[test]
fn upstream_tls_mode_must_be_none_or_implicit() {
    assert_only_error(
        &with_upstream("    address: \"127.0.0.1:10143\"\n    tls: starttls"),
        "imap.upstream.tls",
        "invalid upstream TLS mode \"starttls\" (expected one of: none, implicit)",
    );
}

#[test]
fn upstream_implicit_tls_requires_a_ca_file() {
    assert_only_error(
        &with_upstream("    address: \"dovecot:993\"\n    tls: implicit"),
        "imap.upstream.ca_file",
        "missing: required with tls: implicit",
    );
}

#[test]
fn upstream_server_name_and_ca_file_need_implicit_tls() {
    let errors = errors(&with_upstream(
        "    address: \"dovecot:143\"\n    server_name: mail\n    ca_file: /ca.pem",
    ));
    let found = paths_and_messages(&errors);
    assert_eq!(
        found,
        [
            (
                "imap.upstream.server_name",
                "only allowed with tls: implicit"
            ),
            ("imap.upstream.ca_file", "only allowed with tls: implicit"),
        ]
    );
}

#[test]
fn upstream_server_name_must_be_a_valid_tls_name() {
    assert_only_error(
        &with_upstream(
            "    address: \"dovecot:993\"\n    tls: implicit\n    ca_file: /ca.pem\n    server_name: \"not a name\"",
        ),
        "imap.upstream.server_name",
        "invalid TLS server name \"not a name\"",
    );
}

#[test]
fn upstream_that_is_a_listener_of_the_proxy_is_reported() {
    assert_only_error(
        "imap:\n  listeners:\n    - {address: \"0.0.0.0:143\", tls: none}\n  upstream:\n    address: \"127.0.0.1:143\"\n",
        "imap.upstream.address",
        "127.0.0.1:143 is the proxy's own listener imap.listeners[0] (0.0.0.0:143)",
    );
    // Same port on another host is a different server.
    ok("imap:\n  listeners:\n    - {address: \"0.0.0.0:143\", tls: none}\n  upstream:\n    address: \"192.0.2.7:143\"\n");
}

#[test]
fn max_line_bytes_must_lie_between_1_kib_and_16_mib() {
    for good in ["1KiB", "1024", "16MiB", "16777216"] {
        let config = ok(&limits(&format!("    max_line_bytes: {good}")));
        assert!(MAX_LINE_BYTES_RANGE.contains(&config.imap.limits.max_line_bytes));
    }
    for (bad, shown) in [
        ("1023", "1023 B"),
        ("0", "0 B"),
        ("16777217", "16777217 B"),
        ("1GiB", "1 GiB"),
    ] {
        assert_only_error(
            &limits(&format!("    max_line_bytes: {bad}")),
            "imap.limits.max_line_bytes",
            &format!("{shown} is out of range (1 KiB to 16 MiB)"),
        );
    }
}

#[test]
fn max_literal_bytes_must_lie_between_1_byte_and_4_gib() {
    assert_eq!(
        ok(&limits("    max_literal_bytes: 4GiB"))
            .imap
            .limits
            .max_literal_bytes,
        4 << 30
    );
    assert_eq!(
        ok(&limits("    max_literal_bytes: 1"))
            .imap
            .limits
            .max_literal_bytes,
        1
    );
    for (bad, shown) in [
        ("0", "0 B"),
        ("4294967297", "4294967297 B"),
        ("5GiB", "5 GiB"),
    ] {
        assert_only_error(
            &limits(&format!("    max_literal_bytes: {bad}")),
            "imap.limits.max_literal_bytes",
            &format!("{shown} is out of range (1 B to 4 GiB)"),
        );
    }
}

#[test]
fn max_sessions_must_be_a_positive_integer() {
    for (bad, message) in [
        ("0", "must be at least 1"),
        ("-1", "expected a non-negative integer, found -1"),
        ("1.5", "expected a whole number, found 1.5"),
        ("\"10k\"", "expected an integer, found a string"),
        ("1e3", "expected a whole number, found 1000.0"),
    ] {
        assert_only_error(
            &limits(&format!("    max_sessions: {bad}")),
            "imap.limits.max_sessions",
            message,
        );
    }
}

#[test]
fn integer_beyond_64_bits_is_a_document_error_that_still_names_its_key() {
    // serde_yaml's `Value` holds at most 64-bit integers and fails while parsing, so this
    // one error cannot be collected with the others; its message still has path and line.
    let errors = errors(&limits("    max_sessions: 99999999999999999999999"));
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].path, "");
    assert!(
        errors[0].message.contains("imap.limits.max_sessions")
            && errors[0].message.contains("line 9"),
        "{errors:#?}"
    );
}

#[test]
fn durations_need_a_unit_and_must_be_positive() {
    for (bad, message) in [
        (
            "30",
            "invalid duration 30: a unit is required, e.g. \"30s\"",
        ),
        ("0s", "must be greater than zero"),
        ("\"\"", "invalid duration \"\""),
        ("5 parsecs", "invalid duration \"5 parsecs\""),
        ("-5s", "invalid duration \"-5s\""),
        (
            "true",
            "expected a duration such as \"30s\", found a boolean",
        ),
        ("8days", "is too long (at most 7days)"),
        ("99999999999999999999999s", "invalid duration"),
    ] {
        assert_only_error(
            &timeouts(&format!("    pre_auth: {bad}")),
            "imap.timeouts.pre_auth",
            message,
        );
    }
}

#[test]
fn idle_timeout_must_be_at_least_one_second() {
    assert_only_error(
        &timeouts("    idle: 500ms"),
        "imap.timeouts.idle",
        "500ms is too short (at least 1s)",
    );
    assert_eq!(
        ok(&timeouts("    idle: 1s")).imap.timeouts.idle,
        MIN_IDLE_TIMEOUT
    );
}

#[test]
fn every_duration_key_is_checked_with_its_own_path() {
    let errors = errors(&minimal_with(
        "    connect_timeout: 0s\n  timeouts: {tls_handshake: 0s, pre_auth: 0s, idle: 0s, upstream_reply: 0s, auth_failure_delay: 0s}\nshutdown: {grace: 0s}\n",
    ));
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "imap.upstream.connect_timeout",
            "imap.timeouts.tls_handshake",
            "imap.timeouts.pre_auth",
            "imap.timeouts.idle",
            "imap.timeouts.upstream_reply",
            "imap.timeouts.auth_failure_delay",
            "shutdown.grace",
        ]
    );
}

#[test]
fn bare_lf_policy_must_be_reject_or_canonicalize() {
    assert_only_error(
        &minimal_with("  bare_lf: allow\n"),
        "imap.bare_lf",
        "invalid bare LF policy \"allow\" (expected one of: reject, canonicalize)",
    );
}

#[test]
fn insecure_plaintext_auth_must_be_a_boolean() {
    assert_only_error(
        &minimal_with("  insecure_allow_plaintext_auth: \"true\"\n"),
        "imap.insecure_allow_plaintext_auth",
        "expected true or false, found a string",
    );
}

#[test]
fn mailbox_root_rejects_each_forbidden_character() {
    for bad in ["\\r", "\\n", "\\0", "\\\"", "\\\\", "*", "%"] {
        assert_only_error(
            &minimal_with(&format!("coi:\n  mailbox_root: \"COI{bad}x\"\n")),
            "coi.mailbox_root",
            "invalid mailbox root",
        );
    }
    assert_only_error(
        &minimal_with("coi:\n  mailbox_root: \"\"\n"),
        "coi.mailbox_root",
        "must not be empty",
    );
    // Hierarchy and non-ASCII are the server's business.
    assert_eq!(
        ok(&minimal_with("coi:\n  mailbox_root: \"INBOX/Chät\"\n"))
            .coi
            .mailbox_root,
        "INBOX/Chät"
    );
}

#[test]
fn admin_address_must_be_a_socket_address_or_off() {
    assert_only_error(
        &minimal_with("admin:\n  address: \"localhost:9090\"\n"),
        "admin.address",
        "invalid socket address \"localhost:9090\" (expected ip:port, e.g. \"0.0.0.0:143\" or \"[::]:993\"); use \"off\" to disable",
    );
    assert_only_error(
        &minimal_with("admin:\n  address: false\n"),
        "admin.address",
        "expected a string, found a boolean",
    );
}

#[test]
fn admin_address_must_not_overlap_a_listener() {
    assert_only_error(
        &minimal_with("admin:\n  address: \"127.0.0.1:1143\"\n"),
        "admin.address",
        "127.0.0.1:1143 overlaps 127.0.0.1:1143 of imap.listeners[0]",
    );
}

#[test]
fn log_format_must_be_text_or_json() {
    assert_only_error(
        &minimal_with("log:\n  format: yaml\n"),
        "log.format",
        "invalid log format \"yaml\" (expected one of: text, json)",
    );
}

#[test]
fn log_level_must_be_a_non_empty_filter() {
    assert_only_error(
        &minimal_with("log:\n  level: \"\"\n"),
        "log.level",
        "must not be empty",
    );
    assert_only_error(
        &minimal_with("log:\n  level: \"coi_proxy=loud\"\n"),
        "log.level",
        "invalid log filter directive \"coi_proxy=loud\"",
    );
    assert_only_error(
        &minimal_with("log:\n  level: 3\n"),
        "log.level",
        "expected a string, found an integer",
    );
}

#[test]
fn all_errors_are_reported_at_once_in_schema_order() {
    let errors = errors(
        "
imap:
  listeners:
    - {address: \"x:99999\", tls: sometimes}
  upstream: {address: \"dovecot\", colour: blue}
  limits: {max_line_bytes: 1B, max_literal_bytes: 8GiB}
log: {format: xml, level: \"\"}
coi: {mailbox_root: \"%\"}
shutdown: {grace: forever}
",
    );
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "imap.listeners[0].address",
            "imap.listeners[0].tls",
            "imap.upstream.colour",
            "imap.upstream.address",
            "imap.limits.max_line_bytes",
            "imap.limits.max_literal_bytes",
            "coi.mailbox_root",
            "log.format",
            "log.level",
            "shutdown.grace",
        ]
    );
}

#[test]
fn peer_section_takes_routes_and_dns_settings() {
    let config = ok(&minimal_with(
        "peer:
  routes:
    - {domain: B.Example., address: \"coi.b.example:4433\"}
    - {domain: München.example, address: \"[::1]:4434\"}
    - {domain: c.example, address: \"192.0.2.7:443\"}
  dns:
    nameservers: [\"127.0.0.1:5353\", \"[::1]:53\"]
    timeout: 500ms
    max_ttl: 10m
    negative_ttl: 30s
    error_ttl: 2s
",
    ));
    let routes: Vec<(&str, &str, u16)> = config
        .peer
        .routes
        .iter()
        .map(|r| (r.domain.as_str(), r.host.as_str(), r.port))
        .collect();
    assert_eq!(
        routes,
        [
            ("b.example", "coi.b.example", 4433),
            ("xn--mnchen-3ya.example", "::1", 4434),
            ("c.example", "192.0.2.7", 443),
        ]
    );
    let dns = &config.peer.dns;
    assert_eq!(
        dns.nameservers,
        Some(vec![
            "127.0.0.1:5353".parse::<SocketAddr>().expect("literal"),
            "[::1]:53".parse().expect("literal"),
        ])
    );
    assert_eq!(dns.timeout, Duration::from_millis(500));
    assert_eq!(dns.max_ttl, Duration::from_secs(600));
    assert_eq!(dns.negative_ttl, Duration::from_secs(30));
    assert_eq!(dns.error_ttl, Duration::from_secs(2));
}

#[test]
fn peer_route_domains_must_be_unique_after_normalisation() {
    assert_only_error(
        &minimal_with(
            "peer:\n  routes:\n    - {domain: b.example, address: \"a:1\"}\n    - {domain: c.example, address: \"a:2\"}\n    - {domain: B.EXAMPLE., address: \"a:3\"}\n",
        ),
        "peer.routes[2].domain",
        "duplicate route for \"b.example\" (also peer.routes[0])",
    );
}

#[test]
fn peer_route_needs_a_domain_and_a_host_port() {
    let errors = errors(&minimal_with(
        "peer:
  routes:
    - {domain: \"not a domain\", address: \"coi.b.example\"}
    - {address: \"coi.c.example:4433\", port: 1}
    - {domain: 192.0.2.1, address: \"::1:4433\"}
    - \"d.example=coi.d.example:4433\"
",
    ));
    let found = paths_and_messages(&errors);
    assert_eq!(found.len(), 7, "{found:#?}");
    let expected = [
        (
            "peer.routes[0].domain",
            "invalid domain name \"not a domain\"",
        ),
        ("peer.routes[0].address", "missing port"),
        (
            "peer.routes[1].port",
            "unknown key (known keys: domain, address)",
        ),
        ("peer.routes[1].domain", "missing required key"),
        ("peer.routes[2].domain", "invalid domain name \"192.0.2.1\""),
        (
            "peer.routes[2].address",
            "IPv6 addresses must be in brackets",
        ),
        ("peer.routes[3]", "expected a mapping, found a string"),
    ];
    for ((path, message), (want_path, want)) in found.iter().zip(expected) {
        assert_eq!(*path, want_path, "{found:#?}");
        assert!(message.contains(want), "{message:?} lacks {want:?}");
    }
}

#[test]
fn peer_routes_must_be_a_list() {
    assert_only_error(
        &minimal_with("peer:\n  routes: {b.example: \"coi.b.example:4433\"}\n"),
        "peer.routes",
        "expected a list, found a mapping",
    );
}

#[test]
fn peer_nameservers_are_distinct_ip_socket_addresses() {
    let errors = errors(&minimal_with(
        "peer:\n  dns:\n    nameservers: [\"127.0.0.1:53\", \"dns.example:53\", \"127.0.0.1:53\", \"127.0.0.1:0\"]\n",
    ));
    let found = paths_and_messages(&errors);
    assert_eq!(
        found,
        [
            (
                "peer.dns.nameservers[1]",
                "invalid socket address \"dns.example:53\" (expected ip:port, e.g. \"0.0.0.0:143\" or \"[::]:993\")"
            ),
            (
                "peer.dns.nameservers[2]",
                "duplicate nameserver 127.0.0.1:53 (also peer.dns.nameservers[0])"
            ),
            (
                "peer.dns.nameservers[3]",
                "127.0.0.1:0: port 0 is not a nameserver port"
            ),
        ]
    );
    assert_only_error(
        &minimal_with("peer:\n  dns:\n    nameservers: []\n"),
        "peer.dns.nameservers",
        "must list at least one nameserver",
    );
}

#[test]
fn peer_dns_durations_are_checked_with_their_paths() {
    let errors = errors(&minimal_with(
        "peer:\n  dns: {timeout: 0s, max_ttl: 1h, negative_ttl: 60, error_ttl: 8d, colour: 1}\n",
    ));
    let found = paths_and_messages(&errors);
    assert_eq!(
        found,
        [
            (
                "peer.dns.colour",
                "unknown key (known keys: nameservers, timeout, max_ttl, negative_ttl, error_ttl)"
            ),
            ("peer.dns.timeout", "must be greater than zero"),
            (
                "peer.dns.negative_ttl",
                "invalid duration 60: a unit is required, e.g. \"60s\""
            ),
            ("peer.dns.error_ttl", "8days is too long (at most 7days)"),
        ]
    );
}

/// A `mailbox_writer` section (which peer links need) and a `peer` section with `keys`
/// (indented two spaces), after the minimal document.
fn peer_link(keys: &str) -> String {
    minimal_with(&format!(
        "mailbox_writer: {{master_user: coi-proxy, master_password: secret}}\npeer:\n{keys}"
    ))
}

/// The keys every peer link needs.
const PEER_LINK_REQUIRED: &str = "  address: \"0.0.0.0:4433\"
  certificate: /etc/coi-proxy/peer.pem
  private_key: /etc/coi-proxy/peer-key.pem
  ca_file: /etc/coi-proxy/peer-ca.pem
";

/// The (path, message) pairs of a document's errors, for exact comparisons.
fn found(yaml: &str) -> Vec<(String, String)> {
    errors(yaml)
        .into_iter()
        .map(|e| (e.path, e.message))
        .collect()
}

#[test]
fn peer_link_is_off_without_an_address() {
    assert_eq!(ok(MINIMAL).peer.link, None);
    let config = ok(&minimal_with(
        "peer:\n  routes: [{domain: b.example, address: \"coi.b.example:4433\"}]\n",
    ));
    assert_eq!(config.peer.link, None);
}

#[test]
fn peer_link_section_is_parsed_with_defaults() {
    let config = ok(&peer_link(PEER_LINK_REQUIRED));
    assert_eq!(
        config.peer.link,
        Some(PeerLinkConfig {
            address: "0.0.0.0:4433".parse().expect("literal"),
            tls: TlsFiles {
                certificate: "/etc/coi-proxy/peer.pem".into(),
                private_key: "/etc/coi-proxy/peer-key.pem".into(),
            },
            ca_file: "/etc/coi-proxy/peer-ca.pem".into(),
            delivery_timeout: DEFAULT_PEER_DELIVERY_TIMEOUT,
            max_message_bytes: DEFAULT_PEER_MAX_MESSAGE_BYTES,
        })
    );
}

#[test]
fn peer_link_takes_explicit_timeout_and_size() {
    let config = ok(&peer_link(&format!(
        "{PEER_LINK_REQUIRED}  delivery_timeout: 1500ms\n  max_message_bytes: 512KiB\n"
    )));
    let link = config.peer.link.expect("address is set");
    assert_eq!(link.delivery_timeout, Duration::from_millis(1500));
    assert_eq!(link.max_message_bytes, 512 * 1024);
    let config = ok(&peer_link(
        "  address: \"[::1]:0\"\n  certificate: c.pem\n  private_key: k.pem\n  ca_file: ca.pem\n  max_message_bytes: 65536\n",
    ));
    let link = config.peer.link.expect("address is set");
    assert_eq!(
        link.address,
        "[::1]:0".parse::<SocketAddr>().expect("literal")
    );
    assert_eq!(link.max_message_bytes, 65_536);
}

#[test]
fn peer_link_needs_certificate_key_and_ca_file() {
    for missing in ["certificate", "private_key", "ca_file"] {
        let keys: String = PEER_LINK_REQUIRED
            .lines()
            .filter(|line| !line.trim_start().starts_with(&format!("{missing}:")))
            .map(|line| format!("{line}\n"))
            .collect();
        assert_only_error(
            &peer_link(&keys),
            &format!("peer.{missing}"),
            "missing: required when peer.address is set",
        );
    }
    assert_eq!(
        found(&peer_link("  address: \"0.0.0.0:4433\"\n")),
        ["certificate", "private_key", "ca_file"].map(|key| (
            format!("peer.{key}"),
            "missing: required when peer.address is set".to_owned()
        ))
    );
}

#[test]
fn peer_link_values_are_checked_with_their_paths() {
    assert_eq!(
        found(&peer_link(
            "  address: \"coi.example.org:4433\"\n  certificate: \"\"\n  private_key: 7\n  ca_file: ca.pem\n"
        )),
        [
            (
                "peer.address".to_owned(),
                "invalid socket address \"coi.example.org:4433\" (expected ip:port, e.g. \"0.0.0.0:143\" or \"[::]:993\")".to_owned()
            ),
            ("peer.certificate".to_owned(), "must not be empty".to_owned()),
            (
                "peer.private_key".to_owned(),
                "expected a string, found an integer".to_owned()
            ),
        ]
    );
}

#[test]
fn peer_delivery_timeout_must_lie_between_100_ms_and_30_s() {
    for (value, shown) in [("0s", "0s"), ("99ms", "99ms"), ("31s", "31s"), ("1h", "1h")] {
        assert_only_error(
            &peer_link(&format!(
                "{PEER_LINK_REQUIRED}  delivery_timeout: {value}\n"
            )),
            "peer.delivery_timeout",
            &format!("{shown} is out of range (100ms to 30s)"),
        );
    }
    assert_only_error(
        &peer_link(&format!("{PEER_LINK_REQUIRED}  delivery_timeout: 3\n")),
        "peer.delivery_timeout",
        "a unit is required",
    );
    for (value, expected) in [
        ("100ms", Duration::from_millis(100)),
        ("30s", Duration::from_secs(30)),
    ] {
        let config = ok(&peer_link(&format!(
            "{PEER_LINK_REQUIRED}  delivery_timeout: {value}\n"
        )));
        assert_eq!(config.peer.link.expect("set").delivery_timeout, expected);
    }
}

#[test]
fn peer_max_message_bytes_must_lie_between_1_kib_and_1_gib() {
    for (value, message) in [
        ("0", "0 B is out of range (1 KiB to 1 GiB)"),
        ("1023", "1023 B is out of range (1 KiB to 1 GiB)"),
        ("\"1025MiB\"", "1025 MiB is out of range (1 KiB to 1 GiB)"),
        ("2GiB", "2 GiB is out of range (1 KiB to 1 GiB)"),
        ("10MB", "unknown unit \"MB\""),
    ] {
        assert_only_error(
            &peer_link(&format!(
                "{PEER_LINK_REQUIRED}  max_message_bytes: {value}\n"
            )),
            "peer.max_message_bytes",
            message,
        );
    }
    for (value, expected) in [("1KiB", 1024), ("1GiB", 1 << 30)] {
        let config = ok(&peer_link(&format!(
            "{PEER_LINK_REQUIRED}  max_message_bytes: {value}\n"
        )));
        assert_eq!(config.peer.link.expect("set").max_message_bytes, expected);
    }
}

#[test]
fn peer_link_keys_without_an_address_are_each_reported() {
    for key in [
        "certificate: c.pem",
        "private_key: k.pem",
        "ca_file: ca.pem",
        "delivery_timeout: 3s",
        "max_message_bytes: 10MiB",
    ] {
        let name = key.split(':').next().expect("a key");
        assert_only_error(
            &peer_link(&format!("  {key}\n")),
            &format!("peer.{name}"),
            "only meaningful with peer.address",
        );
    }
    let errors = errors(&peer_link(
        "  certificate: c.pem\n  private_key: k.pem\n  ca_file: ca.pem\n  delivery_timeout: 0s\n  max_message_bytes: 10MiB\n",
    ));
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "peer.certificate",
            "peer.private_key",
            "peer.ca_file",
            "peer.delivery_timeout",
            "peer.max_message_bytes",
        ]
    );
}

#[test]
fn peer_address_requires_the_mailbox_writer_section() {
    assert_only_error(
        &minimal_with(&format!("peer:\n{PEER_LINK_REQUIRED}")),
        "peer.address",
        "requires the mailbox_writer section",
    );
    // An invalid mailbox_writer section is reported there, not again at peer.address.
    assert_only_error(
        &minimal_with(&format!(
            "mailbox_writer: {{master_user: coi-proxy}}\npeer:\n{PEER_LINK_REQUIRED}"
        )),
        "mailbox_writer.master_password",
        "missing required key",
    );
}

#[test]
fn incomplete_peer_link_reports_every_error_at_once() {
    let errors = errors(&minimal_with(
        "peer:\n  address: \"0.0.0.0:4433\"\n  private_key: k.pem\n  delivery_timeout: 0s\n  colour: blue\n",
    ));
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "peer.colour",
            "peer.address",
            "peer.certificate",
            "peer.ca_file",
            "peer.delivery_timeout",
        ],
        "{errors:#?}"
    );
    assert!(
        errors[0].message.contains(
            "known keys: address, certificate, private_key, ca_file, delivery_timeout, max_message_bytes, routes, dns"
        ),
        "{errors:#?}"
    );
}

#[test]
fn errors_display_one_path_and_message_per_line() {
    let errors = ConfigErrors(vec![
        ConfigError {
            path: "imap.upstream.colour".to_owned(),
            message: "unknown key".to_owned(),
        },
        ConfigError {
            path: String::new(),
            message: "invalid YAML: oops".to_owned(),
        },
    ]);
    assert_eq!(
        errors.to_string(),
        "imap.upstream.colour: unknown key\ninvalid YAML: oops"
    );
}

// ---------------------------------------------------------------------------------------
// Scalar syntax

#[test]
fn byte_sizes_accept_integers_and_binary_units() {
    for (text, bytes) in [
        ("0", 0),
        ("1024", 1024),
        ("512B", 512),
        ("64KiB", 64 << 10),
        ("64 KiB", 64 << 10),
        ("  50MiB ", 50 << 20),
        ("4GiB", 4 << 30),
        ("17179869183GiB", 17_179_869_183 << 30),
    ] {
        assert_eq!(raw::parse_byte_size(text), Ok(bytes), "{text:?}");
    }
    assert_eq!(
        raw::byte_size(&serde_yaml::from_str("65536").expect("yaml")),
        Ok(65536)
    );
}

#[test]
fn byte_sizes_refuse_other_units_fractions_signs_and_overflow() {
    for (text, why) in [
        ("64KB", "unknown unit \"KB\""),
        ("64kib", "unknown unit \"kib\""),
        ("1TiB", "unknown unit \"TiB\""),
        ("1.5MiB", "unknown unit \".5MiB\""),
        ("64 K iB", "unknown unit \"K iB\""),
        ("-1", "expected a whole number"),
        ("+1", "expected a whole number"),
        ("", "expected a whole number"),
        ("KiB", "expected a whole number"),
        ("17179869184GiB", "too large"),
        ("18446744073709551616", "too large"),
    ] {
        let error = raw::parse_byte_size(text).expect_err(text);
        assert!(error.contains(why), "{text:?}: {error}");
    }
    for (yaml, why) in [
        ("-1", "expected a non-negative integer"),
        ("1.5", "expected a whole number"),
        (
            "true",
            "expected a byte size such as 65536 or \"64KiB\", found a boolean",
        ),
        ("[1]", "found a list"),
    ] {
        let value: Value = serde_yaml::from_str(yaml).expect("yaml");
        let error = raw::byte_size(&value).expect_err(yaml);
        assert!(error.contains(why), "{yaml}: {error}");
    }
}

#[test]
fn durations_use_humantime_syntax() {
    for (text, duration) in [
        ("30s", Duration::from_secs(30)),
        ("5m", Duration::from_secs(300)),
        ("1h", Duration::from_secs(3600)),
        ("1h 30m", Duration::from_secs(5400)),
        ("500ms", Duration::from_millis(500)),
        ("1.5s", Duration::from_millis(1500)),
    ] {
        assert_eq!(raw::duration(&string(text)), Ok(duration), "{text:?}");
    }
    for text in [
        "",
        "30",
        "s",
        "5 parsecs",
        "-1s",
        "99999999999999999999999s",
    ] {
        assert!(raw::duration(&string(text)).is_err(), "{text:?}");
    }
}

#[test]
fn host_port_parses_names_and_ip_literals() {
    for (text, host, port) in [
        ("dovecot:143", "dovecot", 143),
        (
            "dovecot.mail.svc.cluster.local:10143",
            "dovecot.mail.svc.cluster.local",
            10143,
        ),
        ("127.0.0.1:65535", "127.0.0.1", 65535),
        ("[::1]:1", "::1", 1),
        ("[2001:db8::7]:993", "2001:db8::7", 993),
    ] {
        assert_eq!(
            HostPort::parse(text),
            Ok(HostPort {
                host: host.to_owned(),
                port
            }),
            "{text:?}"
        );
    }
    let long_host = format!("{}:1", "a".repeat(254));
    for text in [
        "",
        ":",
        "[]:1",
        "[::1]",
        "a/b:1",
        "a@b:1",
        long_host.as_str(),
    ] {
        assert!(HostPort::parse(text).is_err(), "{text:?}");
    }
}

#[test]
fn keyword_lists_the_choices_when_it_fails() {
    let error = raw::keyword(&string("x"), "colour", &[("red", 1), ("blue", 2)])
        .expect_err("x is no colour");
    assert_eq!(error, "invalid colour \"x\" (expected one of: red, blue)");
}

// ---------------------------------------------------------------------------------------
// Fuzz entry

#[test]
fn fuzz_load_str_survives_nasty_inputs() {
    let deep_flow = "[".repeat(100_000);
    let deep_map = "a: {".repeat(10_000);
    let deep_block: String = (0..500).map(|i| format!("{}k:\n", " ".repeat(i))).collect();
    let laughs = "a: &a [x, x, x, x, x, x, x, x, x]\n\
                  b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n\
                  c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n\
                  d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n\
                  e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\n\
                  f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n\
                  g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]\n\
                  h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]\n\
                  imap: *h\n";
    let self_alias = "imap: &x {listeners: *x}\n";
    let inputs: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"\xff\xfe\x00garbage".to_vec(),
        b"imap:\n  listeners: \xc3\x28\n".to_vec(),
        deep_flow.into_bytes(),
        deep_map.into_bytes(),
        deep_block.into_bytes(),
        laughs.as_bytes().to_vec(),
        self_alias.as_bytes().to_vec(),
        b"imap: {limits: {max_sessions: 1e999, max_line_bytes: 18446744073709551616, max_literal_bytes: -9223372036854775809}}".to_vec(),
        b"imap: {timeouts: {idle: 18446744073709551615s, pre_auth: .inf}}".to_vec(),
        b"imap: !!binary aGVsbG8=\nlog: !custom {format: json}\n".to_vec(),
        b"<<: {imap: 1}\n? [complex, key]\n: value\n~: null\n".to_vec(),
        b"\xef\xbb\xbfimap: {}\n\0\n".to_vec(),
        b"imap:\n  listeners:\n    - {address: \"[::ffff:1.2.3.4%eth0]:1\", tls: none, name: \"\\u0000\"}\n".to_vec(),
        b"---\n...\n---\n".to_vec(),
        b"%YAML 9.9\n---\nimap: 1\n".to_vec(),
        b"\t\t: : : ]]]] }}}} &&&& ****".to_vec(),
    ];
    for input in inputs {
        fuzz_load_str(&input);
    }
}

#[test]
fn alias_bomb_is_refused_as_a_syntax_error() {
    let laughs = "a: &a [x, x, x, x, x, x, x, x, x, x]\n\
                  b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n\
                  c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n\
                  d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n\
                  e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n\
                  f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n\
                  g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]\n\
                  h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]\n\
                  i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h, *h]\n";
    assert_only_error(laughs, "", "invalid YAML:");
}

#[test]
fn deep_nesting_is_refused_as_a_syntax_error() {
    assert_only_error(&"[".repeat(10_000), "", "invalid YAML:");
}

proptest::proptest! {
    #[test]
    fn fuzz_load_str_never_panics_on_yaml_like_text(
        text in "([a-z_]{1,12}|[:\\-\\[\\]{},&*!|>'\"#%@ \n]|[0-9]{1,25}|\\.|  ){0,64}"
    ) {
        fuzz_load_str(text.as_bytes());
    }

    #[test]
    fn fuzz_load_str_never_panics_on_bytes(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
        fuzz_load_str(&bytes);
    }
}
