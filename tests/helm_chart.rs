//! The Helm chart in `helm/coi-proxy/` agrees with the proxy, without a helm binary:
//!
//! - the default `config` value is a valid coi-proxy configuration (the proxy's own
//!   loader);
//! - the Service's target ports are the configured listeners' ports, and the admin port
//!   the probes and the ServiceMonitor use is the admin listener's, on an address the
//!   kubelet can reach;
//! - `terminationGracePeriodSeconds` covers the shutdown grace and the close-down after
//!   it;
//! - the TLS Secret is mounted where `config.tls` looks;
//! - every `.Values.a.b` path in the templates exists in values.yaml (catches typos, which
//!   Helm renders as empty strings), and every top-level value is used;
//! - values.schema.json is strict JSON, describes exactly values.yaml's top-level keys
//!   and the configuration's sections, and accepts the default values;
//! - Chart.yaml's appVersion is this crate's version.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_yaml::{Mapping, Value};

fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("helm/coi-proxy")
}

fn read(relative: &str) -> String {
    let path = chart_dir().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn yaml(relative: &str) -> Value {
    serde_yaml::from_str(&read(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

fn values() -> Value {
    yaml("values.yaml")
}

/// The value at a dotted path, e.g. `get(&values, "service.ports")`.
fn get<'a>(value: &'a Value, path: &str) -> &'a Value {
    let mut current = value;
    for key in path.split('.') {
        current = current
            .get(key)
            .unwrap_or_else(|| panic!("values.yaml has no `{path}` (missing `{key}`)"));
    }
    current
}

fn keys(mapping: &Mapping) -> BTreeSet<String> {
    mapping
        .keys()
        .map(|k| k.as_str().expect("string keys").to_owned())
        .collect()
}

fn as_mapping<'a>(value: &'a Value, what: &str) -> &'a Mapping {
    value
        .as_mapping()
        .unwrap_or_else(|| panic!("{what} is not a mapping"))
}

/// The chart's `config` value, serialised back to YAML as the ConfigMap carries it and
/// loaded by the proxy's own loader.
fn chart_config() -> coi_proxy::config::Config {
    let text = serde_yaml::to_string(get(&values(), "config")).expect("serialise config");
    coi_proxy::config::load_str(&text)
        .unwrap_or_else(|errors| panic!("values.yaml `config` is invalid:\n{errors}\n---\n{text}"))
}

#[test]
fn default_config_is_a_valid_in_cluster_configuration() {
    let config = chart_config();
    let listeners: Vec<(String, u16)> = config
        .imap
        .listeners
        .iter()
        .map(|l| (l.address.to_string(), l.address.port()))
        .collect();
    assert_eq!(
        listeners,
        [
            ("0.0.0.0:143".to_owned(), 143),
            ("0.0.0.0:993".to_owned(), 993)
        ]
    );
    assert_eq!(
        config
            .imap
            .listeners
            .iter()
            .map(|l| l.tls)
            .collect::<Vec<_>>(),
        [
            coi_proxy::config::ListenerTls::Starttls,
            coi_proxy::config::ListenerTls::Implicit
        ]
    );
    assert!(
        config.imap.upstream.host.ends_with(".svc.cluster.local"),
        "the default upstream is an in-cluster Service name: {}",
        config.imap.upstream.host
    );
    assert_eq!(config.log.format, coi_proxy::config::LogFormat::Json);
}

#[test]
fn service_target_ports_are_the_listener_ports() {
    let values = values();
    let config = chart_config();
    let ports = get(&values, "service.ports").as_sequence().expect("a list");
    let mut names = BTreeSet::new();
    let mut targets = BTreeSet::new();
    for port in ports {
        let name = port.get("name").and_then(Value::as_str).expect("port name");
        // Kubernetes port names (IANA_SVC_NAME): 1-15 of a-z 0-9 '-', starting and ending
        // alphanumeric; "admin" is the chart's own.
        assert!(
            !name.is_empty()
                && name.len() <= 15
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !name.starts_with('-')
                && !name.ends_with('-'),
            "bad port name {name:?}"
        );
        assert_ne!(name, "admin", "`admin` names the admin port");
        assert!(names.insert(name.to_owned()), "duplicate port name {name}");
        let target = port
            .get("targetPort")
            .and_then(Value::as_u64)
            .expect("targetPort");
        assert!(targets.insert(target), "duplicate targetPort {target}");
    }
    let listening: BTreeSet<u64> = config
        .imap
        .listeners
        .iter()
        .map(|l| u64::from(l.address.port()))
        .collect();
    assert_eq!(
        targets, listening,
        "service.ports[*].targetPort must be exactly the ports of config.imap.listeners"
    );
}

