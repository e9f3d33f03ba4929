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
//! - Chart.yaml's appVersion is this crate's version;
//! - rendered with a small Go-template engine (`gotmpl`, below) as `helm template` would:
//!   the configuration file the pods mount loads with the proxy's own loader for the
//!   default and the full (`ci/full-values.yaml`) values, it is a ConfigMap only while it
//!   holds no secret (token secrets and the master password never appear in clear), the
//!   submission and LMTP ports exist only when their parts are on, and the delivery hook
//!   has its own ClusterIP Service whatever `service.type` is; with peer links on, the
//!   rendered `peer` section names the mounted certificate, key and CA, the UDP port is
//!   the listener's and has a UDP Service of its own, and the spool emptyDir is the
//!   writable TMPDIR.

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
// The chart rendered (gotmpl below) as `helm template coi-proxy ./helm/coi-proxy -n mail`.

/// The release name; the chart's resources are then named `coi-proxy` too.
const RELEASE: &str = "coi-proxy";
const NAMESPACE: &str = "mail";

/// Helm's merge of user values onto the chart's: maps key by key, anything else (lists
/// included) replaced whole, and null deletes the key.
fn coalesce(base: &mut Mapping, overrides: &Mapping) {
    for (key, value) in overrides {
        match (base.get_mut(key), value) {
            (_, Value::Null) => {
                base.remove(key);
            }
            (Some(Value::Mapping(existing)), Value::Mapping(value)) => coalesce(existing, value),
            _ => {
                base.insert(key.clone(), value.clone());
            }
        }
    }
}

/// Everything one rendering produced.
struct Rendered {
    /// Every object, with the template it came from.
    objects: Vec<(String, Value)>,
    /// All the rendered text, NOTES.txt included.
    text: String,
}

/// Renders the chart with values.yaml and the override files (YAML text) merged in order,
/// after checking the merged values against values.schema.json as Helm does.
fn render(overrides: &[&str]) -> Result<Rendered, String> {
    render_with(overrides, true)
}

/// `render` with or without the schema check (without: as `--skip-schema-validation`,
/// to reach the templates' own guards).
fn render_with(overrides: &[&str], check_schema: bool) -> Result<Rendered, String> {
    let mut values = values();
    for text in overrides {
        let parsed: Value = serde_yaml::from_str(text).map_err(|e| format!("{text}: {e}"))?;
        if let Value::Mapping(overrides) = parsed {
            coalesce(values.as_mapping_mut().expect("mapping"), &overrides);
        }
    }
    if check_schema {
        let schema = schema();
        let mut errors = Vec::new();
        mini_schema::validate(&schema, &schema, &values, "", &mut errors);
        if !errors.is_empty() {
            return Err(format!("values.schema.json: {}", errors.join("; ")));
        }
    }
    let chart = yaml("Chart.yaml");
    let chart_name = get(&chart, "name").as_str().expect("name").to_owned();
    let files: Vec<(String, String)> = templates()
        .into_iter()
        .map(|(name, text)| (format!("{chart_name}/{name}"), text))
        .collect();
    let engine = gotmpl::Engine::new(&files)?;
    let mapping = |pairs: &[(&str, Value)]| {
        Value::Mapping(
            pairs
                .iter()
                .map(|(k, v)| (Value::from(*k), v.clone()))
                .collect(),
        )
    };
    let mut rendered = Rendered {
        objects: Vec::new(),
        text: String::new(),
    };
    for (name, _) in &files {
        if name
            .rsplit('/')
            .next()
            .is_some_and(|base| base.starts_with('_'))
        {
            continue;
        }
        let data = mapping(&[
            ("Values", values.clone()),
            (
                "Release",
                mapping(&[
                    ("Name", RELEASE.into()),
                    ("Namespace", NAMESPACE.into()),
                    ("Service", "Helm".into()),
                    ("IsInstall", true.into()),
                    ("IsUpgrade", false.into()),
                    ("Revision", 1.into()),
                ]),
            ),
            (
                "Chart",
                mapping(&[
                    ("Name", get(&chart, "name").clone()),
                    ("Version", get(&chart, "version").clone()),
                    ("AppVersion", get(&chart, "appVersion").clone()),
                ]),
            ),
            (
                "Template",
                mapping(&[
                    ("Name", name.as_str().into()),
                    ("BasePath", format!("{chart_name}/templates").into()),
                ]),
            ),
        ]);
        let out = engine.render(name, &data)?;
        rendered.text.push_str(&out);
        if name.ends_with("NOTES.txt") {
            continue;
        }
        assert!(!out.contains("\n---"), "{name}: one object per template");
        let object: Value =
            serde_yaml::from_str(&out).map_err(|e| format!("{name}: {e}\n{out}"))?;
        if !object.is_null() {
            rendered.objects.push((name.clone(), object));
        }
    }
    Ok(rendered)
}

fn rendered(overrides: &[&str]) -> Rendered {
    render(overrides).unwrap_or_else(|e| panic!("the chart does not render: {e}"))
}

/// The value at a dotted path of a rendered object, if any.
fn at<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(value, |v, key| v.get(key))
}

fn text_at<'a>(value: &'a Value, path: &str) -> &'a str {
    at(value, path)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string at {path} in {value:?}"))
}

fn list_at<'a>(value: &'a Value, path: &str) -> &'a [Value] {
    at(value, path)
        .and_then(Value::as_sequence)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

impl Rendered {
    fn all(&self, kind: &str) -> Vec<&Value> {
        self.objects
            .iter()
            .map(|(_, object)| object)
            .filter(|o| o.get("kind").and_then(Value::as_str) == Some(kind))
            .collect()
    }

    fn find(&self, kind: &str, name: &str) -> Option<&Value> {
        self.all(kind)
            .into_iter()
            .find(|o| at(o, "metadata.name").and_then(Value::as_str) == Some(name))
    }

    fn object(&self, kind: &str, name: &str) -> &Value {
        self.find(kind, name)
            .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
    }

    /// (kind, name) of every object, sorted.
    fn inventory(&self) -> Vec<(String, String)> {
        let mut found: Vec<_> = self
            .objects
            .iter()
            .map(|(_, o)| {
                (
                    text_at(o, "kind").to_owned(),
                    text_at(o, "metadata.name").to_owned(),
                )
            })
            .collect();
        found.sort();
        found
    }

    fn pod_spec(&self) -> &Value {
        at(self.object("Deployment", RELEASE), "spec.template.spec").expect("pod spec")
    }

    fn container(&self) -> &Value {
        &list_at(self.pod_spec(), "containers")[0]
    }

    /// The proxy container's ports, (name, containerPort).
    fn container_ports(&self) -> Vec<(String, u64)> {
        list_at(self.container(), "ports")
            .iter()
            .map(|p| {
                (
                    text_at(p, "name").to_owned(),
                    at(p, "containerPort")
                        .and_then(Value::as_u64)
                        .expect("port"),
                )
            })
            .collect()
    }

    /// A Service's ports, (name, port, targetPort as text).
    fn service_ports(&self, name: &str) -> Vec<(String, u64, String)> {
        list_at(self.object("Service", name), "spec.ports")
            .iter()
            .map(|p| {
                let target = match at(p, "targetPort") {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Number(n)) => n.to_string(),
                    other => panic!("targetPort {other:?}"),
                };
                (
                    text_at(p, "name").to_owned(),
                    at(p, "port").and_then(Value::as_u64).expect("port"),
                    target,
                )
            })
            .collect()
    }

    fn volume(&self, name: &str) -> &Value {
        list_at(self.pod_spec(), "volumes")
            .iter()
            .find(|v| v.get("name").and_then(Value::as_str) == Some(name))
            .unwrap_or_else(|| panic!("no volume {name}"))
    }

    fn mount_path(&self, volume: &str) -> &str {
        list_at(self.container(), "volumeMounts")
            .iter()
            .find(|m| m.get("name").and_then(Value::as_str) == Some(volume))
            .map(|m| text_at(m, "mountPath"))
            .unwrap_or_else(|| panic!("no mount of {volume}"))
    }

    /// The proxy container's port `name`: (containerPort, protocol).
    fn container_port(&self, name: &str) -> Option<(u64, String)> {
        list_at(self.container(), "ports")
            .iter()
            .find(|p| p.get("name").and_then(Value::as_str) == Some(name))
            .map(|p| {
                (
                    at(p, "containerPort")
                        .and_then(Value::as_u64)
                        .expect("containerPort"),
                    text_at(p, "protocol").to_owned(),
                )
            })
    }

    /// The proxy container's environment variable `name`, if set.
    fn env(&self, name: &str) -> Option<&str> {
        list_at(self.container(), "env")
            .iter()
            .find(|e| e.get("name").and_then(Value::as_str) == Some(name))
            .map(|e| text_at(e, "value"))
    }

    fn has_volume(&self, name: &str) -> bool {
        list_at(self.pod_spec(), "volumes")
            .iter()
            .any(|v| v.get("name").and_then(Value::as_str) == Some(name))
    }

    fn checksum(&self) -> Option<&str> {
        at(
            self.object("Deployment", RELEASE),
            "spec.template.metadata.annotations",
        )
        .and_then(|a| a.get("checksum/config"))
        .and_then(Value::as_str)
    }

    /// The configuration file the pods mount: the ConfigMap's or the Secret's (decoded).
    fn config_file(&self) -> String {
        let data = |object: &Value| {
            object
                .get("data")
                .and_then(|d| d.get("coi-proxy.yaml"))
                .and_then(Value::as_str)
                .expect("data.coi-proxy.yaml")
                .to_owned()
        };
        match (
            self.find("ConfigMap", RELEASE),
            self.find("Secret", RELEASE),
        ) {
            (Some(map), None) => data(map),
            (None, Some(secret)) => {
                use base64::Engine as _;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(data(secret))
                    .expect("base64");
                String::from_utf8(bytes).expect("UTF-8")
            }
            other => panic!("expected the configuration in one ConfigMap or Secret: {other:?}"),
        }
    }

    /// The mounted configuration, through coi-proxy's own loader.
    fn config(&self) -> coi_proxy::config::Config {
        let text = self.config_file();
        coi_proxy::config::load_str(&text).unwrap_or_else(|errors| {
            panic!("rendered configuration is invalid:\n{errors}\n---\n{text}")
        })
    }
}

