//! Contract tests for the configuration files shipped in `conf/`: the examples load with
//! the values they document, and every file in `conf/invalid/` fails with the errors its
//! `# expect:` lines name.

use std::path::{Path, PathBuf};
use std::time::Duration;

use coi_proxy::config::{self, BareLfPolicy, ListenerTls, LogFormat, UpstreamTls};

fn conf(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("conf")
        .join(name)
}

fn load(name: &str) -> config::Config {
    match config::load(&conf(name)) {
        Ok(config) => config,
        Err(errors) => panic!("{name} must be valid, got:\n{errors}"),
    }
}

#[test]
fn example_config_loads_with_every_documented_value() {
    let config = load("coi-proxy.yaml");
    let imap = &config.imap;

    let listeners: Vec<(&str, String, ListenerTls)> = imap
        .listeners
        .iter()
        .map(|l| (l.name.as_str(), l.address.to_string(), l.tls))
        .collect();
    assert_eq!(
        listeners,
        [
            ("imap", "0.0.0.0:143".to_owned(), ListenerTls::Starttls),
            ("imaps", "[::]:993".to_owned(), ListenerTls::Implicit),
        ]
    );

    assert_eq!(imap.upstream.host, "dovecot.mail.example.org");
    assert_eq!(imap.upstream.port, 10993);
    assert_eq!(
        imap.upstream.tls,
        UpstreamTls::Implicit {
            server_name: "mail.example.org".to_owned(),
            ca_file: "/etc/coi-proxy/upstream-ca.pem".into(),
        }
    );
    assert_eq!(imap.upstream.connect_timeout, Duration::from_secs(5));

    assert_eq!(imap.limits.max_line_bytes, 64 * 1024);
    assert_eq!(imap.limits.max_literal_bytes, 50 * 1024 * 1024);
    assert_eq!(imap.limits.max_sessions, 10_000);

    assert_eq!(imap.timeouts.tls_handshake, Duration::from_secs(10));
    assert_eq!(imap.timeouts.pre_auth, Duration::from_secs(60));
    assert_eq!(imap.timeouts.idle, Duration::from_secs(30 * 60));
    assert_eq!(imap.timeouts.upstream_reply, Duration::from_secs(30));
    assert_eq!(imap.bare_lf, BareLfPolicy::Reject);
    assert!(!imap.insecure_allow_plaintext_auth);

    let tls = config.tls.as_ref().expect("the example has TLS listeners");
    assert_eq!(tls.certificate, Path::new("/etc/coi-proxy/tls/cert.pem"));
    assert_eq!(tls.private_key, Path::new("/etc/coi-proxy/tls/key.pem"));

    assert_eq!(config.coi.mailbox_root, "COI");
    assert_eq!(
        config.admin.address,
        Some("127.0.0.1:9090".parse().expect("literal address"))
    );
    assert_eq!(config.log.format, LogFormat::Text);
    assert_eq!(config.log.level, "info");
    assert_eq!(config.shutdown.grace, Duration::from_secs(30));

    assert_eq!(config.coi.server.as_deref(), Some("coi.example.org:4433"));
    assert_eq!(config.coi.tokens.secrets.temporary.len(), 1);
    assert_eq!(config.coi.tokens.secrets.permanent.len(), 1);
    assert_eq!(
        config.coi.tokens.temporary_validity,
        Duration::from_secs(30 * 86_400)
    );

    let submission = config.submission.as_ref().expect("submission section");
    let names: Vec<(&str, String, ListenerTls)> = submission
        .listeners
        .iter()
        .map(|l| (l.name.as_str(), l.address.to_string(), l.tls))
        .collect();
    assert_eq!(
        names,
        [
            (
                "submission",
                "0.0.0.0:587".to_owned(),
                ListenerTls::Starttls
            ),
            ("submissions", "[::]:465".to_owned(), ListenerTls::Implicit),
        ]
    );
    assert_eq!(
        (submission.upstream.host.as_str(), submission.upstream.port),
        ("127.0.0.1", 10587)
    );
    assert_eq!(submission.hostname, "mail.example.org");
    assert_eq!(submission.sender_domains, ["example.org"]);
    assert_eq!(submission.limits.max_line_bytes, 2048);
    assert_eq!(submission.limits.max_message_bytes, 50 * 1024 * 1024);
    assert_eq!(submission.limits.max_recipients, 1000);
    assert_eq!(submission.timeouts.command, Duration::from_secs(300));
    assert_eq!(submission.timeouts.upstream_reply, Duration::from_secs(60));
    assert!(!submission.insecure_allow_plaintext_auth);
    assert!(!submission.insecure_allow_any_sender);

    let delivery = config.delivery.as_ref().expect("delivery section");
    assert_eq!(delivery.address.to_string(), "127.0.0.1:10025");
    assert_eq!(delivery.upstream.port, 10024);
    assert_eq!(delivery.user_name, config::UserName::Address);
    assert_eq!(
        delivery.spool_directory.as_deref(),
        Some(Path::new("/var/tmp"))
    );
    assert_eq!(delivery.limits.spool_memory_bytes, 1024 * 1024);

    let writer = config
        .mailbox_writer
        .as_ref()
        .expect("mailbox_writer section");
    assert_eq!(writer.master_user, "coi-proxy");
    assert_eq!(writer.max_connections, 64);
    assert!(
        !format!("{writer:?}").contains("change-me"),
        "the password never shows"
    );

    let peer = &config.peer;
    assert_eq!(
        peer.routes,
        [config::PeerRoute {
            domain: "partner.example".to_owned(),
            host: "coi.partner.example".to_owned(),
            port: 4433,
        }]
    );
    assert_eq!(
        peer.dns.nameservers,
        Some(vec![
            "192.0.2.53:53".parse().expect("literal address"),
            "[2001:db8::53]:53".parse().expect("literal address"),
        ])
    );
    assert_eq!(peer.dns.timeout, Duration::from_secs(3));
    assert_eq!(peer.dns.max_ttl, Duration::from_secs(60 * 60));
    assert_eq!(peer.dns.negative_ttl, Duration::from_secs(60));
    assert_eq!(peer.dns.error_ttl, Duration::from_secs(5));
}