#[test]
fn probes_use_the_admin_listener() {
    let values = values();
    let config = chart_config();
    let admin = config
        .admin
        .address
        .expect("config.admin.address must be on: the probes and Prometheus use it");
    assert!(
        !admin.ip().is_loopback(),
        "config.admin.address {admin} is loopback: the kubelet and Prometheus cannot reach it"
    );
    let port = get(&values, "admin.port").as_u64().expect("admin.port");
    assert_eq!(
        port,
        u64::from(admin.port()),
        "admin.port must be the port of config.admin.address"
    );
    assert!(
        config
            .imap
            .listeners
            .iter()
            .all(|l| u64::from(l.address.port()) != port),
        "the admin port is also an IMAP port"
    );

    // The probes go to the container port named `admin`, which is admin.port.
    let deployment = read("templates/deployment.yaml");
    for needle in [
        "- name: admin\n              containerPort: {{ .Values.admin.port }}",
        "livenessProbe:\n            httpGet:\n              path: /healthz\n              port: admin",
        "readinessProbe:\n            httpGet:\n              path: /readyz\n              port: admin",
    ] {
        assert!(deployment.contains(needle), "deployment.yaml lacks:\n{needle}");
    }
    let monitor = read("templates/servicemonitor.yaml");
    assert!(monitor.contains("- port: admin\n      path: /metrics"));
    let headless = read("templates/service-headless.yaml");
    assert!(headless.contains("port: {{ .Values.admin.port }}\n      targetPort: admin"));
}

#[test]
fn termination_grace_covers_the_shutdown_grace() {
    let values = values();
    let grace = chart_config().shutdown.grace;
    let termination = get(&values, "terminationGracePeriodSeconds")
        .as_u64()
        .expect("terminationGracePeriodSeconds");
    // After the grace, Running::shutdown (src/app.rs) waits up to 5 s for sessions to
    // take their BYE and up to 5 s for its tasks: SIGKILL must come after both.
    let close_down = Duration::from_secs(10);
    assert!(
        Duration::from_secs(termination) > grace,
        "terminationGracePeriodSeconds {termination} is not above shutdown.grace {grace:?}"
    );
    assert!(
        Duration::from_secs(termination) >= grace + close_down,
        "terminationGracePeriodSeconds {termination} < shutdown.grace {grace:?} + {close_down:?}"
    );
}

#[test]
fn tls_secret_is_mounted_where_the_config_looks() {
    let values = values();
    let tls = chart_config().tls.expect("the default config serves TLS");
    let mount = get(&values, "tls.mountPath")
        .as_str()
        .expect("tls.mountPath");
    let secret = get(&values, "tls.secretName")
        .as_str()
        .expect("tls.secretName");
    assert!(!secret.is_empty());
    // A kubernetes.io/tls Secret holds tls.crt and tls.key.
    assert_eq!(tls.certificate, Path::new(mount).join("tls.crt"));
    assert_eq!(tls.private_key, Path::new(mount).join("tls.key"));
}

#[test]
fn proxy_and_helm_test_read_the_rendered_config_file() {
    let helpers = read("templates/_helpers.tpl");
    assert!(helpers.contains(
        "{{- define \"coi-proxy.configPath\" -}}\n/etc/coi-proxy/coi-proxy.yaml\n{{- end }}"
    ));
    assert!(helpers.contains("subPath: coi-proxy.yaml"));
    assert!(read("templates/configmap.yaml").contains("coi-proxy.yaml: |"));
    for (template, command) in [
        ("templates/deployment.yaml", "- run\n"),
        ("templates/tests/test-config-check.yaml", "- check\n"),
    ] {
        let text = read(template);
        assert!(
            text.contains(command)
                && text.contains("- --config\n")
                && text.contains("{{ include \"coi-proxy.configPath\" . }}"),
            "{template} must run `coi-proxy {}--config <configPath>`",
            command.trim_start_matches("- ").trim_end()
        );
    }
    assert!(read("templates/tests/test-config-check.yaml").contains("helm.sh/hook: test"));
}

/// Every file under templates/, as (path relative to the chart, text).
fn templates() -> Vec<(String, String)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read templates") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut paths = Vec::new();
    walk(&chart_dir().join("templates"), &mut paths);
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let name = path
                .strip_prefix(chart_dir())
                .expect("under the chart")
                .display()
                .to_string();
            let text = std::fs::read_to_string(&path).expect("template text");
            (name, text)
        })
        .collect()
}