/// Every COI part on: helm/coi-proxy/ci/full-values.yaml.
fn full_values() -> String {
    read("ci/full-values.yaml")
}

const TEMPORARY_SECRET: &str = "change-me-temporary-secret-0001";
const PERMANENT_SECRET: &str = "change-me-permanent-secret-0001";
const MASTER_PASSWORD: &str = "change-me-master-password";

/// No ConfigMap carries a secret-bearing key.
fn assert_no_secret_in_configmaps(chart: &Rendered) {
    for map in chart.all("ConfigMap") {
        let text = serde_yaml::to_string(map).expect("serialise");
        for key in ["temporary_secrets", "permanent_secrets", "master_password"] {
            assert!(!text.contains(key), "a ConfigMap holds {key}:\n{text}");
        }
    }
}

#[test]
fn rendered_default_chart_is_the_imap_gateway_it_was() {
    let chart = rendered(&[]);
    let expect = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, n)| (k.to_string(), n.to_string()))
            .collect()
    };
    assert_eq!(
        chart.inventory(),
        expect(&[
            ("ConfigMap", "coi-proxy"),
            ("Deployment", "coi-proxy"),
            ("Pod", "coi-proxy-config-check"),
            ("PodDisruptionBudget", "coi-proxy"),
            ("Service", "coi-proxy"),
            ("Service", "coi-proxy-headless"),
        ])
    );
    // The ConfigMap holds `config`, verbatim, and nothing else.
    let file: Value = serde_yaml::from_str(&chart.config_file()).expect("config file");
    assert_eq!(&file, get(&values(), "config"));
    let config = chart.config();
    assert!(config.submission.is_none() && config.delivery.is_none());
    assert!(config.mailbox_writer.is_none() && config.coi.server.is_none());
    assert_eq!(
        text_at(chart.volume("config"), "configMap.name"),
        RELEASE,
        "the configuration is mounted from the ConfigMap"
    );
    let ports = |pairs: &[(&str, u64)]| -> Vec<(String, u64)> {
        pairs.iter().map(|(n, p)| (n.to_string(), *p)).collect()
    };
    assert_eq!(
        chart.container_ports(),
        ports(&[("imap", 143), ("imaps", 993), ("admin", 9090)])
    );
    let names = |service: &str| -> Vec<String> {
        chart
            .service_ports(service)
            .into_iter()
            .map(|p| p.0)
            .collect()
    };
    assert_eq!(names(RELEASE), ["imap", "imaps"]);
    assert_eq!(names("coi-proxy-headless"), ["imap", "imaps", "admin"]);
    assert!(chart.checksum().is_some());
    assert!(list_at(chart.pod_spec(), "volumes")
        .iter()
        .all(|v| v.get("name").and_then(Value::as_str) != Some("spool")));
    let readiness = at(chart.container(), "readinessProbe.httpGet").expect("readiness");
    assert_eq!(text_at(readiness, "path"), "/readyz");
    assert_eq!(text_at(readiness, "port"), "admin");
}

#[test]
fn full_values_render_a_valid_configuration_in_a_secret() {
    use coi_proxy::config::{ListenerTls, UserName};
    let full = full_values();
    let chart = rendered(&[&full]);
    assert!(
        chart.all("ConfigMap").is_empty(),
        "no ConfigMap once secrets are set"
    );
    let config = chart.config();

    let submission = config.submission.as_ref().expect("submission");
    let listeners: Vec<_> = submission
        .listeners
        .iter()
        .map(|l| (l.name.as_str(), l.address.to_string(), l.tls))
        .collect();
    assert_eq!(
        listeners,
        [
            (
                "submission",
                "0.0.0.0:587".to_owned(),
                ListenerTls::Starttls
            ),
            (
                "submissions",
                "0.0.0.0:465".to_owned(),
                ListenerTls::Implicit
            )
        ]
    );
    assert_eq!(submission.upstream.host, "postfix.mail.svc.cluster.local");
    assert_eq!(submission.upstream.port, 10587);
    assert_eq!(submission.hostname, "mail.example.org");
    assert_eq!(submission.sender_domains, ["example.org"]);
    assert_eq!(submission.limits.max_message_bytes, 50 * 1024 * 1024);

    let delivery = config.delivery.as_ref().expect("delivery");
    assert_eq!(delivery.address.to_string(), "0.0.0.0:10025");
    assert_eq!(
        (delivery.upstream.host.as_str(), delivery.upstream.port),
        ("dovecot.mail.svc.cluster.local", 24)
    );
    assert_eq!(delivery.hostname, "mail.example.org");
    assert_eq!(delivery.user_name, UserName::Address);
    // The root file system is read-only: large messages spool to the emptyDir.
    let spool = delivery.spool_directory.as_ref().expect("spool_directory");
    assert_eq!(spool, Path::new(chart.mount_path("spool")));
    assert_eq!(text_at(chart.volume("spool"), "emptyDir.sizeLimit"), "1Gi");

    let writer = config.mailbox_writer.as_ref().expect("mailbox_writer");
    assert_eq!(writer.master_user, "coi-proxy");
    assert_eq!(writer.master_password, MASTER_PASSWORD);
    assert_eq!(config.coi.server.as_deref(), Some("coi.example.org:4433"));
    assert_eq!(config.coi.tokens.secrets.temporary.len(), 1);
    assert_eq!(config.coi.tokens.secrets.permanent.len(), 1);
    // IMAP is what `config` says.
    assert_eq!(config.imap.listeners.len(), 2);

    assert_eq!(
        text_at(chart.volume("config"), "secret.secretName"),
        RELEASE,
        "the configuration is mounted from the chart's Secret"
    );
    assert_eq!(text_at(chart.object("Secret", RELEASE), "type"), "Opaque");
    // A changed Secret rolls the pods, like a changed ConfigMap.
    let checksum = chart.checksum().expect("checksum/config");
    assert_ne!(Some(checksum), rendered(&[]).checksum());
    let other = rendered(&[
        &full,
        "coi: {tokens: {temporarySecrets: [another-secret-0123456789]}}",
    ]);
    assert_ne!(other.checksum(), Some(checksum));
    // The helm test pod checks the same file with the same mounts.
    let test_pod = chart.object("Pod", "coi-proxy-config-check");
    let test_volumes = list_at(test_pod, "spec.volumes");
    assert_eq!(test_volumes, list_at(chart.pod_spec(), "volumes"));
}

#[test]
fn secrets_are_never_in_a_configmap() {
    let full = full_values();
    let cases: [(&[&str], &[&str]); 5] = [
        (
            &[&full],
            &[TEMPORARY_SECRET, PERMANENT_SECRET, MASTER_PASSWORD],
        ),
        (
            &["coi: {tokens: {temporarySecrets: [change-me-temporary-secret-0001]}}"],
            &[TEMPORARY_SECRET],
        ),
        (
            &["coi: {tokens: {permanentSecrets: [change-me-permanent-secret-0001]}}"],
            &[PERMANENT_SECRET],
        ),
        (
            &["mailboxWriter: {enabled: true, masterPassword: change-me-master-password}"],
            &[MASTER_PASSWORD],
        ),
        (
            &[
                &full,
                "coi: {tokens: {temporarySecrets: [], permanentSecrets: []}}",
                "delivery: {enabled: false}\nsubmission: {enabled: false}",
            ],
            &[MASTER_PASSWORD],
        ),
    ];
    for (overrides, secrets) in cases {
        let chart = rendered(overrides);
        assert_no_secret_in_configmaps(&chart);
        assert!(chart.all("ConfigMap").is_empty(), "{overrides:?}");
        assert!(chart.find("Secret", RELEASE).is_some(), "{overrides:?}");
        // The Secret holds them, base64-encoded: nothing rendered shows them in clear,
        // NOTES.txt included.
        for secret in [TEMPORARY_SECRET, PERMANENT_SECRET, MASTER_PASSWORD] {
            assert!(
                !chart.text.contains(secret),
                "{secret} in clear: {overrides:?}"
            );
        }
        let file = chart.config_file();
        for secret in secrets {
            assert!(file.contains(secret), "{secret} missing from the file");
        }
        chart.config();
    }

    // Without secrets, the new parts keep the ConfigMap (and the validity is no secret).
    let chart = rendered(&[
        "submission: {enabled: true, hostname: mail.example.org}",
        "delivery: {enabled: true, hostname: mail.example.org}",
        "coi: {server: \"coi.example.org:4433\", tokens: {temporaryValidity: 7d}}",
    ]);
    assert_no_secret_in_configmaps(&chart);
    assert!(chart.find("Secret", RELEASE).is_none());
    let config = chart.config();
    assert!(config.submission.is_some() && config.delivery.is_some());
    assert_eq!(
        config.coi.tokens.temporary_validity,
        Duration::from_secs(7 * 24 * 3600)
    );
    assert!(config.coi.tokens.secrets.temporary.is_empty());
}