/// The example spells out each default; a value drifting from its constant would make
/// the documentation lie.
#[test]
fn example_config_values_match_the_default_constants() {
    let config = load("coi-proxy.yaml");
    let imap = &config.imap;
    assert_eq!(
        imap.upstream.connect_timeout,
        config::DEFAULT_UPSTREAM_CONNECT_TIMEOUT
    );
    assert_eq!(imap.limits.max_line_bytes, config::DEFAULT_MAX_LINE_BYTES);
    assert_eq!(
        imap.limits.max_literal_bytes,
        config::DEFAULT_MAX_LITERAL_BYTES
    );
    assert_eq!(imap.limits.max_sessions, config::DEFAULT_MAX_SESSIONS);
    assert_eq!(
        imap.timeouts.tls_handshake,
        config::DEFAULT_TLS_HANDSHAKE_TIMEOUT
    );
    assert_eq!(imap.timeouts.pre_auth, config::DEFAULT_PRE_AUTH_TIMEOUT);
    assert_eq!(imap.timeouts.idle, config::DEFAULT_IDLE_TIMEOUT);
    assert_eq!(
        imap.timeouts.upstream_reply,
        config::DEFAULT_UPSTREAM_REPLY_TIMEOUT
    );
    assert_eq!(imap.bare_lf, config::DEFAULT_BARE_LF);
    assert_eq!(config.coi.mailbox_root, config::DEFAULT_MAILBOX_ROOT);
    assert_eq!(config.admin.address, Some(config::DEFAULT_ADMIN_ADDRESS));
    assert_eq!(config.log.format, config::DEFAULT_LOG_FORMAT);
    assert_eq!(config.log.level, config::DEFAULT_LOG_LEVEL);
    assert_eq!(config.shutdown.grace, config::DEFAULT_SHUTDOWN_GRACE);
    assert_eq!(
        config.coi.tokens.temporary_validity,
        config::DEFAULT_TEMPORARY_TOKEN_VALIDITY
    );
    let submission = config.submission.as_ref().expect("submission section");
    assert_eq!(
        submission.limits.max_line_bytes,
        config::DEFAULT_SUBMISSION_MAX_LINE_BYTES
    );
    assert_eq!(
        submission.limits.max_message_bytes,
        config::DEFAULT_SUBMISSION_MAX_MESSAGE_BYTES
    );
    assert_eq!(
        submission.limits.max_recipients,
        config::DEFAULT_SUBMISSION_MAX_RECIPIENTS
    );
    assert_eq!(
        submission.timeouts.command,
        config::DEFAULT_SUBMISSION_COMMAND_TIMEOUT
    );
    assert_eq!(
        submission.timeouts.upstream_reply,
        config::DEFAULT_SUBMISSION_UPSTREAM_REPLY_TIMEOUT
    );
    let delivery = config.delivery.as_ref().expect("delivery section");
    assert_eq!(
        delivery.limits.max_message_bytes,
        config::DEFAULT_DELIVERY_MAX_MESSAGE_BYTES
    );
    assert_eq!(
        delivery.limits.spool_memory_bytes,
        config::DEFAULT_SPOOL_MEMORY_BYTES
    );
    assert_eq!(delivery.user_name, config::DEFAULT_USER_NAME);
    let dns = &config.peer.dns;
    assert_eq!(dns.timeout, config::DEFAULT_PEER_DNS_TIMEOUT);
    assert_eq!(dns.max_ttl, config::DEFAULT_PEER_DNS_MAX_TTL);
    assert_eq!(dns.negative_ttl, config::DEFAULT_PEER_DNS_NEGATIVE_TTL);
    assert_eq!(dns.error_ttl, config::DEFAULT_PEER_DNS_ERROR_TTL);
}