/// The `a.b.c` of every `.Values.a.b.c` in `text` (also `$.Values...`).
fn values_paths(text: &str) -> Vec<String> {
    const MARK: &str = ".Values.";
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(MARK) {
        let after = &rest[at + MARK.len()..];
        let len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
            .unwrap_or(after.len());
        let path = after[..len].trim_end_matches('.');
        if !path.is_empty() {
            found.push(path.to_owned());
        }
        rest = &after[len..];
    }
    found
}

#[test]
fn template_values_paths_exist() {
    let values = values();
    let mut missing = Vec::new();
    let mut used_top_level = BTreeSet::new();
    let mut count = 0;
    for (name, text) in templates() {
        for path in values_paths(&text) {
            count += 1;
            let mut current = &values;
            for key in path.split('.') {
                match current.get(key) {
                    Some(next) => current = next,
                    None => {
                        missing.push(format!("{name}: .Values.{path}"));
                        break;
                    }
                }
            }
            used_top_level.insert(path.split('.').next().unwrap_or_default().to_owned());
        }
    }
    assert!(count > 40, "the scan found only {count} .Values references");
    assert!(
        missing.is_empty(),
        "templates use values that values.yaml does not define:\n{}",
        missing.join("\n")
    );
    let unused: Vec<_> = keys(as_mapping(&values, "values.yaml"))
        .into_iter()
        .filter(|k| !used_top_level.contains(k))
        .collect();
    assert!(unused.is_empty(), "values no template uses: {unused:?}");
}

#[test]
fn values_paths_scanner() {
    assert_eq!(
        values_paths(
            "{{ .Values.a.b }} {{- with $.Values.c_d }}{{ toYaml .Values }}{{ .Values.e. }}"
        ),
        ["a.b", "c_d", "e"]
    );
}

#[test]
fn chart_metadata() {
    let chart = yaml("Chart.yaml");
    assert_eq!(get(&chart, "apiVersion").as_str(), Some("v2"));
    assert_eq!(get(&chart, "name").as_str(), Some("coi-proxy"));
    assert_eq!(get(&chart, "type").as_str(), Some("application"));
    assert_eq!(
        get(&chart, "appVersion").as_str(),
        Some(env!("CARGO_PKG_VERSION")),
        "Chart.yaml appVersion must be the crate version (it is the default image tag)"
    );
    assert_eq!(get(&values(), "mode").as_str(), Some("gateway"));
    assert_eq!(get(&values(), "replicaCount").as_u64(), Some(2));
}

#[test]
fn security_context_defaults() {
    let values = values();
    let container = get(&values, "securityContext");
    assert_eq!(container.get("runAsNonRoot"), Some(&Value::Bool(true)));
    assert_eq!(
        container.get("readOnlyRootFilesystem"),
        Some(&Value::Bool(true))
    );
    assert_eq!(
        container.get("allowPrivilegeEscalation"),
        Some(&Value::Bool(false))
    );
    let drop = get(container, "capabilities.drop")
        .as_sequence()
        .expect("a list");
    assert_eq!(drop, &[Value::from("ALL")]);
    let pod = get(&values, "podSecurityContext");
    assert_eq!(pod.get("runAsNonRoot"), Some(&Value::Bool(true)));
    assert!(pod
        .get("runAsUser")
        .and_then(Value::as_u64)
        .is_some_and(|uid| uid != 0));
    // Binding 143/993 as non-root relies on the sysctl when listeners use ports < 1024.
    let low_port = chart_config()
        .imap
        .listeners
        .iter()
        .any(|l| l.address.port() < 1024);
    let sysctl = get(pod, "sysctls").as_sequence().is_some_and(|s| {
        s.iter().any(|s| {
            s.get("name").and_then(Value::as_str) == Some("net.ipv4.ip_unprivileged_port_start")
                && s.get("value").and_then(Value::as_str) == Some("0")
        })
    });
    assert!(
        !low_port || sysctl,
        "listeners below 1024 need ip_unprivileged_port_start=0"
    );
}

// ---------------------------------------------------------------------------------------
// values.schema.json

fn schema_text() -> String {
    read("values.schema.json")
}

fn schema() -> Value {
    serde_yaml::from_str(&schema_text()).expect("values.schema.json parses")
}