#[test]
fn submission_ports_only_when_enabled() {
    let names =
        |ports: Vec<(String, u64)>| -> Vec<String> { ports.into_iter().map(|p| p.0).collect() };
    let service_names = |chart: &Rendered, service: &str| -> Vec<String> {
        chart
            .service_ports(service)
            .into_iter()
            .map(|p| p.0)
            .collect()
    };
    let default = rendered(&[]);
    let on = "submission: {enabled: true, hostname: mail.example.org}";
    let chart = rendered(&[on]);
    for (chart, expected) in [(&default, false), (&chart, true)] {
        for name in ["submission", "submissions"] {
            assert_eq!(
                names(chart.container_ports()).contains(&name.to_owned()),
                expected
            );
            assert_eq!(
                service_names(chart, RELEASE).contains(&name.to_owned()),
                expected
            );
            assert_eq!(
                service_names(chart, "coi-proxy-headless").contains(&name.to_owned()),
                expected
            );
        }
        assert_eq!(chart.config().submission.is_some(), expected);
    }
    let own = |pairs: &[(&str, u64, &str)]| -> Vec<(String, u64, String)> {
        pairs
            .iter()
            .map(|(n, p, t)| (n.to_string(), *p, t.to_string()))
            .collect()
    };
    assert_eq!(
        chart.service_ports(RELEASE),
        own(&[
            ("imap", 143, "imap"),
            ("imaps", 993, "imaps"),
            ("submission", 587, "submission"),
            ("submissions", 465, "submissions"),
        ])
    );
    // The container ports are the listeners' ports.
    let config = chart.config();
    let listening: Vec<(String, u64)> = config
        .imap
        .listeners
        .iter()
        .chain(&config.submission.as_ref().expect("submission").listeners)
        .map(|l| (l.name.clone(), u64::from(l.address.port())))
        .collect();
    let mut container = chart.container_ports();
    assert_eq!(container.pop(), Some(("admin".to_owned(), 9090)));
    assert_eq!(container, listening);

    // One listener only, another listening port, a node port on a load balancer.
    let chart = rendered(&[
        on,
        "submission: {starttls: {enabled: false}, implicit: {targetPort: 1465, nodePort: 30465}}",
        "service: {type: LoadBalancer}",
    ]);
    let service = chart.service_ports(RELEASE);
    assert_eq!(
        service[2..],
        own(&[("submissions", 465, "submissions")])[..]
    );
    let port = &list_at(chart.object("Service", RELEASE), "spec.ports")[2];
    assert_eq!(at(port, "nodePort").and_then(Value::as_u64), Some(30465));
    assert!(chart
        .container_ports()
        .contains(&("submissions".to_owned(), 1465)));
    let submission = chart.config().submission.expect("submission");
    assert_eq!(submission.listeners.len(), 1);
    assert_eq!(submission.listeners[0].address.to_string(), "0.0.0.0:1465");
    // No node port on a ClusterIP Service.
    let chart = rendered(&[on, "submission: {implicit: {nodePort: 30465}}"]);
    assert!(list_at(chart.object("Service", RELEASE), "spec.ports")
        .iter()
        .all(|p| p.get("nodePort").is_none()));
}

#[test]
fn delivery_hook_has_its_own_cluster_ip_service() {
    let hook = "coi-proxy-delivery";
    let default = rendered(&[]);
    assert!(default.find("Service", hook).is_none());
    assert!(!default.container_ports().iter().any(|p| p.0 == "lmtp"));

    // Even when the client Service is a load balancer.
    let chart = rendered(&[
        "delivery: {enabled: true, hostname: mail.example.org}",
        "service: {type: LoadBalancer}",
    ]);
    let service = chart.object("Service", hook);
    assert_eq!(text_at(service, "spec.type"), "ClusterIP");
    assert_eq!(
        chart.service_ports(hook),
        [("lmtp".to_owned(), 10025, "lmtp".to_owned())]
    );
    for key in [
        "nodePort",
        "externalTrafficPolicy",
        "loadBalancerSourceRanges",
    ] {
        assert!(
            !serde_yaml::to_string(service).expect("yaml").contains(key),
            "{key} on the hook Service"
        );
    }
    assert_eq!(
        at(service, "spec.selector"),
        at(
            chart.object("Deployment", RELEASE),
            "spec.selector.matchLabels"
        ),
        "the hook Service selects the proxy's pods"
    );
    assert_eq!(
        text_at(chart.object("Service", RELEASE), "spec.type"),
        "LoadBalancer"
    );
    for other in [RELEASE, "coi-proxy-headless"] {
        assert!(
            chart
                .service_ports(other)
                .iter()
                .all(|(name, port, _)| name != "lmtp" && *port != 10025),
            "the LMTP port is on {other}"
        );
    }
    assert!(chart
        .container_ports()
        .contains(&("lmtp".to_owned(), 10025)));
    let delivery = chart.config().delivery.expect("delivery");
    assert_eq!(delivery.address.port(), 10025);
    // No value can change the hook Service's type.
    let template = read("templates/service-delivery.yaml");
    assert!(template.contains("  type: ClusterIP\n"));
    assert!(!template.contains(".Values.service."));
}

/// Peer links on, with only what they require (no delivery hook, no submission).
const PEER_ON: &str = "mailboxWriter: {enabled: true, masterPassword: change-me-master-password}
peer: {enabled: true, tls: {secretName: coi-proxy-peer-tls}, ca: {configMapName: coi-peer-ca}}";

#[test]
fn full_values_render_peer_links_at_the_mounted_files() {
    use coi_proxy::config::PeerRoute;
    let chart = rendered(&[&full_values()]);
    let config = chart.config();
    let peer = &config.peer;
    let link = peer.link.as_ref().expect("peer.address is set");
    assert_eq!(link.address.to_string(), "0.0.0.0:4433");
    // The kubernetes.io/tls Secret's files and the CA ConfigMap's key, where they are
    // mounted.
    let tls = Path::new(chart.mount_path("peer-tls"));
    assert_eq!(tls, Path::new("/etc/coi-proxy/peer-tls"));
    assert_eq!(link.tls.certificate, tls.join("tls.crt"));
    assert_eq!(link.tls.private_key, tls.join("tls.key"));
    assert_eq!(
        text_at(chart.volume("peer-tls"), "secret.secretName"),
        "coi-proxy-peer-tls"
    );
    let ca = chart.volume("peer-ca");
    assert_eq!(text_at(ca, "configMap.name"), "coi-peer-ca");
    let items = list_at(ca, "configMap.items");
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(text_at(&items[0], "key"), "ca.crt");
    assert_eq!(
        link.ca_file,
        Path::new(chart.mount_path("peer-ca")).join(text_at(&items[0], "path"))
    );
    assert_eq!(link.ca_file, Path::new("/etc/coi-proxy/peer-ca/ca.crt"));
    // The other values, into the keys beside them.
    assert_eq!(link.delivery_timeout, Duration::from_secs(3));
    assert_eq!(link.max_message_bytes, 10 * 1024 * 1024);
    assert_eq!(
        peer.routes,
        [PeerRoute {
            domain: "partner.example".to_owned(),
            host: "coi.partner.example".to_owned(),
            port: 4433
        }]
    );
    assert_eq!(
        peer.dns.nameservers.as_deref(),
        Some(&["10.96.0.10:53".parse().expect("address")][..])
    );
    assert_eq!(peer.dns.max_ttl, Duration::from_secs(3600));
    assert_eq!(peer.dns.negative_ttl, Duration::from_secs(60));
    assert_eq!(peer.dns.error_ttl, Duration::from_secs(5));
    assert_eq!(peer.dns.timeout, Duration::from_secs(3));

    // The UDP container port is the endpoint's port; the peer Service forwards its port to
    // it, over UDP.
    let port = u64::from(link.address.port());
    assert_eq!(
        chart.container_port("coi-link"),
        Some((port, "UDP".to_owned()))
    );
    let service = chart.object("Service", "coi-proxy-peer");
    assert_eq!(text_at(service, "spec.type"), "LoadBalancer");
    assert_eq!(text_at(service, "spec.externalTrafficPolicy"), "Local");
    assert_eq!(
        list_at(service, "spec.loadBalancerSourceRanges"),
        [Value::from("0.0.0.0/0")]
    );
    assert_eq!(
        at(service, "metadata.annotations")
            .and_then(|a| a.get("service.beta.kubernetes.io/aws-load-balancer-type"))
            .and_then(Value::as_str),
        Some("nlb")
    );
    let ports = list_at(service, "spec.ports");
    assert_eq!(
        ports.len(),
        1,
        "the peer Service carries the peer link only"
    );
    assert_eq!(text_at(&ports[0], "protocol"), "UDP");
    assert_eq!(at(&ports[0], "port").and_then(Value::as_u64), Some(4433));
    assert_eq!(
        at(&ports[0], "nodePort").and_then(Value::as_u64),
        Some(30443)
    );
    let target = text_at(&ports[0], "targetPort");
    assert_eq!(
        chart.container_port(target).map(|p| p.0),
        Some(port),
        "the peer Service's targetPort {target:?} is not the config's port {port}"
    );
    assert_eq!(
        at(service, "spec.selector"),
        at(
            chart.object("Deployment", RELEASE),
            "spec.selector.matchLabels"
        ),
        "the peer Service selects the proxy's pods"
    );
    // The X-COI-Server hint is the peer Service's port.
    let server = config.coi.server.as_deref().expect("coi.server");
    assert!(server.ends_with(":4433"), "{server}");

    // Link messages over 1 MiB spool to the delivery hook's directory, the writable
    // emptyDir; TMPDIR points there too.
    let spool = chart.mount_path("spool");
    assert_eq!(
        config
            .delivery
            .as_ref()
            .and_then(|d| d.spool_directory.as_deref()),
        Some(Path::new(spool))
    );
    assert_eq!(chart.env("TMPDIR"), Some(spool));
    // The helm test pod checks the same files with the same mounts.
    let test_pod = chart.object("Pod", "coi-proxy-config-check");
    assert_eq!(
        list_at(test_pod, "spec.volumes"),
        list_at(chart.pod_spec(), "volumes")
    );
    assert_eq!(
        list_at(&list_at(test_pod, "spec.containers")[0], "volumeMounts"),
        list_at(chart.container(), "volumeMounts")
    );
}

