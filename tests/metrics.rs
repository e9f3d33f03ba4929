//! Pins the metrics exposition: names, help texts, types and label sets are a contract
//! with dashboards and alerts, so changing one must change this file too.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use coi_proxy::metrics::{
    CommandClass, CommandOutcome, DeliveryOutcome, DeliveryPath, Direction, FallbackReason,
    LinkState, ListenerKind, Metrics, ReceivedOutcome, TlsOutcome, TokenVerification,
};

/// One metric family as the exposition must show it.
struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    /// Label names of the family's own samples (histograms add `le` to `_bucket`).
    labels: &'static [&'static str],
    /// How many label combinations are exported before any event.
    series: usize,
}

const FAMILIES: &[Family] = &[
    Family {
        name: "coi_proxy_build_info",
        kind: "gauge",
        help: "Always 1; the version label says which coi-proxy build is running.",
        labels: &["version"],
        series: 1,
    },
    Family {
        name: "coi_proxy_delivery_duration_seconds",
        kind: "histogram",
        help: "Time from the end of a message's data to the last recipient's reply.",
        labels: &[],
        series: 1,
    },
    Family {
        name: "coi_proxy_delivery_message_bytes_total",
        kind: "counter",
        help: "Bytes of the messages received from Postfix (unstuffed).",
        labels: &[],
        series: 1,
    },
    Family {
        name: "coi_proxy_delivery_recipients_total",
        kind: "counter",
        help: "Recipients of delivered messages, by route (lmtp: relayed to Dovecot's \
               LMTP; inbox, chats: a COI user's chat message appended with $Chat) and \
               outcome (delivered; rejected: a permanent refusal; failed: 4xx).",
        labels: &["route", "outcome"],
        series: 3 * 3,
    },
    Family {
        name: "coi_proxy_delivery_token_captures_total",
        kind: "counter",
        help: "Temporary tokens addressed to a COI recipient, by what happened to the \
               recipient's contact (stored; unchanged: already there; failed).",
        labels: &["outcome"],
        series: 3,
    },
    Family {
        name: "coi_proxy_imap_bytes_total",
        kind: "counter",
        help: "IMAP bytes relayed, by direction (before TLS encryption).",
        labels: &["direction"],
        series: 2,
    },
    Family {
        name: "coi_proxy_imap_command_duration_seconds",
        kind: "histogram",
        help: "Time from a client's complete IMAP command to its tagged reply, by command.",
        labels: &["command"],
        series: 16,
    },
    Family {
        name: "coi_proxy_imap_commands_total",
        kind: "counter",
        help: "IMAP commands completed, by command and outcome (ok/no/bad from the server's \
               tagged reply; rejected when the proxy answered itself; aborted when the \
               connection ended first).",
        labels: &["command", "outcome"],
        series: 16 * 5,
    },
    Family {
        name: "coi_proxy_imap_connections_current",
        kind: "gauge",
        help: "IMAP client connections open now, by listener.",
        labels: &["listener"],
        series: 3,
    },
    Family {
        name: "coi_proxy_imap_connections_total",
        kind: "counter",
        help: "IMAP client connections accepted, by listener.",
        labels: &["listener"],
        series: 3,
    },
    Family {
        name: "coi_proxy_imap_idle_wakes_total",
        kind: "counter",
        help: "Backend IDLEs restarted because the proxy stored a message for the idling \
               session's mailbox (DESIGN.md section 6).",
        labels: &[],
        series: 1,
    },
    Family {
        name: "coi_proxy_imap_session_duration_seconds",
        kind: "histogram",
        help: "Time from accepting an IMAP client connection until it closed, by listener.",
        labels: &["listener"],
        series: 3,
    },
    Family {
        name: "coi_proxy_imap_tls_handshakes_total",
        kind: "counter",
        help: "TLS handshakes with IMAP clients (implicit TLS or STARTTLS), by listener and \
               outcome.",
        labels: &["listener", "outcome"],
        series: 3 * 3,
    },
    Family {
        name: "coi_proxy_imap_upstream_connect_failures_total",
        kind: "counter",
        help: "Connections to the upstream IMAP server that could not be established \
               (refused, timed out or TLS failed).",
        labels: &[],
        series: 1,
    },
    Family {
        name: "coi_proxy_peer_deliveries_total",
        kind: "counter",
        help: "Recipients delivered by this proxy as sender, by path (quic: the fast path \
               to the recipient's coi-proxy; smtp: handed to Postfix) and outcome \
               (delivered: stored by the peer or accepted by Postfix; rejected: a \
               permanent refusal; failed: a temporary failure).",
        labels: &["path", "outcome"],
        series: 2 * 3,
    },
    Family {
        name: "coi_proxy_peer_delivery_duration_seconds",
        kind: "histogram",
        help: "Time from the end of the client's message data to a recipient's verdict, \
               by path.",
        labels: &["path"],
        series: 2,
    },
    Family {
        name: "coi_proxy_peer_fallbacks_total",
        kind: "counter",
        help: "Fast-path candidate recipients sent by mail instead, by reason (no_peer: \
               the domain has no coi-proxy; discovery: DNS failed; connect: the link \
               could not be opened; backoff: the link is waiting to reconnect; timeout: \
               no verdict within peer.delivery_timeout; refused: the peer refused the \
               whole delivery with an Error frame; temp_fail, rejected: the peer's \
               verdict for the recipient; protocol: the peer broke the protocol or the \
               stream was cut; too_large: over peer.max_message_bytes; not_chat: not a \
               chat message; internal: this proxy's own failure).",
        labels: &["reason"],
        series: 12,
    },
    Family {
        name: "coi_proxy_peer_links",
        kind: "gauge",
        help: "QUIC links to peer coi-proxies now, by state (connecting: being opened; \
               up: open; backoff: waiting to reconnect after a failure).",
        labels: &["state"],
        series: 3,
    },
    Family {
        name: "coi_proxy_peer_received_total",
        kind: "counter",
        help: "Recipients of deliveries received over peer links, by what this proxy \
               answered (stored; duplicate: already in the mailbox, answered stored \
               without storing again; rejected: a permanent refusal; temp_fail: a \
               temporary failure; abandoned: the stream ended before the message was \
               complete, nothing stored).",
        labels: &["outcome"],
        series: 5,
    },
    Family {
        name: "coi_proxy_peer_token_verifications_total",
        kind: "counter",
        help: "Tokens presented to this proxy over a peer link, by result (temporary, \
               permanent: accepted tokens of that kind; malformed: not a COI token; \
               bad_mac: no secret of this proxy produces its MAC; wrong_pair: genuine but \
               bound to another sender and recipient; expired; not_in_contacts: the \
               sender is not among the recipient's contacts).",
        labels: &["result"],
        series: 7,
    },
    Family {
        name: "coi_proxy_submission_auth_total",
        kind: "counter",
        help: "AUTH exchanges relayed to Postfix, by outcome (success: 235; failure: \
               refused or cancelled; unavailable: Postfix could not be asked).",
        labels: &["outcome"],
        series: 3,
    },
    Family {
        name: "coi_proxy_submission_connections_current",
        kind: "gauge",
        help: "Submission client connections open now, by listener.",
        labels: &["listener"],
        series: 3,
    },
    Family {
        name: "coi_proxy_submission_connections_total",
        kind: "counter",
        help: "Submission client connections accepted, by listener.",
        labels: &["listener"],
        series: 3,
    },
    Family {
        name: "coi_proxy_submission_header_fields_removed_total",
        kind: "counter",
        help: "Client-supplied COI token or verdict fields removed from submitted mail.",
        labels: &[],
        series: 1,
    },
    Family {
        name: "coi_proxy_submission_message_bytes_total",
        kind: "counter",
        help: "Body bytes of the messages Postfix took (as received, before stuffing).",
        labels: &[],
        series: 1,
    },
    Family {
        name: "coi_proxy_submission_messages_total",
        kind: "counter",
        help: "Messages whose data ended, by outcome (relayed: Postfix took it; \
               rejected: Postfix refused it; refused: the proxy refused it for the \
               client's fault; failed: Postfix failed or went silent, 451; internal: the \
               proxy's own fault, 451).",
        labels: &["outcome"],
        series: 5,
    },
    Family {
        name: "coi_proxy_submission_session_duration_seconds",
        kind: "histogram",
        help: "Time from accepting a submission client connection until it closed, by \
               listener.",
        labels: &["listener"],
        series: 3,
    },
    Family {
        name: "coi_proxy_submission_tls_handshakes_total",
        kind: "counter",
        help: "TLS handshakes with submission clients (implicit TLS or STARTTLS), by \
               listener and outcome.",
        labels: &["listener", "outcome"],
        series: 3 * 3,
    },
    Family {
        name: "coi_proxy_submission_token_injections_total",
        kind: "counter",
        help: "X-COI-Temporary-Token fields added to outgoing chat messages.",
        labels: &[],
        series: 1,
    },
    Family {
        name: "coi_proxy_submission_upstream_connect_failures_total",
        kind: "counter",
        help: "Connections to Postfix that could not be established or set up (refused, \
               timed out, TLS failed, XCLIENT or EHLO refused).",
        labels: &[],
        series: 1,
    },
];