#[test]
fn schema_is_strict_json() {
    if let Err(e) = json::check(&schema_text()) {
        panic!("values.schema.json is not valid JSON: {e}");
    }
}

#[test]
fn json_checker_rejects_what_json_forbids() {
    for good in [
        "{}",
        "[1, -2.5e3, \"a\\u00e9\\n\", true, false, null]",
        " {\"a\": {\"b\": []}} ",
    ] {
        assert_eq!(json::check(good), Ok(()), "{good}");
    }
    for bad in [
        "",
        "{",
        "{a: 1}",
        "{\"a\": 1,}",
        "[1,]",
        "'a'",
        "01",
        "1.",
        "+1",
        "\"\t\"",
        "{} {}",
        "{\"a\": 1, \"a\": 2}",
        "\"\\x\"",
        "tru",
        "# c\n{}",
    ] {
        assert!(json::check(bad).is_err(), "accepted {bad:?}");
    }
}

#[test]
fn schema_top_level_properties_are_the_values_keys() {
    let schema = schema();
    assert_eq!(
        get(&schema, "additionalProperties"),
        &Value::Bool(false),
        "the schema rejects unknown top-level values"
    );
    let mut described = keys(as_mapping(get(&schema, "properties"), "properties"));
    // Helm passes `global` to a chart used as a subchart; it is not a value of ours.
    assert!(
        described.remove("global"),
        "the schema must allow Helm's `global`"
    );
    let values = keys(as_mapping(&values(), "values.yaml"));
    assert_eq!(
        described, values,
        "values.schema.json properties vs values.yaml keys"
    );
}

#[test]
fn schema_config_sections_are_the_proxy_sections() {
    // conf/coi-proxy.yaml documents every section; the schema's `config` must allow
    // exactly those, so a new section is not refused by `helm install`.
    let documented: Value = serde_yaml::from_str(
        &std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/coi-proxy.yaml"))
            .expect("conf/coi-proxy.yaml"),
    )
    .expect("conf/coi-proxy.yaml parses");
    let schema = schema();
    let config = get(&schema, "properties.config");
    assert_eq!(get(config, "additionalProperties"), &Value::Bool(false));
    assert_eq!(
        keys(as_mapping(get(config, "properties"), "config properties")),
        keys(as_mapping(&documented, "conf/coi-proxy.yaml"))
    );
}

#[test]
fn schema_accepts_the_default_values() {
    let schema = schema();
    let mut errors = Vec::new();
    mini_schema::validate(&schema, &schema, &values(), "", &mut errors);
    assert!(
        errors.is_empty(),
        "values.yaml against values.schema.json:\n{}",
        errors.join("\n")
    );
}

#[test]
fn mini_schema_catches_typos() {
    let schema = schema();
    let mut values = values();
    let root = values.as_mapping_mut().expect("mapping");
    root.insert("replicaCont".into(), 3.into());
    root.insert("mode".into(), "sidecar".into());
    let service = root
        .get_mut("service")
        .and_then(Value::as_mapping_mut)
        .expect("service");
    service.insert("type".into(), 5.into());
    let mut errors = Vec::new();
    mini_schema::validate(&schema, &schema, &values, "", &mut errors);
    let text = errors.join("\n");
    assert!(text.contains("/replicaCont"), "{text}");
    assert!(text.contains("/mode"), "{text}");
    assert!(text.contains("/service/type"), "{text}");
}

/// A strict RFC 8259 syntax check, so the schema is JSON for Go's encoding/json and not
/// merely YAML (which serde_yaml would also accept). Duplicate keys are refused too.
mod json {
    pub fn check(text: &str) -> Result<(), String> {
        let mut p = Parser {
            s: text.as_bytes(),
            i: 0,
        };
        p.ws();
        p.value(0)?;
        p.ws();
        if p.i != p.s.len() {
            return Err(p.err("trailing characters"));
        }
        Ok(())
    }