#[test]
fn peer_port_service_and_mounts_only_when_enabled() {
    let peer_service = "coi-proxy-peer";
    let default = rendered(&[]);
    assert!(default.find("Service", peer_service).is_none());
    assert_eq!(default.container_port("coi-link"), None);
    assert_eq!(default.env("TMPDIR"), None);
    for volume in ["peer-tls", "peer-ca", "spool"] {
        assert!(!default.has_volume(volume), "{volume} without peer links");
    }
    assert!(default.config().peer.link.is_none());
    assert!(
        !default.text.contains("_coi._udp"),
        "NOTES without peer links"
    );

    // On without the delivery hook: the link's spool is TMPDIR, which must be the
    // writable emptyDir (the root file system is read-only).
    let chart = rendered(&[PEER_ON]);
    let config = chart.config();
    assert!(config.delivery.is_none());
    let link = config.peer.link.expect("peer.address");
    assert_eq!(link.address.to_string(), "0.0.0.0:4433");
    let spool = chart.mount_path("spool");
    assert_eq!(chart.env("TMPDIR"), Some(spool));
    assert!(chart.volume("spool").get("emptyDir").is_some());
    assert_eq!(
        get(&values(), "securityContext.readOnlyRootFilesystem"),
        &Value::Bool(true)
    );
    assert_eq!(
        chart.container_port("coi-link"),
        Some((4433, "UDP".to_owned()))
    );
    assert_eq!(
        chart.service_ports(peer_service),
        [("coi-link".to_owned(), 4433, "coi-link".to_owned())]
    );
    let service = chart.object("Service", peer_service);
    assert_eq!(
        text_at(service, "spec.type"),
        "LoadBalancer",
        "other domains reach the peer Service from the internet"
    );
    assert_eq!(
        text_at(service, "spec.externalTrafficPolicy"),
        "Local",
        "each QUIC connection must stay on the replica that holds it"
    );
    // Never on the TCP Services.
    for other in [RELEASE, "coi-proxy-headless"] {
        assert!(
            chart
                .service_ports(other)
                .iter()
                .all(|(name, _, _)| name != "coi-link"),
            "the peer link is on {other}"
        );
    }
    for protocol in list_at(chart.object("Service", RELEASE), "spec.ports")
        .iter()
        .map(|p| text_at(p, "protocol"))
    {
        assert_eq!(protocol, "TCP", "UDP on the client Service");
    }
    // NOTES.txt tells what to publish and where to find the address.
    for needle in [
        "_coi._udp.<mail domain>. 3600 IN SRV 10 0 4433 ",
        "kubectl -n mail get service coi-proxy-peer -o wide",
        "set coi.server to the same",
    ] {
        assert!(chart.text.contains(needle), "NOTES.txt lacks {needle:?}");
    }

    // Another port and IPv6: the config, the container port and the Service's target
    // follow; the Service's own port (the SRV record's) stays. ClusterIP: no node port,
    // no traffic policy.
    let chart = rendered(&[
        PEER_ON,
        "peer: {bindAddress: \"[::]\", port: 14433, service: {type: ClusterIP, nodePort: 30443}}",
    ]);
    let link = chart.config().peer.link.expect("peer.address");
    assert_eq!(link.address.to_string(), "[::]:14433");
    assert_eq!(
        chart.container_port("coi-link"),
        Some((14433, "UDP".to_owned()))
    );
    assert_eq!(
        chart.service_ports(peer_service),
        [("coi-link".to_owned(), 4433, "coi-link".to_owned())]
    );
    let service = serde_yaml::to_string(chart.object("Service", peer_service)).expect("yaml");
    for key in [
        "nodePort",
        "externalTrafficPolicy",
        "loadBalancerSourceRanges",
    ] {
        assert!(!service.contains(key), "{key} on a ClusterIP peer Service");
    }

    // With the whole configuration in an existing Secret, the objects still follow the
    // values (mailboxWriter then shapes nothing, so it is not required).
    let chart = rendered(&[
        "existingSecret: my-coi-config",
        "peer: {enabled: true, tls: {secretName: coi-proxy-peer-tls}, ca: {configMapName: coi-peer-ca}}",
    ]);
    assert!(chart.find("Service", peer_service).is_some());
    assert_eq!(
        chart.container_port("coi-link"),
        Some((4433, "UDP".to_owned()))
    );
    assert!(chart.has_volume("peer-tls") && chart.has_volume("peer-ca"));
    assert_eq!(chart.env("TMPDIR"), Some(chart.mount_path("spool")));
}

#[test]
fn chart_refuses_peer_links_without_what_they_need() {
    let writer = "mailboxWriter: {enabled: true, masterPassword: change-me-master-password}";
    for (overrides, message) in [
        (
            &["peer: {enabled: true, tls: {secretName: coi-proxy-peer-tls}, ca: {configMapName: coi-peer-ca}}"][..],
            "peer.enabled needs mailboxWriter.enabled",
        ),
        (
            &[writer, "peer: {enabled: true, ca: {configMapName: coi-peer-ca}}"][..],
            "peer.enabled needs peer.tls.secretName",
        ),
        (
            &[writer, "peer: {enabled: true, tls: {secretName: coi-proxy-peer-tls}}"][..],
            "peer.enabled needs peer.ca.configMapName",
        ),
        (
            &[PEER_ON, "peer: {ca: {mountPath: /etc/coi-proxy/tls}}"][..],
            "peer.ca.mountPath and tls.mountPath are both /etc/coi-proxy/tls",
        ),
        (
            &[PEER_ON, "service: {ports: [{name: imap, port: 143, targetPort: 143}, {name: imaps, port: 993, targetPort: 993}, {name: coi-link, port: 4433, targetPort: 4434, protocol: UDP}]}"][..],
            "port name \"coi-link\" is used twice",
        ),
        (
            &[PEER_ON, "service: {ports: [{name: imap, port: 143, targetPort: 143}, {name: imaps, port: 993, targetPort: 993}, {name: quic, port: 4433, targetPort: 4433, protocol: UDP}]}"][..],
            "container port 4433/UDP of \"coi-link\" (peer.port) is also the port of \"quic\"",
        ),
        (&[PEER_ON, "peer: {dns: {nameserver: [\"10.96.0.10:53\"]}}"][..], "/peer/dns/nameserver: not allowed"),
        (&[PEER_ON, "peer: {routes: [{domain: partner.example}]}"][..], "/peer/routes/0: missing required"),
        (&[PEER_ON, "peer: {service: {protocol: UDP}}"][..], "/peer/service/protocol: not allowed"),
    ] {
        let error = render(overrides)
            .err()
            .unwrap_or_else(|| panic!("accepted {overrides:?}"));
        assert!(error.contains(message), "{overrides:?}: {error}");
    }
    // The same port number over TCP is another port: an IMAP listener on 4433/TCP and the
    // link on 4433/UDP coexist.
    let chart = rendered(&[
        PEER_ON,
        "service: {ports: [{name: imap, port: 143, targetPort: 4433}, {name: imaps, port: 993, targetPort: 993}]}",
        "config: {imap: {listeners: [{name: imap, address: \"0.0.0.0:4433\", tls: starttls}, {name: imaps, address: \"0.0.0.0:993\", tls: implicit}]}}",
    ]);
    assert_eq!(
        chart.container_port("coi-link"),
        Some((4433, "UDP".to_owned()))
    );
    assert_eq!(chart.container_port("imap"), Some((4433, "TCP".to_owned())));
}

#[test]
fn existing_secret_holds_the_whole_configuration() {
    let chart = rendered(&[
        "existingSecret: my-coi-config",
        "submission: {enabled: true}\ndelivery: {enabled: true}\nmailboxWriter: {enabled: true}",
    ]);
    assert!(chart.all("ConfigMap").is_empty() && chart.all("Secret").is_empty());
    assert_eq!(
        text_at(chart.volume("config"), "secret.secretName"),
        "my-coi-config"
    );
    let test_pod = chart.object("Pod", "coi-proxy-config-check");
    assert_eq!(
        list_at(test_pod, "spec.volumes"),
        list_at(chart.pod_spec(), "volumes")
    );
    assert_eq!(
        chart.checksum(),
        None,
        "the chart cannot hash a Secret it does not render"
    );
    // The ports still follow the values.
    let names: Vec<String> = chart.container_ports().into_iter().map(|p| p.0).collect();
    assert_eq!(
        names,
        [
            "imap",
            "imaps",
            "submission",
            "submissions",
            "lmtp",
            "admin"
        ]
    );
    assert!(chart.find("Service", "coi-proxy-delivery").is_some());
    assert!(
        chart.text.contains("rollout restart"),
        "NOTES.txt says to roll the pods"
    );

    let error = render(&[&full_values(), "existingSecret: my-coi-config"])
        .err()
        .expect("secrets in values next to existingSecret are refused");
    assert!(error.contains("existingSecret is set"), "{error}");
}