/// One sample line: metric name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the sample lines of the text format. Enough for what `Metrics` emits: label
/// values here never contain `"`, `,` or `}`.
fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("sample has a value");
            let value = match value {
                "+Inf" => f64::INFINITY,
                value => value.parse().expect("numeric value"),
            };
            let (name, labels) = match series.split_once('{') {
                None => (series, BTreeMap::new()),
                Some((name, rest)) => {
                    let inner = rest.strip_suffix('}').expect("closing brace");
                    let labels = inner
                        .split(',')
                        .map(|pair| {
                            let (key, value) = pair.split_once('=').expect("label pair");
                            let value = value.trim_matches('"');
                            (key.to_owned(), value.to_owned())
                        })
                        .collect();
                    (name, labels)
                }
            };
            Sample {
                name: name.to_owned(),
                labels,
                value,
            }
        })
        .collect()
}

/// The value of the sample named `name` with exactly `labels`.
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let wanted: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let found: Vec<Sample> = samples(text)
        .into_iter()
        .filter(|s| s.name == name && s.labels == wanted)
        .collect();
    assert_eq!(found.len(), 1, "{name}{labels:?} in\n{text}");
    found[0].value
}

/// Name of the family a sample belongs to.
fn family_of(sample: &str) -> &str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = sample.strip_suffix(suffix) {
            if FAMILIES
                .iter()
                .any(|f| f.name == base && f.kind == "histogram")
            {
                return base;
            }
        }
    }
    sample
}