    struct Parser<'a> {
        s: &'a [u8],
        i: usize,
    }

    impl Parser<'_> {
        fn err(&self, what: &str) -> String {
            let line = self.s[..self.i.min(self.s.len())]
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
                + 1;
            format!("line {line} (byte {}): {what}", self.i)
        }

        fn peek(&self) -> Option<u8> {
            self.s.get(self.i).copied()
        }

        fn ws(&mut self) {
            while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
                self.i += 1;
            }
        }

        fn expect(&mut self, b: u8) -> Result<(), String> {
            if self.peek() == Some(b) {
                self.i += 1;
                Ok(())
            } else {
                Err(self.err(&format!("expected '{}'", b as char)))
            }
        }

        fn value(&mut self, depth: usize) -> Result<(), String> {
            if depth > 64 {
                return Err(self.err("nested too deeply"));
            }
            match self.peek() {
                Some(b'{') => self.object(depth),
                Some(b'[') => self.array(depth),
                Some(b'"') => self.string().map(drop),
                Some(b'-' | b'0'..=b'9') => self.number(),
                Some(b't') => self.literal("true"),
                Some(b'f') => self.literal("false"),
                Some(b'n') => self.literal("null"),
                _ => Err(self.err("expected a value")),
            }
        }

        fn literal(&mut self, word: &str) -> Result<(), String> {
            if self.s[self.i..].starts_with(word.as_bytes()) {
                self.i += word.len();
                Ok(())
            } else {
                Err(self.err(&format!("expected {word}")))
            }
        }

        fn object(&mut self, depth: usize) -> Result<(), String> {
            self.expect(b'{')?;
            self.ws();
            if self.peek() == Some(b'}') {
                self.i += 1;
                return Ok(());
            }
            let mut seen = std::collections::HashSet::new();
            loop {
                self.ws();
                let key = self.string()?;
                if !seen.insert(key.clone()) {
                    return Err(self.err(&format!("duplicate key {key:?}")));
                }
                self.ws();
                self.expect(b':')?;
                self.ws();
                self.value(depth + 1)?;
                self.ws();
                match self.peek() {
                    Some(b',') => self.i += 1,
                    Some(b'}') => {
                        self.i += 1;
                        return Ok(());
                    }
                    _ => return Err(self.err("expected ',' or '}'")),
                }
            }
        }

        fn array(&mut self, depth: usize) -> Result<(), String> {
            self.expect(b'[')?;
            self.ws();
            if self.peek() == Some(b']') {
                self.i += 1;
                return Ok(());
            }
            loop {
                self.ws();
                self.value(depth + 1)?;
                self.ws();
                match self.peek() {
                    Some(b',') => self.i += 1,
                    Some(b']') => {
                        self.i += 1;
                        return Ok(());
                    }
                    _ => return Err(self.err("expected ',' or ']'")),
                }
            }
        }

        /// The raw bytes between the quotes (escapes checked, not decoded).
        fn string(&mut self) -> Result<String, String> {
            self.expect(b'"')?;
            let start = self.i;
            loop {
                match self.peek() {
                    None => return Err(self.err("unterminated string")),
                    Some(b'"') => break,
                    Some(b'\\') => {
                        self.i += 1;
                        match self.peek() {
                            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                                self.i += 1
                            }
                            Some(b'u') => {
                                let hex = self.s.get(self.i + 1..self.i + 5);
                                if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                                    return Err(self.err("bad \\u escape"));
                                }
                                self.i += 5;
                            }
                            _ => return Err(self.err("bad escape")),
                        }
                    }
                    Some(b) if b < 0x20 => return Err(self.err("control character in string")),
                    Some(_) => self.i += 1,
                }
            }
            let raw = String::from_utf8_lossy(&self.s[start..self.i]).into_owned();
            self.i += 1;
            Ok(raw)
        }

        fn digits(&mut self) -> usize {
            let start = self.i;
            while matches!(self.peek(), Some(b'0'..=b'9')) {
                self.i += 1;
            }
            self.i - start
        }

        fn number(&mut self) -> Result<(), String> {
            if self.peek() == Some(b'-') {
                self.i += 1;
            }
            match self.peek() {
                Some(b'0') => self.i += 1,
                Some(b'1'..=b'9') => {
                    self.digits();
                }
                _ => return Err(self.err("bad number")),
            }
            if self.peek() == Some(b'.') {
                self.i += 1;
                if self.digits() == 0 {
                    return Err(self.err("bad fraction"));
                }
            }
            if matches!(self.peek(), Some(b'e' | b'E')) {
                self.i += 1;
                if matches!(self.peek(), Some(b'+' | b'-')) {
                    self.i += 1;
                }
                if self.digits() == 0 {
                    return Err(self.err("bad exponent"));
                }
            }
            if matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.err("leading zero"));
            }
            Ok(())
        }
    }
}