#[test]
fn chart_refuses_values_that_would_misplace_secrets_or_ports() {
    let full = full_values();
    // Sections the chart renders itself: the schema refuses them, and so do the templates
    // when the schema is skipped.
    for (overrides, message) in [
        (
            "config: {submission: {hostname: x}}",
            "config.submission: set it through the chart's `submission`",
        ),
        (
            "config: {delivery: {hostname: x}}",
            "config.delivery: set it through the chart's `delivery`",
        ),
        (
            "config: {mailbox_writer: {master_user: x}}",
            "config.mailbox_writer: set it through the chart's `mailboxWriter`",
        ),
        (
            "config: {peer: {address: \"0.0.0.0:4433\"}}",
            "config.peer: set it through the chart's `peer`",
        ),
        (
            "config: {coi: {tokens: {temporary_secrets: [a-secret-of-20-bytes]}}}",
            "config.coi.tokens: set it through the chart's `coi.tokens`",
        ),
        (
            "config: {coi: {server: \"coi.example.org:4433\"}}",
            "config.coi.server",
        ),
    ] {
        let error = render(&[overrides])
            .err()
            .unwrap_or_else(|| panic!("accepted {overrides}"));
        assert!(
            error.contains("values.schema.json: /config/"),
            "{overrides}: {error}"
        );
        let error = render_with(&[overrides], false)
            .err()
            .unwrap_or_else(|| panic!("accepted {overrides} without the schema"));
        assert!(error.contains(message), "{overrides}: {error}");
    }
    // config.coi.mailbox_root stays in `config`, next to the rendered keys.
    let chart = rendered(&[&full, "config: {coi: {mailbox_root: Chats}}"]);
    let config = chart.config();
    assert_eq!(config.coi.mailbox_root, "Chats");
    assert_eq!(config.coi.server.as_deref(), Some("coi.example.org:4433"));

    for (overrides, message) in [
        (&["mailboxWriter: {enabled: true}"][..], "needs mailboxWriter.masterPassword"),
        (&["submission: {enabled: true}"][..], "needs submission.hostname"),
        (&["delivery: {enabled: true}"][..], "needs delivery.hostname"),
        (
            &[&full, "submission: {starttls: {enabled: false}, implicit: {enabled: false}}"][..],
            "needs submission.starttls.enabled or submission.implicit.enabled",
        ),
        (
            &[&full, "submission: {starttls: {targetPort: 993}}"][..],
            "container port 993 of \"submission\" is also the port of \"imaps\"",
        ),
        (&[&full, "delivery: {port: 9090}"][..], "container port 9090 of \"lmtp\" is also the port of \"admin\""),
        (
            &[&full, "service: {ports: [{name: imap, port: 143, targetPort: 143}, {name: submission, port: 587, targetPort: 1587}]}"][..],
            "port name \"submission\" is used twice",
        ),
        (&["coi: {tokens: {temporarySecrets: [short]}}"][..], "shorter than minLength"),
    ] {
        let error = render(overrides).err().unwrap_or_else(|| panic!("accepted {overrides:?}"));
        assert!(error.contains(message), "{overrides:?}: {error}");
    }
}