#[test]
fn every_family_has_help_type_and_label_set() {
    let text = Metrics::new().encode();
    for family in FAMILIES {
        let help = format!("# HELP {} {}\n", family.name, family.help);
        assert!(text.contains(&help), "missing {help:?} in\n{text}");
        let kind = format!("# TYPE {} {}\n", family.name, family.kind);
        assert!(text.contains(&kind), "missing {kind:?}");

        let expected: BTreeSet<&str> = family.labels.iter().copied().collect();
        let own: Vec<Sample> = samples(&text)
            .into_iter()
            .filter(|s| family_of(&s.name) == family.name)
            .collect();
        assert!(!own.is_empty(), "{} has no samples", family.name);
        for sample in &own {
            let mut names: BTreeSet<&str> = sample.labels.keys().map(String::as_str).collect();
            if sample.name.ends_with("_bucket") {
                assert!(names.remove("le"), "{sample:?} lacks le");
            }
            assert_eq!(names, expected, "{sample:?}");
        }

        let series: BTreeSet<Vec<(String, String)>> = own
            .iter()
            .map(|s| {
                s.labels
                    .iter()
                    .filter(|(k, _)| k.as_str() != "le")
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .collect();
        assert_eq!(series.len(), family.series, "series of {}", family.name);
    }
}

#[test]
fn no_other_families_are_exported() {
    let text = Metrics::new().encode();
    let exported: BTreeSet<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split(' ').next())
        .collect();
    let pinned: BTreeSet<&str> = FAMILIES.iter().map(|f| f.name).collect();
    assert_eq!(exported, pinned);
}

#[test]
fn every_series_starts_at_zero_except_build_info() {
    let text = Metrics::new().encode();
    for sample in samples(&text) {
        let expected = if sample.name == "coi_proxy_build_info" {
            1.0
        } else {
            0.0
        };
        assert_eq!(sample.value, expected, "{sample:?}");
    }
    assert_eq!(
        value(
            &text,
            "coi_proxy_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
}

#[test]
fn label_values_are_the_enum_labels() {
    let text = Metrics::new().encode();
    for class in CommandClass::ALL {
        for outcome in CommandOutcome::ALL {
            let labels = [
                ("command", class.as_label()),
                ("outcome", outcome.as_label()),
            ];
            assert_eq!(value(&text, "coi_proxy_imap_commands_total", &labels), 0.0);
        }
    }
    for listener in ListenerKind::ALL {
        for outcome in TlsOutcome::ALL {
            let labels = [
                ("listener", listener.as_label()),
                ("outcome", outcome.as_label()),
            ];
            assert_eq!(
                value(&text, "coi_proxy_imap_tls_handshakes_total", &labels),
                0.0
            );
        }
    }
    let directions: Vec<&str> = Direction::ALL.iter().map(|d| d.as_label()).collect();
    assert_eq!(directions, ["to_client", "to_upstream"]);
    let listeners: Vec<&str> = ListenerKind::ALL.iter().map(|l| l.as_label()).collect();
    assert_eq!(listeners, ["implicit", "plain", "starttls"]);
    let outcomes: Vec<&str> = CommandOutcome::ALL.iter().map(|o| o.as_label()).collect();
    assert_eq!(outcomes, ["aborted", "bad", "no", "ok", "rejected"]);
}

#[test]
fn peer_label_values_are_the_enum_labels() {
    let text = Metrics::new().encode();
    for path in DeliveryPath::ALL {
        for outcome in DeliveryOutcome::ALL {
            let labels = [("path", path.as_label()), ("outcome", outcome.as_label())];
            assert_eq!(
                value(&text, "coi_proxy_peer_deliveries_total", &labels),
                0.0
            );
        }
        let labels = [("path", path.as_label())];
        assert_eq!(
            value(
                &text,
                "coi_proxy_peer_delivery_duration_seconds_count",
                &labels
            ),
            0.0
        );
    }
    for state in LinkState::ALL {
        let labels = [("state", state.as_label())];
        assert_eq!(value(&text, "coi_proxy_peer_links", &labels), 0.0);
    }
    for reason in FallbackReason::ALL {
        let labels = [("reason", reason.as_label())];
        assert_eq!(value(&text, "coi_proxy_peer_fallbacks_total", &labels), 0.0);
    }
    for result in TokenVerification::ALL {
        let labels = [("result", result.as_label())];
        assert_eq!(
            value(&text, "coi_proxy_peer_token_verifications_total", &labels),
            0.0
        );
    }
    for outcome in ReceivedOutcome::ALL {
        let labels = [("outcome", outcome.as_label())];
        assert_eq!(value(&text, "coi_proxy_peer_received_total", &labels), 0.0);
    }

    let labels = |all: &[&'static str]| all.to_vec();
    assert_eq!(
        labels(&LinkState::ALL.map(LinkState::as_label)),
        ["backoff", "connecting", "up"]
    );
    assert_eq!(
        labels(&DeliveryPath::ALL.map(DeliveryPath::as_label)),
        ["quic", "smtp"]
    );
    assert_eq!(
        labels(&DeliveryOutcome::ALL.map(DeliveryOutcome::as_label)),
        ["delivered", "failed", "rejected"]
    );
    assert_eq!(
        labels(&FallbackReason::ALL.map(FallbackReason::as_label)),
        [
            "backoff",
            "connect",
            "discovery",
            "internal",
            "no_peer",
            "not_chat",
            "protocol",
            "refused",
            "rejected",
            "temp_fail",
            "timeout",
            "too_large",
        ]
    );
    assert_eq!(
        labels(&TokenVerification::ALL.map(TokenVerification::as_label)),
        [
            "bad_mac",
            "expired",
            "malformed",
            "not_in_contacts",
            "permanent",
            "temporary",
            "wrong_pair",
        ]
    );
    assert_eq!(
        labels(&ReceivedOutcome::ALL.map(ReceivedOutcome::as_label)),
        ["abandoned", "duplicate", "rejected", "stored", "temp_fail"]
    );
}

#[test]
fn connection_guard_moves_gauge_counter_and_session_histogram() {
    let metrics = Metrics::new();
    let implicit = [("listener", "implicit")];
    let plain = [("listener", "plain")];

    let first = metrics.imap.connection_opened(ListenerKind::Implicit);
    let second = metrics.imap.connection_opened(ListenerKind::Implicit);
    let text = metrics.encode();
    assert_eq!(
        value(&text, "coi_proxy_imap_connections_current", &implicit),
        2.0
    );
    assert_eq!(
        value(&text, "coi_proxy_imap_connections_total", &implicit),
        2.0
    );
    assert_eq!(
        value(&text, "coi_proxy_imap_connections_current", &plain),
        0.0
    );
    assert_eq!(
        value(
            &text,
            "coi_proxy_imap_session_duration_seconds_count",
            &implicit
        ),
        0.0
    );

    drop(first);
    let text = metrics.encode();
    assert_eq!(
        value(&text, "coi_proxy_imap_connections_current", &implicit),
        1.0
    );
    assert_eq!(
        value(&text, "coi_proxy_imap_connections_total", &implicit),
        2.0
    );
    assert_eq!(
        value(
            &text,
            "coi_proxy_imap_session_duration_seconds_count",
            &implicit
        ),
        1.0
    );
    // A session shorter than the first bucket lands in every bucket.
    assert_eq!(
        value(
            &text,
            "coi_proxy_imap_session_duration_seconds_bucket",
            &[("listener", "implicit"), ("le", "1")]
        ),
        1.0
    );

    drop(second);
    let text = metrics.encode();
    assert_eq!(
        value(&text, "coi_proxy_imap_connections_current", &implicit),
        0.0
    );
}

#[test]
fn command_finished_counts_and_observes_latency() {
    let metrics = Metrics::new();
    metrics.imap.command_finished(
        CommandClass::Fetch,
        CommandOutcome::Ok,
        Duration::from_millis(7),
    );
    metrics.imap.command_finished(
        CommandClass::Fetch,
        CommandOutcome::Rejected,
        Duration::from_micros(40),
    );
    let text = metrics.encode();
    let fetch_ok = [("command", "fetch"), ("outcome", "ok")];
    let fetch_rejected = [("command", "fetch"), ("outcome", "rejected")];
    let fetch_no = [("command", "fetch"), ("outcome", "no")];
    assert_eq!(
        value(&text, "coi_proxy_imap_commands_total", &fetch_ok),
        1.0
    );
    assert_eq!(
        value(&text, "coi_proxy_imap_commands_total", &fetch_rejected),
        1.0
    );
    assert_eq!(
        value(&text, "coi_proxy_imap_commands_total", &fetch_no),
        0.0
    );

    let fetch = [("command", "fetch")];
    let bucket = |le: &str| {
        value(
            &text,
            "coi_proxy_imap_command_duration_seconds_bucket",
            &[("command", "fetch"), ("le", le)],
        )
    };
    assert_eq!(
        value(
            &text,
            "coi_proxy_imap_command_duration_seconds_count",
            &fetch
        ),
        2.0
    );
    let sum = value(&text, "coi_proxy_imap_command_duration_seconds_sum", &fetch);
    assert!((sum - 0.007_04).abs() < 1e-9, "{sum}");
    assert_eq!(bucket("0.00005"), 1.0);
    assert_eq!(bucket("0.005"), 1.0);
    assert_eq!(bucket("0.01"), 2.0);
    assert_eq!(bucket("30"), 2.0);
    assert_eq!(bucket("+Inf"), 2.0);
    assert_eq!(
        value(
            &text,
            "coi_proxy_imap_command_duration_seconds_count",
            &[("command", "store")]
        ),
        0.0
    );
}

#[test]
fn bytes_are_counted_per_direction() {
    let metrics = Metrics::new();
    metrics.imap.bytes(Direction::ToUpstream, 100);
    metrics.imap.bytes(Direction::ToUpstream, 23);
    metrics.imap.bytes(Direction::ToClient, 4096);
    let text = metrics.encode();
    let name = "coi_proxy_imap_bytes_total";
    assert_eq!(value(&text, name, &[("direction", "to_upstream")]), 123.0);
    assert_eq!(value(&text, name, &[("direction", "to_client")]), 4096.0);
}

#[test]
fn tls_handshakes_are_counted_per_listener_and_outcome() {
    let metrics = Metrics::new();
    metrics
        .imap
        .tls_handshake(ListenerKind::Starttls, TlsOutcome::Timeout);
    metrics
        .imap
        .tls_handshake(ListenerKind::Implicit, TlsOutcome::Ok);
    metrics
        .imap
        .tls_handshake(ListenerKind::Implicit, TlsOutcome::Ok);
    let text = metrics.encode();
    let name = "coi_proxy_imap_tls_handshakes_total";
    let at =
        |listener, outcome| value(&text, name, &[("listener", listener), ("outcome", outcome)]);
    assert_eq!(at("starttls", "timeout"), 1.0);
    assert_eq!(at("implicit", "ok"), 2.0);
    assert_eq!(at("implicit", "failed"), 0.0);
    assert_eq!(at("starttls", "ok"), 0.0);
}

#[test]
fn upstream_connect_failures_are_counted() {
    let metrics = Metrics::new();
    metrics.imap.upstream_connect_failed();
    let text = metrics.encode();
    assert_eq!(
        value(&text, "coi_proxy_imap_upstream_connect_failures_total", &[]),
        1.0
    );
}

#[test]
fn registries_are_independent() {
    // An explicit registry per `Metrics`: nothing leaks through a global default.
    let a = Metrics::new();
    let b = Metrics::new();
    a.imap.upstream_connect_failed();
    let name = "coi_proxy_imap_upstream_connect_failures_total";
    assert_eq!(value(&a.encode(), name, &[]), 1.0);
    assert_eq!(value(&b.encode(), name, &[]), 0.0);
    assert!(prometheus::gather().is_empty());
}

#[test]
fn peer_link_states_move_the_gauge() {
    let metrics = Metrics::new();
    let name = "coi_proxy_peer_links";
    // Two links being opened; one comes up, the other fails and backs off.
    metrics.peer.link_state(None, Some(LinkState::Connecting));
    metrics.peer.link_state(None, Some(LinkState::Connecting));
    metrics
        .peer
        .link_state(Some(LinkState::Connecting), Some(LinkState::Up));
    metrics
        .peer
        .link_state(Some(LinkState::Connecting), Some(LinkState::Backoff));
    let text = metrics.encode();
    assert_eq!(value(&text, name, &[("state", "connecting")]), 0.0);
    assert_eq!(value(&text, name, &[("state", "up")]), 1.0);
    assert_eq!(value(&text, name, &[("state", "backoff")]), 1.0);

    // The backed-off link retries; the open one is closed.
    metrics
        .peer
        .link_state(Some(LinkState::Backoff), Some(LinkState::Connecting));
    metrics.peer.link_state(Some(LinkState::Up), None);
    let text = metrics.encode();
    assert_eq!(value(&text, name, &[("state", "connecting")]), 1.0);
    assert_eq!(value(&text, name, &[("state", "up")]), 0.0);
    assert_eq!(value(&text, name, &[("state", "backoff")]), 0.0);

    metrics.peer.link_state(Some(LinkState::Connecting), None);
    let text = metrics.encode();
    for state in LinkState::ALL {
        assert_eq!(value(&text, name, &[("state", state.as_label())]), 0.0);
    }

    // Neither end: nothing to account for.
    metrics.peer.link_state(None, None);
    let text = metrics.encode();
    for state in LinkState::ALL {
        assert_eq!(value(&text, name, &[("state", state.as_label())]), 0.0);
    }
}

#[test]
fn peer_deliveries_count_per_path_and_outcome_and_observe_latency() {
    let metrics = Metrics::new();
    metrics.peer.delivery(
        DeliveryPath::Quic,
        DeliveryOutcome::Delivered,
        Duration::from_micros(300),
    );
    metrics.peer.delivery(
        DeliveryPath::Quic,
        DeliveryOutcome::Delivered,
        Duration::from_millis(4),
    );
    metrics.peer.delivery(
        DeliveryPath::Smtp,
        DeliveryOutcome::Failed,
        Duration::from_secs(2),
    );
    metrics.peer.delivery(
        DeliveryPath::Smtp,
        DeliveryOutcome::Rejected,
        Duration::from_secs(45),
    );
    let text = metrics.encode();
    let name = "coi_proxy_peer_deliveries_total";
    let at = |path, outcome| value(&text, name, &[("path", path), ("outcome", outcome)]);
    assert_eq!(at("quic", "delivered"), 2.0);
    assert_eq!(at("quic", "failed"), 0.0);
    assert_eq!(at("quic", "rejected"), 0.0);
    assert_eq!(at("smtp", "delivered"), 0.0);
    assert_eq!(at("smtp", "failed"), 1.0);
    assert_eq!(at("smtp", "rejected"), 1.0);

    // Every call is observed, whatever its outcome.
    let count = |path| {
        value(
            &text,
            "coi_proxy_peer_delivery_duration_seconds_count",
            &[("path", path)],
        )
    };
    assert_eq!(count("quic"), 2.0);
    assert_eq!(count("smtp"), 2.0);
    let sum = value(
        &text,
        "coi_proxy_peer_delivery_duration_seconds_sum",
        &[("path", "quic")],
    );
    assert!((sum - 0.004_3).abs() < 1e-9, "{sum}");
    let bucket = |path, le| {
        value(
            &text,
            "coi_proxy_peer_delivery_duration_seconds_bucket",
            &[("path", path), ("le", le)],
        )
    };
    // The fast path's first bucket is half a millisecond.
    assert_eq!(bucket("quic", "0.0005"), 1.0);
    assert_eq!(bucket("quic", "0.0025"), 1.0);
    assert_eq!(bucket("quic", "0.005"), 2.0);
    assert_eq!(bucket("smtp", "1"), 0.0);
    assert_eq!(bucket("smtp", "2.5"), 1.0);
    // Past the last bound (30 s) only `+Inf` counts it.
    assert_eq!(bucket("smtp", "30"), 1.0);
    assert_eq!(bucket("smtp", "+Inf"), 2.0);
}

#[test]
fn peer_fallbacks_are_counted_per_reason() {
    let metrics = Metrics::new();
    metrics.peer.fallback(FallbackReason::NoPeer);
    metrics.peer.fallback(FallbackReason::NoPeer);
    metrics.peer.fallback(FallbackReason::Timeout);
    metrics.peer.fallback(FallbackReason::TooLarge);
    let text = metrics.encode();
    let name = "coi_proxy_peer_fallbacks_total";
    let at = |reason| value(&text, name, &[("reason", reason)]);
    assert_eq!(at("no_peer"), 2.0);
    assert_eq!(at("timeout"), 1.0);
    assert_eq!(at("too_large"), 1.0);
    assert_eq!(at("temp_fail"), 0.0);
    assert_eq!(at("not_chat"), 0.0);
}

#[test]
fn peer_token_verifications_are_counted_per_result() {
    let metrics = Metrics::new();
    metrics
        .peer
        .token_verification(TokenVerification::Temporary);
    metrics
        .peer
        .token_verification(TokenVerification::NotInContacts);
    metrics.peer.token_verification(TokenVerification::BadMac);
    metrics.peer.token_verification(TokenVerification::BadMac);
    let text = metrics.encode();
    let name = "coi_proxy_peer_token_verifications_total";
    let at = |result| value(&text, name, &[("result", result)]);
    assert_eq!(at("temporary"), 1.0);
    assert_eq!(at("not_in_contacts"), 1.0);
    assert_eq!(at("bad_mac"), 2.0);
    assert_eq!(at("permanent"), 0.0);
    assert_eq!(at("wrong_pair"), 0.0);
}

#[test]
fn peer_received_recipients_are_counted_per_outcome() {
    let metrics = Metrics::new();
    metrics.peer.received(ReceivedOutcome::Stored);
    metrics.peer.received(ReceivedOutcome::Duplicate);
    metrics.peer.received(ReceivedOutcome::Abandoned);
    metrics.peer.received(ReceivedOutcome::Stored);
    let text = metrics.encode();
    let name = "coi_proxy_peer_received_total";
    let at = |outcome| value(&text, name, &[("outcome", outcome)]);
    assert_eq!(at("stored"), 2.0);
    assert_eq!(at("duplicate"), 1.0);
    assert_eq!(at("abandoned"), 1.0);
    assert_eq!(at("rejected"), 0.0);
    assert_eq!(at("temp_fail"), 0.0);
}