/// The part of JSON Schema draft-07 the chart's schema uses: `$ref` to
/// `#/definitions/…`, `type`, `enum`, `properties`, `additionalProperties`, `required`,
/// `items`, `minimum`, `maximum`, `minItems`, `minLength`. (`pattern` is left to Helm:
/// there is no regex engine among the dependencies.) Any other keyword fails the test,
/// so the schema cannot silently outgrow this checker.
mod mini_schema {
    use serde_yaml::Value;

    const KNOWN: &[&str] = &[
        "$schema",
        "$ref",
        "title",
        "description",
        "definitions",
        "type",
        "enum",
        "properties",
        "additionalProperties",
        "required",
        "items",
        "minimum",
        "maximum",
        "minItems",
        "minLength",
        "pattern",
    ];

    fn type_name(value: &Value) -> &'static str {
        match value {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Sequence(_) => "array",
            Value::Mapping(_) => "object",
            Value::Tagged(_) => "tagged",
        }
    }

    pub fn validate(
        root: &Value,
        schema: &Value,
        value: &Value,
        at: &str,
        errors: &mut Vec<String>,
    ) {
        let Some(schema) = schema.as_mapping() else {
            errors.push(format!("{at}: schema is not an object"));
            return;
        };
        for key in schema.keys() {
            let key = key.as_str().unwrap_or_default();
            if !KNOWN.contains(&key) {
                errors.push(format!(
                    "{at}: schema keyword {key:?} is not checked by this test"
                ));
            }
        }
        let location = if at.is_empty() { "/" } else { at };
        if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
            let name = reference
                .strip_prefix("#/definitions/")
                .unwrap_or_else(|| panic!("$ref {reference}"));
            let target = root
                .get("definitions")
                .and_then(|d| d.get(name))
                .unwrap_or_else(|| panic!("{location}: $ref {reference} is not defined"));
            validate(root, target, value, at, errors);
        }
        if let Some(types) = schema.get("type") {
            let allowed: Vec<&str> = match types {
                Value::String(t) => vec![t.as_str()],
                Value::Sequence(ts) => ts.iter().filter_map(Value::as_str).collect(),
                _ => panic!("{location}: bad `type`"),
            };
            let actual = type_name(value);
            let ok =
                allowed.contains(&actual) || (actual == "integer" && allowed.contains(&"number"));
            if !ok {
                errors.push(format!("{location}: {actual}, expected {allowed:?}"));
                return;
            }
        }
        if let Some(choices) = schema.get("enum").and_then(Value::as_sequence) {
            if !choices.contains(value) {
                errors.push(format!("{location}: {value:?} is not one of {choices:?}"));
            }
        }
        if let Some(n) = value.as_f64().filter(|_| value.is_number()) {
            if schema
                .get("minimum")
                .and_then(Value::as_f64)
                .is_some_and(|min| n < min)
            {
                errors.push(format!("{location}: {n} below minimum"));
            }
            if schema
                .get("maximum")
                .and_then(Value::as_f64)
                .is_some_and(|max| n > max)
            {
                errors.push(format!("{location}: {n} above maximum"));
            }
        }
        if let Some(s) = value.as_str() {
            if schema
                .get("minLength")
                .and_then(Value::as_u64)
                .is_some_and(|min| (s.chars().count() as u64) < min)
            {
                errors.push(format!("{location}: shorter than minLength"));
            }
        }
        if let Some(items) = value.as_sequence() {
            if schema
                .get("minItems")
                .and_then(Value::as_u64)
                .is_some_and(|min| (items.len() as u64) < min)
            {
                errors.push(format!("{location}: fewer than minItems"));
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    validate(root, item_schema, item, &format!("{at}/{i}"), errors);
                }
            }
        }
        if let Some(object) = value.as_mapping() {
            let properties = schema.get("properties").and_then(Value::as_mapping);
            if let Some(required) = schema.get("required").and_then(Value::as_sequence) {
                for key in required {
                    if !object.contains_key(key) {
                        errors.push(format!("{location}: missing required {key:?}"));
                    }
                }
            }
            for (key, child) in object {
                let name = key.as_str().unwrap_or_default();
                let path = format!("{at}/{name}");
                match properties.and_then(|p| p.get(key)) {
                    Some(child_schema) => validate(root, child_schema, child, &path, errors),
                    None => match schema.get("additionalProperties") {
                        Some(Value::Bool(false)) => errors
                            .push(format!("{path}: not allowed (additionalProperties: false)")),
                        Some(extra @ Value::Mapping(_)) => {
                            validate(root, extra, child, &path, errors)
                        }
                        _ => {}
                    },
                }
            }
        }
    }
}