#[test]
fn mini_renderer_follows_go_templates() {
    let data: Value = serde_yaml::from_str("{a: {b: null}}").expect("data");
    let render = |source: &str| {
        gotmpl::Engine::new(&[("t".to_owned(), source.to_owned())])
            .and_then(|engine| engine.render("t", &data))
    };
    // Trim markers, define/include, range over a map in key order, variables assigned
    // and maps set inside a block, else if.
    let source = r#"{{- define "item" -}} <{{ . }}> {{- end -}}
{{- $m := dict "b" 2 "a" 1 }}
{{- range $k, $v := $m }}{{ $k }}={{ $v }};{{ end }}
{{- $l := list "w" }}
{{- if true }}{{ $l = append $l "x" }}{{ $_ := set $m "c" 3 }}{{ end }}
{{- range $l }}{{ include "item" . }}{{ end }}
{{- if eq (int "1") 0 }}no{{ else if hasKey $m "c" }} c={{ get $m "c" }}{{ else }}no{{ end }}
"#;
    assert_eq!(render(source).as_deref(), Ok("a=1;b=2;<w><x> c=3\n"));
    assert_eq!(
        render("a  {{- /* c */}}  b {{ printf \"%s:%d\" \"h\" 5 }}").as_deref(),
        Ok("a  b h:5")
    );
    assert_eq!(
        render("{{ \"x\\ny\" | nindent 2 }}|{{ toYaml (list 1) }}|{{ quote \"q\" }}").as_deref(),
        Ok("\n  x\n  y|- 1|\"q\"")
    );
    assert_eq!(
        render("{{ and 1 0 }}{{ or 0 \"\" 7 }}{{ default \"d\" .a.x }}{{ print \"a\" \"b\" }}")
            .as_deref(),
        Ok("07dab")
    );
    // What Go refuses, or what the engine does not know, is an error, never a guess.
    let error = |source: &str| render(source).expect_err(source);
    assert_eq!(error("{{ .a.b.c }}"), "t: nil pointer evaluating .a.b.c");
    assert!(error("{{ .a }}").contains("printing"));
    assert!(error("{{ eq .a.b \"x\" }}").contains("incompatible types"));
    assert!(error("{{ fail \"stop\" }}").contains("fail: stop"));
    assert!(error("{{ lookup \"v1\" \"Secret\" \"\" \"\" }}").contains("unknown function"));
    assert!(error("{{ template \"x\" }}").contains("not supported"));
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

/// Configuration sections the chart renders from its own values (`submission`,
/// `delivery`, `mailboxWriter`, `peer`) and so refuses in `config`.
const RENDERED_SECTIONS: [&str; 4] = ["submission", "delivery", "mailbox_writer", "peer"];
/// Keys of the `coi` section rendered from the `coi` values (`coi.tokens` holds secrets).
const RENDERED_COI_KEYS: [&str; 2] = ["server", "tokens"];

#[test]
fn schema_config_sections_are_the_proxy_sections() {
    // conf/coi-proxy.yaml documents every section; the schema's `config` must allow
    // exactly those the chart does not render itself, so a new section is not refused by
    // `helm install`, and the rendered ones (secrets among them) cannot be given twice.
    let documented: Value = serde_yaml::from_str(
        &std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/coi-proxy.yaml"))
            .expect("conf/coi-proxy.yaml"),
    )
    .expect("conf/coi-proxy.yaml parses");
    let schema = schema();
    let config = get(&schema, "properties.config");
    assert_eq!(get(config, "additionalProperties"), &Value::Bool(false));
    let allowed = keys(as_mapping(get(config, "properties"), "config properties"));
    let rendered: BTreeSet<String> = RENDERED_SECTIONS.iter().map(|s| s.to_string()).collect();
    assert!(allowed.is_disjoint(&rendered), "{allowed:?}");
    assert_eq!(
        allowed.union(&rendered).cloned().collect::<BTreeSet<_>>(),
        keys(as_mapping(&documented, "conf/coi-proxy.yaml"))
    );
    let coi = get(config, "properties.coi");
    assert_eq!(get(coi, "additionalProperties"), &Value::Bool(false));
    let allowed = keys(as_mapping(get(coi, "properties"), "config.coi properties"));
    let rendered: BTreeSet<String> = RENDERED_COI_KEYS.iter().map(|s| s.to_string()).collect();
    assert!(allowed.is_disjoint(&rendered), "{allowed:?}");
    assert_eq!(
        allowed.union(&rendered).cloned().collect::<BTreeSet<_>>(),
        keys(as_mapping(
            get(&documented, "coi"),
            "conf/coi-proxy.yaml coi"
        ))
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

/// A small Go text/template engine with the Sprig and Helm functions this chart uses, so
/// that the tests render the chart as `helm template` does, without a helm binary. What
/// it does not know (an action, a function, a printf verb, printing a map) is an error,
/// never a guess, so the templates cannot silently outgrow it. Differences from Helm that
/// the chart does not rely on: maps are values, not references (`set` changes the
/// variable it names, so a map is completed before it is stored in another one);
/// `sha256sum` is a stand-in hash (the tests only compare hashes with each other);
/// `toYaml` writes serde_yaml's style (in Go's key order), and numbers compare by value
/// whatever their type (comparing other different types is an error, as in Go).
mod gotmpl {
    use std::collections::BTreeMap;

    use base64::Engine as _;
    use serde_yaml::{Mapping, Value};

    #[derive(Debug)]
    enum Node {
        Text(String),
        Output(Pipe),
        /// `if`/`else if` branches, then the `else` body.
        If(Vec<(Pipe, Vec<Node>)>, Vec<Node>),
        Range(Pipe, Vec<Node>, Vec<Node>),
        With(Pipe, Vec<Node>, Vec<Node>),
    }

    #[derive(Debug, Default)]
    struct Pipe {
        /// `$a :=`, `$a =`, or in `range` `$k, $v :=`.
        vars: Vec<String>,
        declare: bool,
        commands: Vec<Vec<Term>>,
    }

    #[derive(Debug)]
    enum Term {
        /// `.`, `.a.b`
        Dot(Vec<String>),
        /// `$`, `$x`, `$x.a`
        Var(String, Vec<String>),
        Literal(Value),
        Function(String),
        Nested(Pipe),
    }

    #[derive(Debug, Clone, PartialEq)]
    enum Token {
        Dot(Vec<String>),
        Var(String, Vec<String>),
        Literal(Value),
        Ident(String),
        Open,
        Close,
        Bar,
        Comma,
        Declare,
        Assign,
    }

    enum Piece {
        Text(String),
        Action(String),
    }

    /// Text and actions, with the trim markers (`{{- `, ` -}}`) applied and comments
    /// dropped.
    fn split(source: &str) -> Result<Vec<Piece>, String> {
        let mut pieces = Vec::new();
        let mut rest = source;
        let mut trim_next = false;
        while let Some(open) = rest.find("{{") {
            let mut text = &rest[..open];
            if trim_next {
                text = text.trim_start();
            }
            let after = &rest[open + 2..];
            let trim_left =
                after.starts_with('-') && after[1..].starts_with(|c: char| c.is_ascii_whitespace());
            let body = if trim_left { &after[1..] } else { after };
            let close = find_close(body).ok_or("an action is not closed")?;
            let mut inner = &body[..close];
            let trim_right = inner.ends_with('-')
                && inner[..inner.len() - 1].ends_with(|c: char| c.is_ascii_whitespace());
            if trim_right {
                inner = &inner[..inner.len() - 1];
            }
            if trim_left {
                text = text.trim_end();
            }
            if !text.is_empty() {
                pieces.push(Piece::Text(text.to_owned()));
            }
            let inner = inner.trim();
            if !(inner.starts_with("/*") && inner.ends_with("*/")) {
                pieces.push(Piece::Action(inner.to_owned()));
            }
            trim_next = trim_right;
            rest = &body[close + 2..];
        }
        let text = if trim_next { rest.trim_start() } else { rest };
        if !text.is_empty() {
            pieces.push(Piece::Text(text.to_owned()));
        }
        Ok(pieces)
    }

    /// Where the `}}` closing an action starts, outside quotes and comments.
    fn find_close(body: &str) -> Option<usize> {
        if body.trim_start().starts_with("/*") {
            let end = body.find("*/")?;
            return body[end..].find("}}").map(|i| end + i);
        }
        let bytes = body.as_bytes();
        let mut quote = None;
        let mut i = 0;
        while i < bytes.len() {
            match (quote, bytes[i]) {
                (Some(b'"'), b'\\') => i += 1,
                (Some(q), b) if b == q => quote = None,
                (Some(_), _) => {}
                (None, b @ (b'"' | b'`')) => quote = Some(b),
                (None, b'}') if bytes.get(i + 1) == Some(&b'}') => return Some(i),
                (None, _) => {}
            }
            i += 1;
        }
        None
    }

    fn tokenize(action: &str) -> Result<Vec<Token>, String> {
        let chars: Vec<char> = action.chars().collect();
        let ident_end = |from: usize| {
            (from..chars.len())
                .find(|&j| !(chars[j].is_alphanumeric() || chars[j] == '_'))
                .unwrap_or(chars.len())
        };
        // `.a.b` from a '.', as the field names and the position after them.
        let fields = |mut i: usize| -> Result<(Vec<String>, usize), String> {
            let mut path = Vec::new();
            while chars.get(i) == Some(&'.') {
                let end = ident_end(i + 1);
                if end == i + 1 {
                    if path.is_empty() {
                        return Ok((path, i + 1));
                    }
                    return Err("a field name is missing after '.'".to_owned());
                }
                path.push(chars[i + 1..end].iter().collect());
                i = end;
            }
            Ok((path, i))
        };
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            match c {
                c if c.is_whitespace() => i += 1,
                '(' | ')' | '|' | ',' | '=' => {
                    tokens.push(match c {
                        '(' => Token::Open,
                        ')' => Token::Close,
                        '|' => Token::Bar,
                        ',' => Token::Comma,
                        _ => Token::Assign,
                    });
                    i += 1;
                }
                ':' if chars.get(i + 1) == Some(&'=') => {
                    tokens.push(Token::Declare);
                    i += 2;
                }
                '"' => {
                    let mut text = String::new();
                    i += 1;
                    loop {
                        match chars.get(i) {
                            None => return Err("unterminated string".to_owned()),
                            Some('"') => break,
                            Some('\\') => {
                                text.push(match chars.get(i + 1) {
                                    Some('n') => '\n',
                                    Some('t') => '\t',
                                    Some('r') => '\r',
                                    Some(&e @ ('\\' | '"' | '\'')) => e,
                                    other => return Err(format!("escape {other:?}")),
                                });
                                i += 2;
                            }
                            Some(&ch) => {
                                text.push(ch);
                                i += 1;
                            }
                        }
                    }
                    tokens.push(Token::Literal(Value::String(text)));
                    i += 1;
                }
                '`' => {
                    let end = (i + 1..chars.len())
                        .find(|&j| chars[j] == '`')
                        .ok_or("unterminated raw string")?;
                    tokens.push(Token::Literal(Value::String(
                        chars[i + 1..end].iter().collect(),
                    )));
                    i = end + 1;
                }
                '.' => {
                    let (path, next) = fields(i)?;
                    tokens.push(Token::Dot(path));
                    i = next;
                }
                '$' => {
                    let end = ident_end(i + 1);
                    let name = format!("${}", chars[i + 1..end].iter().collect::<String>());
                    let (path, next) = fields(end)?;
                    tokens.push(Token::Var(name, path));
                    i = next;
                }
                '-' | '0'..='9' => {
                    let end = (i + 1..chars.len())
                        .find(|&j| !(chars[j].is_ascii_digit() || chars[j] == '.'))
                        .unwrap_or(chars.len());
                    let text: String = chars[i..end].iter().collect();
                    let number = match text.parse::<i64>() {
                        Ok(n) => Value::from(n),
                        Err(_) => Value::from(
                            text.parse::<f64>()
                                .map_err(|_| format!("bad number {text:?}"))?,
                        ),
                    };
                    tokens.push(Token::Literal(number));
                    i = end;
                }
                c if c.is_alphabetic() || c == '_' => {
                    let end = ident_end(i);
                    let word: String = chars[i..end].iter().collect();
                    tokens.push(match word.as_str() {
                        "true" => Token::Literal(Value::Bool(true)),
                        "false" => Token::Literal(Value::Bool(false)),
                        "nil" => Token::Literal(Value::Null),
                        _ => Token::Ident(word),
                    });
                    i = end;
                }
                other => return Err(format!("unexpected {other:?}")),
            }
        }
        Ok(tokens)
    }

    fn pipe(tokens: &[Token]) -> Result<Pipe, String> {
        let mut result = Pipe::default();
        let mut rest = tokens;
        if let Some(at) = tokens
            .iter()
            .position(|t| matches!(t, Token::Declare | Token::Assign))
        {
            for (i, token) in tokens[..at].iter().enumerate() {
                match token {
                    Token::Var(name, path) if i % 2 == 0 && path.is_empty() => {
                        result.vars.push(name.clone())
                    }
                    Token::Comma if i % 2 == 1 => {}
                    _ => return Err("bad variable declaration".to_owned()),
                }
            }
            result.declare = tokens[at] == Token::Declare;
            rest = &tokens[at + 1..];
        }
        let mut at = 0;
        result.commands = commands(rest, &mut at, false)?;
        Ok(result)
    }

    fn commands(tokens: &[Token], at: &mut usize, nested: bool) -> Result<Vec<Vec<Term>>, String> {
        let mut commands = Vec::new();
        let mut current = Vec::new();
        while let Some(token) = tokens.get(*at) {
            *at += 1;
            match token {
                Token::Close if nested => {
                    if current.is_empty() {
                        return Err("empty command".to_owned());
                    }
                    commands.push(current);
                    return Ok(commands);
                }
                Token::Bar => {
                    if current.is_empty() {
                        return Err("empty command".to_owned());
                    }
                    commands.push(std::mem::take(&mut current));
                }
                Token::Open => {
                    let inner = commands_of(tokens, at)?;
                    current.push(Term::Nested(inner));
                }
                Token::Dot(path) => current.push(Term::Dot(path.clone())),
                Token::Var(name, path) => current.push(Term::Var(name.clone(), path.clone())),
                Token::Literal(value) => current.push(Term::Literal(value.clone())),
                Token::Ident(name) => current.push(Term::Function(name.clone())),
                other => return Err(format!("unexpected {other:?}")),
            }
        }
        if nested {
            return Err("unclosed '('".to_owned());
        }
        if current.is_empty() {
            return Err("empty command".to_owned());
        }
        commands.push(current);
        Ok(commands)
    }

    fn commands_of(tokens: &[Token], at: &mut usize) -> Result<Pipe, String> {
        Ok(Pipe {
            commands: commands(tokens, at, true)?,
            ..Pipe::default()
        })
    }

    enum Stop {
        End,
        Else,
        ElseIf(Pipe),
        Eof,
    }

    struct Parser<'a> {
        pieces: &'a [Piece],
        at: usize,
        defines: &'a mut BTreeMap<String, Vec<Node>>,
    }

    impl Parser<'_> {
        fn list(&mut self) -> Result<(Vec<Node>, Stop), String> {
            let mut nodes = Vec::new();
            while let Some(piece) = self.pieces.get(self.at) {
                self.at += 1;
                let action = match piece {
                    Piece::Text(text) => {
                        nodes.push(Node::Text(text.clone()));
                        continue;
                    }
                    Piece::Action(action) => action,
                };
                let tokens = tokenize(action).map_err(|e| format!("{{{{{action}}}}}: {e}"))?;
                let keyword = match tokens.first() {
                    Some(Token::Ident(word)) => word.as_str(),
                    _ => "",
                };
                let args = &tokens[1.min(tokens.len())..];
                match keyword {
                    "end" => return Ok((nodes, Stop::End)),
                    "else" => {
                        return match args.first() {
                            None => Ok((nodes, Stop::Else)),
                            Some(Token::Ident(word)) if word == "if" => {
                                Ok((nodes, Stop::ElseIf(pipe(&args[1..])?)))
                            }
                            Some(_) => Err(format!("{{{{{action}}}}} is not supported")),
                        }
                    }
                    "if" => nodes.push(self.if_chain(pipe(args)?)?),
                    "range" | "with" => {
                        let head = pipe(args)?;
                        let (body, otherwise) = self.body_and_else()?;
                        nodes.push(if keyword == "range" {
                            Node::Range(head, body, otherwise)
                        } else {
                            Node::With(head, body, otherwise)
                        });
                    }
                    "define" => {
                        let Some(Token::Literal(Value::String(name))) = args.first() else {
                            return Err(format!("{{{{{action}}}}}: a name is needed"));
                        };
                        let (body, stop) = self.list()?;
                        if !matches!(stop, Stop::End) {
                            return Err(format!("define {name:?} is not closed by end"));
                        }
                        if self.defines.insert(name.clone(), body).is_some() {
                            return Err(format!("template {name:?} is defined twice"));
                        }
                    }
                    "template" | "block" | "break" | "continue" => {
                        return Err(format!("{{{{{action}}}}} is not supported"))
                    }
                    _ => nodes.push(Node::Output(pipe(&tokens)?)),
                }
            }
            Ok((nodes, Stop::Eof))
        }

        fn if_chain(&mut self, first: Pipe) -> Result<Node, String> {
            let mut branches = Vec::new();
            let mut condition = first;
            loop {
                let (body, stop) = self.list()?;
                branches.push((condition, body));
                match stop {
                    Stop::End => return Ok(Node::If(branches, Vec::new())),
                    Stop::Else => {
                        let (otherwise, stop) = self.list()?;
                        return match stop {
                            Stop::End => Ok(Node::If(branches, otherwise)),
                            _ => Err("if: else is not closed by end".to_owned()),
                        };
                    }
                    Stop::ElseIf(next) => condition = next,
                    Stop::Eof => return Err("if is not closed".to_owned()),
                }
            }
        }

        fn body_and_else(&mut self) -> Result<(Vec<Node>, Vec<Node>), String> {
            match self.list()? {
                (body, Stop::End) => Ok((body, Vec::new())),
                (body, Stop::Else) => match self.list()? {
                    (otherwise, Stop::End) => Ok((body, otherwise)),
                    _ => Err("else is not closed by end".to_owned()),
                },
                _ => Err("range/with is not closed by end".to_owned()),
            }
        }
    }

    /// Parsed templates: every file under its name, every `define` under its name.
    pub struct Engine {
        templates: BTreeMap<String, Vec<Node>>,
    }

    type Vars = Vec<(String, Value)>;

    impl Engine {
        pub fn new(files: &[(String, String)]) -> Result<Self, String> {
            let mut templates = BTreeMap::new();
            for (name, source) in files {
                let pieces = split(source).map_err(|e| format!("{name}: {e}"))?;
                let mut defines = BTreeMap::new();
                let mut parser = Parser {
                    pieces: &pieces,
                    at: 0,
                    defines: &mut defines,
                };
                let (nodes, stop) = parser.list().map_err(|e| format!("{name}: {e}"))?;
                if !matches!(stop, Stop::Eof) {
                    return Err(format!("{name}: unexpected end or else"));
                }
                for (define, body) in defines {
                    if templates.insert(define.clone(), body).is_some() {
                        return Err(format!("{name}: template {define:?} is defined twice"));
                    }
                }
                templates.insert(name.clone(), nodes);
            }
            Ok(Self { templates })
        }

        /// Runs the template `name` with `data` as `.` and `$`.
        pub fn render(&self, name: &str, data: &Value) -> Result<String, String> {
            self.include(name, data, 0)
                .map_err(|e| format!("{name}: {e}"))
        }

        fn include(&self, name: &str, data: &Value, depth: usize) -> Result<String, String> {
            if depth > 50 {
                return Err("includes nested too deeply".to_owned());
            }
            let nodes = self
                .templates
                .get(name)
                .ok_or_else(|| format!("no template {name:?}"))?;
            let mut vars = vec![("$".to_owned(), data.clone())];
            let mut out = String::new();
            self.run(nodes, data, &mut vars, &mut out, depth)?;
            Ok(out)
        }

        fn run(
            &self,
            nodes: &[Node],
            dot: &Value,
            vars: &mut Vars,
            out: &mut String,
            depth: usize,
        ) -> Result<(), String> {
            for node in nodes {
                let mark = vars.len();
                match node {
                    Node::Text(text) => out.push_str(text),
                    Node::Output(pipe) => {
                        let value = self.pipe(pipe, dot, vars, depth)?;
                        if pipe.vars.is_empty() {
                            out.push_str(&display(&value)?);
                        }
                        // A declaration lives until the end of the enclosing block.
                        continue;
                    }
                    Node::If(branches, otherwise) => {
                        let mut taken = false;
                        for (condition, body) in branches {
                            if truthy(&self.pipe(condition, dot, vars, depth)?) {
                                self.run(body, dot, vars, out, depth)?;
                                taken = true;
                                break;
                            }
                        }
                        if !taken {
                            self.run(otherwise, dot, vars, out, depth)?;
                        }
                    }
                    Node::With(head, body, otherwise) => {
                        let value = self.pipe(head, dot, vars, depth)?;
                        if truthy(&value) {
                            self.run(body, &value, vars, out, depth)?;
                        } else {
                            self.run(otherwise, dot, vars, out, depth)?;
                        }
                    }
                    Node::Range(head, body, otherwise) => {
                        let items: Vec<(Value, Value)> = match self.value(head, dot, vars, depth)? {
                            Value::Sequence(items) => items
                                .into_iter()
                                .enumerate()
                                .map(|(i, item)| (Value::from(i as u64), item))
                                .collect(),
                            // Go ranges over a map in key order.
                            Value::Mapping(map) => {
                                let mut entries: Vec<_> = map.into_iter().collect();
                                entries.sort_by_key(|(key, _)| display_key(key));
                                entries
                            }
                            Value::Null => Vec::new(),
                            other => return Err(format!("range over {other:?}")),
                        };
                        if items.is_empty() {
                            self.run(otherwise, dot, vars, out, depth)?;
                        }
                        for (key, item) in items {
                            let inner = vars.len();
                            match head.vars.as_slice() {
                                [] => {}
                                [value] => vars.push((value.clone(), item.clone())),
                                [k, value] => {
                                    vars.push((k.clone(), key));
                                    vars.push((value.clone(), item.clone()));
                                }
                                _ => return Err("range: too many variables".to_owned()),
                            }
                            self.run(body, &item, vars, out, depth)?;
                            vars.truncate(inner);
                        }
                    }
                }
                vars.truncate(mark);
            }
            Ok(())
        }

        /// A pipeline's value, bound to its variables if it declares or assigns any.
        fn pipe(
            &self,
            pipe: &Pipe,
            dot: &Value,
            vars: &mut Vars,
            depth: usize,
        ) -> Result<Value, String> {
            let value = self.value(pipe, dot, vars, depth)?;
            match (pipe.vars.as_slice(), pipe.declare) {
                ([], _) => {}
                ([name], true) => vars.push((name.clone(), value.clone())),
                ([name], false) => assign(vars, name, value.clone())?,
                _ => return Err("several variables outside range".to_owned()),
            }
            Ok(value)
        }

        fn value(
            &self,
            pipe: &Pipe,
            dot: &Value,
            vars: &mut Vars,
            depth: usize,
        ) -> Result<Value, String> {
            let mut piped = None;
            for command in &pipe.commands {
                piped = Some(self.command(command, piped, dot, vars, depth)?);
            }
            piped.ok_or_else(|| "empty pipeline".to_owned())
        }

        fn command(
            &self,
            terms: &[Term],
            piped: Option<Value>,
            dot: &Value,
            vars: &mut Vars,
            depth: usize,
        ) -> Result<Value, String> {
            match terms {
                [Term::Function(name), args @ ..] => self.call(name, args, piped, dot, vars, depth),
                [term] if piped.is_none() => self.term(term, dot, vars, depth),
                _ => Err("arguments given to a value that is not a function".to_owned()),
            }
        }

        fn term(
            &self,
            term: &Term,
            dot: &Value,
            vars: &mut Vars,
            depth: usize,
        ) -> Result<Value, String> {
            match term {
                Term::Dot(path) => field(dot, path),
                Term::Var(name, path) => field(&lookup(vars, name)?, path),
                Term::Literal(value) => Ok(value.clone()),
                Term::Function(name) => self.call(name, &[], None, dot, vars, depth),
                Term::Nested(pipe) => self.value(pipe, dot, vars, depth),
            }
        }

        fn call(
            &self,
            name: &str,
            terms: &[Term],
            piped: Option<Value>,
            dot: &Value,
            vars: &mut Vars,
            depth: usize,
        ) -> Result<Value, String> {
            match name {
                // Short-circuit: the first deciding argument, else the last.
                "and" | "or" => {
                    let mut last = Value::Null;
                    for term in terms {
                        last = self.term(term, dot, vars, depth)?;
                        if truthy(&last) == (name == "or") {
                            return Ok(last);
                        }
                    }
                    Ok(piped.unwrap_or(last))
                }
                // Sprig's set changes the map in place; here: the variable it names.
                "set" => {
                    let [Term::Var(variable, path), key, item] = terms else {
                        return Err("set: expected set $variable key value".to_owned());
                    };
                    if !path.is_empty() || piped.is_some() {
                        return Err("set: only on a plain $variable".to_owned());
                    }
                    let Value::Mapping(mut map) = lookup(vars, variable)? else {
                        return Err(format!("set: {variable} is not a map"));
                    };
                    let key = self.term(key, dot, vars, depth)?;
                    let item = self.term(item, dot, vars, depth)?;
                    map.insert(Value::String(display(&key)?), item);
                    assign(vars, variable, Value::Mapping(map.clone()))?;
                    Ok(Value::Mapping(map))
                }
                _ => {
                    let mut args = Vec::with_capacity(terms.len() + 1);
                    for term in terms {
                        args.push(self.term(term, dot, vars, depth)?);
                    }
                    args.extend(piped);
                    if name == "include" {
                        let [template, data] = args.as_slice() else {
                            return Err("include: expected a name and a value".to_owned());
                        };
                        let template = template.as_str().ok_or("include: the name is a string")?;
                        return self.include(template, data, depth + 1).map(Value::String);
                    }
                    function(name, &args).map_err(|e| format!("{name}: {e}"))
                }
            }
        }
    }

    fn lookup(vars: &Vars, name: &str) -> Result<Value, String> {
        vars.iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| format!("undefined variable {name}"))
    }

    fn assign(vars: &mut Vars, name: &str, value: Value) -> Result<(), String> {
        let slot = vars
            .iter_mut()
            .rev()
            .find(|(n, _)| n == name)
            .ok_or_else(|| format!("undefined variable {name}"))?;
        slot.1 = value;
        Ok(())
    }

    /// `.a.b` of a value: a missing key is nil, a field of nil is an error (as in Go).
    fn field(value: &Value, path: &[String]) -> Result<Value, String> {
        let mut current = value.clone();
        for (i, key) in path.iter().enumerate() {
            current = match &current {
                Value::Mapping(map) => map.get(key.as_str()).cloned().unwrap_or(Value::Null),
                Value::Null => {
                    return Err(format!("nil pointer evaluating .{}", path[..=i].join(".")))
                }
                other => return Err(format!("can't evaluate field {key} in {other:?}")),
            };
        }
        Ok(current)
    }

    fn truthy(value: &Value) -> bool {
        match value {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::Number(n) => n.as_f64() != Some(0.0),
            Value::String(s) => !s.is_empty(),
            Value::Sequence(s) => !s.is_empty(),
            Value::Mapping(m) => !m.is_empty(),
            Value::Tagged(_) => true,
        }
    }

    /// How `{{ value }}` prints: nil as nothing (Helm drops "<no value>").
    fn display(value: &Value) -> Result<String, String> {
        Ok(match value {
            Value::Null => String::new(),
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
                (Some(i), _, _) => i.to_string(),
                (_, Some(u), _) => u.to_string(),
                (_, _, Some(f)) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{f:.0}"),
                (_, _, f) => format!("{}", f.unwrap_or_default()),
            },
            Value::String(s) => s.clone(),
            other => {
                return Err(format!(
                    "printing {other:?} (Go would print map[...] or [...])"
                ))
            }
        })
    }

    fn display_key(key: &Value) -> String {
        display(key).unwrap_or_default()
    }

    /// The value with its maps in the key order of Go's YAML encoder (yaml.v2, which
    /// Helm's toYaml ends in): letters by code point, other characters before letters.
    /// (Its numeric ordering of digit runs is left out: no key of the chart has digits.)
    fn go_sorted(value: &Value) -> Value {
        fn order(a: &str, b: &str) -> std::cmp::Ordering {
            for (x, y) in a.chars().zip(b.chars()) {
                if x != y {
                    return match (x.is_alphabetic(), y.is_alphabetic()) {
                        (true, false) => std::cmp::Ordering::Greater,
                        (false, true) => std::cmp::Ordering::Less,
                        _ => x.cmp(&y),
                    };
                }
            }
            a.chars().count().cmp(&b.chars().count())
        }
        match value {
            Value::Mapping(map) => {
                let mut entries: Vec<(Value, Value)> =
                    map.iter().map(|(k, v)| (k.clone(), go_sorted(v))).collect();
                entries.sort_by(|a, b| order(&display_key(&a.0), &display_key(&b.0)));
                Value::Mapping(entries.into_iter().collect())
            }
            Value::Sequence(items) => Value::Sequence(items.iter().map(go_sorted).collect()),
            other => other.clone(),
        }
    }

    fn equal(a: &Value, b: &Value) -> Result<bool, String> {
        match (a, b) {
            (Value::Number(x), Value::Number(y)) => Ok(x.as_f64() == y.as_f64()),
            (Value::String(x), Value::String(y)) => Ok(x == y),
            (Value::Bool(x), Value::Bool(y)) => Ok(x == y),
            _ => Err(format!("incompatible types for comparison: {a:?}, {b:?}")),
        }
    }

    /// Go's %q (strconv.Quote) for the characters the chart can meet.
    fn go_quote(text: &str) -> String {
        let mut out = String::from("\"");
        for c in text.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
                c => out.push(c),
            }
        }
        out.push('"');
        out
    }

    /// Sprig's toInt: numbers truncate, strings parse (else 0), nil is 0.
    fn to_int(value: &Value) -> Result<i64, String> {
        match value {
            Value::Number(n) => n
                .as_i64()
                .or_else(|| n.as_f64().map(|f| f as i64))
                .ok_or_else(|| format!("{n} is not an int")),
            Value::String(s) => Ok(s.trim().parse().unwrap_or(0)),
            Value::Bool(b) => Ok(i64::from(*b)),
            Value::Null => Ok(0),
            other => Err(format!("{other:?} is not an int")),
        }
    }

    fn printf(format: &str, args: &[Value]) -> Result<String, String> {
        let mut out = String::new();
        let mut args = args.iter();
        let mut chars = format.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                out.push(c);
                continue;
            }
            let verb = chars.next().ok_or("a lone % at the end")?;
            if verb == '%' {
                out.push('%');
                continue;
            }
            let arg = args.next().ok_or("too few arguments")?;
            match verb {
                's' | 'v' => out.push_str(&display(arg)?),
                'q' => out.push_str(&go_quote(&display(arg)?)),
                'd' => match arg {
                    Value::Number(n) if n.as_i64().is_some() => out.push_str(&display(arg)?),
                    other => return Err(format!("%d of {other:?}")),
                },
                other => return Err(format!("verb %{other} is not supported")),
            }
        }
        if args.next().is_some() {
            return Err("too many arguments".to_owned());
        }
        Ok(out)
    }

    /// Not SHA-256: a stand-in (FNV-1a), enough for tests that compare hashes.
    fn stand_in_hash(text: &str) -> String {
        let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        format!("{hash:016x}")
    }

    fn string_arg(value: &Value) -> Result<&str, String> {
        value
            .as_str()
            .ok_or_else(|| format!("{value:?} is not a string"))
    }

    fn map_arg(value: &Value) -> Result<&Mapping, String> {
        value
            .as_mapping()
            .ok_or_else(|| format!("{value:?} is not a map"))
    }

    fn function(name: &str, args: &[Value]) -> Result<Value, String> {
        let arity = |n: usize| {
            if args.len() == n {
                Ok(())
            } else {
                Err(format!("{} arguments, expected {n}", args.len()))
            }
        };
        Ok(match name {
            "toYaml" => {
                arity(1)?;
                let text =
                    serde_yaml::to_string(&go_sorted(&args[0])).map_err(|e| e.to_string())?;
                Value::String(text.strip_suffix('\n').unwrap_or(&text).to_owned())
            }
            "fromYamlArray" => {
                arity(1)?;
                match serde_yaml::from_str(string_arg(&args[0])?).map_err(|e| e.to_string())? {
                    Value::Null => Value::Sequence(Vec::new()),
                    list @ Value::Sequence(_) => list,
                    other => return Err(format!("{other:?} is not a list")),
                }
            }
            "indent" | "nindent" => {
                arity(2)?;
                let pad =
                    " ".repeat(usize::try_from(to_int(&args[0])?).map_err(|e| e.to_string())?);
                let text = display(&args[1])?.replace('\n', &format!("\n{pad}"));
                let newline = if name == "nindent" { "\n" } else { "" };
                Value::String(format!("{newline}{pad}{text}"))
            }
            "default" => {
                arity(2)?;
                if truthy(&args[1]) {
                    args[1].clone()
                } else {
                    args[0].clone()
                }
            }
            "empty" | "not" => {
                arity(1)?;
                Value::Bool(!truthy(&args[0]))
            }
            "eq" => {
                if args.len() < 2 {
                    return Err("at least 2 arguments".to_owned());
                }
                let mut any = false;
                for other in &args[1..] {
                    any |= equal(&args[0], other)?;
                }
                Value::Bool(any)
            }
            "ne" => {
                arity(2)?;
                Value::Bool(!equal(&args[0], &args[1])?)
            }
            "trunc" => {
                arity(2)?;
                let n = usize::try_from(to_int(&args[0])?).map_err(|e| e.to_string())?;
                let text = string_arg(&args[1])?;
                Value::String(text.get(..n).unwrap_or(text).to_owned())
            }
            "trimSuffix" => {
                arity(2)?;
                let (suffix, text) = (string_arg(&args[0])?, string_arg(&args[1])?);
                Value::String(text.strip_suffix(suffix).unwrap_or(text).to_owned())
            }
            "contains" => {
                arity(2)?;
                Value::Bool(string_arg(&args[1])?.contains(string_arg(&args[0])?))
            }
            "replace" => {
                arity(3)?;
                let text = string_arg(&args[2])?;
                Value::String(text.replace(string_arg(&args[0])?, string_arg(&args[1])?))
            }
            "quote" => {
                let mut quoted = Vec::new();
                for arg in args.iter().filter(|a| !a.is_null()) {
                    quoted.push(go_quote(&display(arg)?));
                }
                Value::String(quoted.join(" "))
            }
            "printf" => {
                let (format, rest) = args.split_first().ok_or("a format is needed")?;
                Value::String(printf(string_arg(format)?, rest)?)
            }
            // Go's fmt.Sprint: a space between operands when neither is a string.
            "print" => {
                let mut out = String::new();
                for (i, arg) in args.iter().enumerate() {
                    if i > 0 && !arg.is_string() && !args[i - 1].is_string() {
                        out.push(' ');
                    }
                    out.push_str(&display(arg)?);
                }
                Value::String(out)
            }
            "sha256sum" => {
                arity(1)?;
                Value::String(stand_in_hash(string_arg(&args[0])?))
            }
            "b64enc" => {
                arity(1)?;
                Value::String(base64::engine::general_purpose::STANDARD.encode(display(&args[0])?))
            }
            "fail" => {
                arity(1)?;
                return Err(format!("fail: {}", display(&args[0])?));
            }
            "dict" => {
                if !args.len().is_multiple_of(2) {
                    return Err("an odd number of arguments".to_owned());
                }
                let mut map = Mapping::new();
                for pair in args.chunks(2) {
                    map.insert(Value::String(display(&pair[0])?), pair[1].clone());
                }
                Value::Mapping(map)
            }
            "list" => Value::Sequence(args.to_vec()),
            "get" => {
                arity(2)?;
                let key = string_arg(&args[1])?;
                map_arg(&args[0])?
                    .get(key)
                    .cloned()
                    .unwrap_or_else(|| Value::String(String::new()))
            }
            "hasKey" => {
                arity(2)?;
                Value::Bool(map_arg(&args[0])?.contains_key(string_arg(&args[1])?))
            }
            "deepCopy" => {
                arity(1)?;
                args[0].clone()
            }
            "append" => {
                arity(2)?;
                let mut list = args[0].as_sequence().ok_or("not a list")?.clone();
                list.push(args[1].clone());
                Value::Sequence(list)
            }
            "int" => {
                arity(1)?;
                Value::from(to_int(&args[0])?)
            }
            _ => return Err("unknown function (not in this mini renderer)".to_owned()),
        })
    }
}