#[test]
fn minimal_config_loads_with_defaults() {
    let config = load("minimal.yaml");
    let imap = &config.imap;

    assert_eq!(imap.listeners.len(), 1);
    assert_eq!(imap.listeners[0].name, "imap-0");
    assert_eq!(imap.listeners[0].address.to_string(), "127.0.0.1:1143");
    assert_eq!(imap.listeners[0].tls, ListenerTls::None);
    assert_eq!(imap.upstream.host, "127.0.0.1");
    assert_eq!(imap.upstream.port, 10143);
    assert_eq!(imap.upstream.tls, UpstreamTls::None);
    assert_eq!(imap.upstream.connect_timeout, Duration::from_secs(5));
    assert_eq!(imap.limits.max_line_bytes, 64 * 1024);
    assert_eq!(imap.limits.max_literal_bytes, 50 * 1024 * 1024);
    assert_eq!(imap.limits.max_sessions, 10_000);
    assert_eq!(imap.timeouts.idle, Duration::from_secs(30 * 60));
    assert_eq!(imap.bare_lf, BareLfPolicy::Reject);
    assert!(!imap.insecure_allow_plaintext_auth);
    assert_eq!(config.tls, None);
    assert_eq!(config.coi.mailbox_root, "COI");
    assert_eq!(
        config.admin.address,
        Some("127.0.0.1:9090".parse().expect("literal address"))
    );
    assert_eq!(config.log.format, LogFormat::Text);
    assert_eq!(config.log.level, "info");
    assert_eq!(config.shutdown.grace, Duration::from_secs(30));

    assert!(config.submission.is_none() && config.delivery.is_none());
    assert!(config.mailbox_writer.is_none() && config.coi.tokens.secrets.temporary.is_empty());
    assert!(config.peer.routes.is_empty());
    assert_eq!(
        config.peer.dns.nameservers, None,
        "the system's resolv.conf"
    );
}

#[test]
fn every_invalid_config_fails_with_all_of_its_expected_errors() {
    let dir = conf("invalid");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("conf/invalid exists")
        .map(|entry| entry.expect("readable directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 10,
        "conf/invalid holds {} files, expected at least 10",
        files.len()
    );

    let mut failures = Vec::new();
    for file in &files {
        let name = file.display();
        let text = std::fs::read_to_string(file).expect("readable file");
        let expected: Vec<&str> = text
            .lines()
            .filter_map(|line| line.strip_prefix("# expect: "))
            .collect();
        if expected.is_empty() {
            failures.push(format!("{name}: has no `# expect:` line"));
            continue;
        }
        match config::load(file) {
            Ok(_) => failures.push(format!("{name}: loaded, but must fail")),
            Err(errors) => {
                let shown = errors.to_string();
                for substring in expected {
                    if !shown.contains(substring) {
                        failures.push(format!("{name}: missing {substring:?} in:\n{shown}"));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn many_mistakes_file_reports_exactly_its_ten_errors() {
    let errors =
        config::load(&conf("invalid/many_mistakes_at_once.yaml")).expect_err("the file is invalid");
    assert_eq!(errors.0.len(), 10, "{errors}");
}

#[test]
fn unreadable_file_is_one_error_naming_the_file() {
    let path = conf("does-not-exist.yaml");
    let errors = config::load(&path).expect_err("the file does not exist");
    assert_eq!(errors.0.len(), 1);
    assert_eq!(errors.0[0].path, path.display().to_string());
    assert!(
        errors.0[0]
            .message
            .starts_with("cannot read configuration file"),
        "{errors}"
    );
}
