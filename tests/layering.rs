//! The sans-IO boundary, checked on the source text.
//!
//! `src/proto/` and `src/coi/` are the sans-IO core: bytes and time come in as arguments,
//! events and bytes go out (HOUSE-STYLE §3.1, house rule 1). They must not name an async
//! runtime, sockets, the clock, files, threads, metrics, logging or YAML, nor the layers
//! built on top of them (`net`, `proxy`, `config`, `metrics`, `admin`, `app`). And `src/net/`
//! must not depend on `src/proxy/`, which sits above it.
//!
//! The scanner blanks comments and string/char literals, then looks at every `use` tree
//! (braces flattened, `as` aliases followed, `self`/`super` resolved against the file's
//! module path, globs that would bring a forbidden item in) and every `a::b` path
//! expression. Any dependency in `Cargo.toml` other than the ones listed in
//! [`SANS_IO_CRATES`] is forbidden in the core too, so a new I/O crate is caught without
//! editing this file.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

/// Crates the sans-IO core may use (the `Cargo.toml` comment names the first four);
/// `proptest` appears only in unit tests and does no I/O.
/// Pure computation only: parsing, hashing (SHA3 for COI tokens), encodings, Unicode
/// normalisation and IDNA for address canonicalisation, constant-time comparison.
const SANS_IO_CRATES: &[&str] = &[
    "nom",
    "thiserror",
    "memchr",
    "bytes",
    "proptest",
    "sha3",
    "base64",
    "idna",
    "unicode_normalization",
    "subtle",
];

/// Path prefixes the sans-IO core must not use, with the reason shown on failure.
/// Extern crates not (yet) in `Cargo.toml` are listed so that adding one is caught too.
const CORE_FORBIDDEN: &[(&str, &str)] = &[
    ("tokio", "async runtime: the core never awaits"),
    (
        "std::net",
        "sockets and addresses belong to net/ and config/",
    ),
    (
        "std::time::Instant",
        "clock: time is passed in by the caller",
    ),
    (
        "std::time::SystemTime",
        "clock: time is passed in by the caller",
    ),
    ("std::fs", "file system"),
    ("std::thread", "threads"),
    ("prometheus", "metrics: the core keeps plain stat structs"),
    ("dashmap", "shared tables belong to proxy/"),
    ("serde_yaml", "configuration parsing belongs to config/"),
    ("hyper", "HTTP belongs to admin/"),
    ("rustls", "TLS belongs to net/"),
    ("quinn", "QUIC belongs to net/"),
    ("hickory_resolver", "DNS belongs to net/"),
    ("hickory_proto", "DNS belongs to net/"),
    (
        "tracing",
        "logging: the core returns events, the caller logs them",
    ),
    ("crate::net", "a layer above the core"),
    ("crate::proxy", "a layer above the core"),
    (
        "crate::config",
        "a layer above the core: pass the values in",
    ),
    ("crate::metrics", "a layer above the core"),
    ("crate::admin", "a layer above the core"),
    ("crate::app", "a layer above the core"),
];

/// Identifiers forbidden in the core wherever they appear.
const CORE_FORBIDDEN_IDENTS: &[(&str, &str)] =
    &[("SystemTime", "clock: time is passed in by the caller")];

const NET_FORBIDDEN: &[(&str, &str)] = &[("crate::proxy", "net/ sits below proxy/")];

// === the checks ===

#[test]
fn sans_io_core_uses_no_io() {
    let mut rules = Rules::new(CORE_FORBIDDEN, CORE_FORBIDDEN_IDENTS);
    for dependency in cargo_dependencies() {
        if !SANS_IO_CRATES.contains(&dependency.as_str()) && !rules.forbids_root(&dependency) {
            rules.forbidden.push((
                vec![dependency],
                "a Cargo.toml dependency outside SANS_IO_CRATES (add it there only if it does no I/O)".into(),
            ));
        }
    }
    let mut violations = Vec::new();
    let mut files = 0;
    for dir in ["src/proto", "src/coi"] {
        for (file, module) in rust_files(dir) {
            files += 1;
            violations.extend(scan_file(&file, &module, &rules));
        }
    }
    assert!(files > 0, "no sources found under src/proto or src/coi");
    println!("scanned {files} files under src/proto and src/coi");
    assert!(
        violations.is_empty(),
        "the sans-IO core reaches outside itself:\n{}",
        violations.join("\n")
    );
}

#[test]
fn net_does_not_depend_on_proxy() {
    let rules = Rules::new(NET_FORBIDDEN, &[]);
    let mut violations = Vec::new();
    for (file, module) in rust_files("src/net") {
        violations.extend(scan_file(&file, &module, &rules));
    }
    assert!(
        violations.is_empty(),
        "net/ depends on proxy/:\n{}",
        violations.join("\n")
    );
}

// === the scanner's own tests ===

#[test]
fn core_rules_reject_the_real_net_layer() {
    // net/ is all tokio and rustls: the core's rules, run over it, must find them, which
    // shows the file walk and the scanner work on real sources, not only on samples.
    let rules = Rules::new(CORE_FORBIDDEN, CORE_FORBIDDEN_IDENTS);
    let found: Vec<String> = rust_files("src/net")
        .iter()
        .flat_map(|(file, module)| scan_file(file, module, &rules))
        .collect();
    assert!(found.iter().any(|v| v.contains("`tokio::")), "{found:#?}");
    assert!(found.iter().any(|v| v.contains("`rustls::")), "{found:#?}");
}

#[test]
fn path_modules_get_their_declared_module_path() {
    let modules = rust_files("src/proto");
    let tests = modules
        .iter()
        .find(|(file, _)| file.ends_with("imap/fragment_tests.rs"))
        .map(|(_, module)| module.join("::"));
    assert_eq!(
        tests.as_deref(),
        Some("crate::proto::imap::fragment::tests")
    );
}

fn lines_flagged(source: &str, module: &[&str]) -> Vec<usize> {
    let rules = Rules::new(CORE_FORBIDDEN, CORE_FORBIDDEN_IDENTS);
    let module: Vec<String> = module.iter().map(|s| (*s).to_owned()).collect();
    let mut lines: Vec<usize> = scan(source, &module, &rules)
        .into_iter()
        .map(|v| v.line)
        .collect();
    lines.dedup();
    lines
}

#[test]
fn scanner_finds_violations_and_ignores_comments_and_strings() {
    let source = r##"//! Docs may mention tokio::spawn and crate::net.
use std::time::Duration; // std::net in a comment
use crate::{proto::imap, config::Config};
use super::super::super::net as n;
fn f<'a>(x: &'a str) -> &'a str {
    let s = "tokio::spawn(x) and std::fs::read \" still a string";
    let c = '"';
    tokio::spawn(async {});
    let _t = std::time::SystemTime::now();
    /* block: std::thread::spawn /* nested: tracing::info! */ still comment */
    let r = r#"raw: hyper::Server"#;
    ::rustls::ClientConfig::builder();
    x
}
"##;
    assert_eq!(
        lines_flagged(source, &["crate", "proto", "imap", "x"]),
        vec![3, 4, 8, 9, 12]
    );
}

#[test]
fn scanner_follows_aliases_globs_and_super() {
    let source =
        "use std::time;\nfn f() { time::Instant::now(); }\nuse std::time::*;\nuse super::*;\n";
    // `super::*` from crate::proto is a glob of the crate root, which holds `net`.
    assert_eq!(lines_flagged(source, &["crate", "proto"]), vec![2, 3, 4]);
    assert_eq!(
        lines_flagged("use super::*;\n", &["crate", "proto", "imap"]),
        Vec::<usize>::new()
    );
    assert_eq!(
        lines_flagged("fn f(t: SystemTime) {}\n", &["crate", "coi"]),
        vec![1]
    );
}

#[test]
fn scanner_accepts_core_code() {
    let source = "use nom::Parser;\nuse super::command::{astring, is_atom_char};\nuse std::time::Duration;\n\
                  fn f() -> Result<(), std::fmt::Error> { let x = crate::proto::imap::encode::text; Ok(()) }\n\
                  #[path = \"x_tests.rs\"]\nmod tests;\n";
    assert_eq!(
        lines_flagged(source, &["crate", "proto", "imap", "x"]),
        Vec::<usize>::new()
    );
}

// === scanner ===

struct Rules {
    /// Forbidden path prefixes (segments) and why.
    forbidden: Vec<(Vec<String>, String)>,
    idents: Vec<(String, String)>,
}

impl Rules {
    fn new(paths: &[(&str, &str)], idents: &[(&str, &str)]) -> Self {
        Self {
            forbidden: paths
                .iter()
                .map(|(p, why)| {
                    (
                        p.split("::").map(str::to_owned).collect(),
                        (*why).to_owned(),
                    )
                })
                .collect(),
            idents: idents
                .iter()
                .map(|(i, why)| ((*i).to_owned(), (*why).to_owned()))
                .collect(),
        }
    }

    fn forbids_root(&self, root: &str) -> bool {
        self.forbidden
            .iter()
            .any(|(p, _)| p.len() == 1 && p[0] == root)
    }

    /// Why `path` is forbidden, if it is.
    fn check(&self, path: &[String]) -> Option<&str> {
        self.forbidden
            .iter()
            .find(|(p, _)| path.starts_with(p))
            .map(|(_, why)| why.as_str())
    }

    /// Why a glob import of `path` is forbidden: it would bring a forbidden item in.
    fn check_glob(&self, path: &[String]) -> Option<&str> {
        self.check(path).or_else(|| {
            self.forbidden
                .iter()
                .find(|(p, _)| p.starts_with(path))
                .map(|(_, why)| why.as_str())
        })
    }
}

struct Violation {
    line: usize,
    path: String,
    why: String,
}

fn scan_file(file: &Path, module: &[String], rules: &Rules) -> Vec<String> {
    let source =
        fs::read_to_string(file).unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
    let shown = file
        .strip_prefix(env!("CARGO_MANIFEST_DIR"))
        .unwrap_or(file)
        .display()
        .to_string();
    scan(&source, module, rules)
        .into_iter()
        .map(|v| format!("{shown}:{}: `{}` ({})", v.line, v.path, v.why))
        .collect()
}

/// Every forbidden use in `source`, a file whose module path is `module` (`crate::...`).
fn scan(source: &str, module: &[String], rules: &Rules) -> Vec<Violation> {
    let tokens = tokenize(&blank_comments_and_literals(source));
    let modules = module_per_token(&tokens, module);
    let mut violations = Vec::new();
    let mut report = |line: usize, path: &[String], why: &str| {
        violations.push(Violation {
            line,
            path: path.join("::"),
            why: why.to_owned(),
        });
    };
    for token in &tokens {
        if let Tok::Ident(name) = &token.tok {
            if let Some((_, why)) = rules.idents.iter().find(|(i, _)| i == name) {
                report(token.line, std::slice::from_ref(name), why);
            }
        }
    }

    // `use` trees first: they also give the file's aliases.
    let mut aliases: HashMap<String, Vec<String>> = HashMap::new();
    let mut in_use = vec![false; tokens.len()];
    let mut i = 0;
    while i < tokens.len() {
        if tokens[i].tok != Tok::Ident("use".into()) {
            i += 1;
            continue;
        }
        let start = i;
        i += 1;
        let mut items = Vec::new();
        parse_use_tree(&tokens, &mut i, Vec::new(), &mut items);
        while i < tokens.len() && tokens[i].tok != Tok::Semi {
            i += 1;
        }
        in_use[start..i.min(tokens.len())].fill(true);
        for item in items {
            let Some(path) = resolve(&item.path, &modules[start], &HashMap::new()) else {
                continue;
            };
            let why = if item.glob {
                rules.check_glob(&path)
            } else {
                rules.check(&path)
            };
            if let Some(why) = why {
                report(item.line, &path, why);
            }
            if !item.glob {
                let local = item.alias.or_else(|| path.last().cloned());
                if let Some(local) = local.filter(|l| l != "_") {
                    aliases.insert(local, path);
                }
            }
        }
    }

    // Path expressions: `a::b::c` outside `use`, with at least one `::`.
    let mut i = 0;
    while i < tokens.len() {
        let starts_path = !in_use[i]
            && matches!(tokens[i].tok, Tok::Ident(_) | Tok::PathSep)
            && !matches!(
                i.checked_sub(1).map(|p| &tokens[p].tok),
                Some(Tok::PathSep | Tok::Dot)
            );
        if !starts_path {
            i += 1;
            continue;
        }
        let line = tokens[i].line;
        let start = i;
        let mut segments = Vec::new();
        let mut separators = 0;
        if tokens[i].tok == Tok::PathSep {
            i += 1;
            separators += 1;
        }
        while let Some(Tok::Ident(name)) = tokens.get(i).map(|t| &t.tok) {
            segments.push(name.clone());
            i += 1;
            if tokens.get(i).map(|t| &t.tok) == Some(&Tok::PathSep)
                && matches!(tokens.get(i + 1).map(|t| &t.tok), Some(Tok::Ident(_)))
            {
                i += 1;
                separators += 1;
            } else {
                break;
            }
        }
        if i == start {
            i += 1;
        }
        if separators == 0 || segments.is_empty() {
            continue;
        }
        if let Some(path) = resolve(&segments, &modules[start], &aliases) {
            if let Some(why) = rules.check(&path) {
                report(line, &path, why);
            }
        }
    }
    violations.sort_by_key(|v| v.line);
    violations
}

/// The module path at each token: the file's, plus the inline `mod name { ... }` blocks
/// the token sits in (so `super` in a `mod tests` block is the file's module).
fn module_per_token(tokens: &[Token], file_module: &[String]) -> Vec<Vec<String>> {
    let mut modules = Vec::with_capacity(tokens.len());
    let mut current = file_module.to_vec();
    // Brace depth inside each open inline module.
    let mut open: Vec<usize> = Vec::new();
    let mut depth = 0;
    for (i, token) in tokens.iter().enumerate() {
        match &token.tok {
            Tok::LBrace => {
                depth += 1;
                if i >= 2 && tokens[i - 2].tok == Tok::Ident("mod".into()) {
                    if let Tok::Ident(name) = &tokens[i - 1].tok {
                        open.push(depth);
                        current.push(name.clone());
                    }
                }
            }
            Tok::RBrace => {
                if open.last() == Some(&depth) {
                    open.pop();
                    current.pop();
                }
                depth = depth.saturating_sub(1);
            }
            _ => {}
        }
        modules.push(current.clone());
    }
    modules
}

/// Makes a path absolute: `crate::...`, or an extern crate's path. `None` for paths
/// that start at `Self` (an impl's own items).
fn resolve(
    path: &[String],
    module: &[String],
    aliases: &HashMap<String, Vec<String>>,
) -> Option<Vec<String>> {
    let first = path.first()?;
    let mut out: Vec<String> = match first.as_str() {
        "crate" => vec!["crate".into()],
        "Self" => return None,
        "self" => module.to_vec(),
        "super" => {
            let mut base = module.to_vec();
            let mut rest = path.iter().peekable();
            while rest.peek().is_some_and(|s| *s == "super") {
                rest.next();
                if base.len() > 1 {
                    base.pop();
                }
            }
            base.extend(rest.cloned());
            return Some(base);
        }
        _ => match aliases.get(first) {
            Some(target) => target.clone(),
            None => vec![first.clone()],
        },
    };
    out.extend(path[1..].iter().cloned());
    Some(out)
}

struct UseItem {
    path: Vec<String>,
    alias: Option<String>,
    glob: bool,
    line: usize,
}

/// Flattens one use tree: `a::b::{c, d::e as f, g::*, self}`.
fn parse_use_tree(tokens: &[Token], i: &mut usize, prefix: Vec<String>, out: &mut Vec<UseItem>) {
    let mut path = prefix;
    if tokens.get(*i).map(|t| &t.tok) == Some(&Tok::PathSep) {
        *i += 1;
    }
    while let Some(token) = tokens.get(*i) {
        match &token.tok {
            Tok::Ident(name) => {
                if name != "self" || path.is_empty() {
                    path.push(name.clone());
                }
                *i += 1;
                if tokens.get(*i).map(|t| &t.tok) == Some(&Tok::PathSep) {
                    *i += 1;
                    continue;
                }
                let mut alias = None;
                if tokens.get(*i).map(|t| &t.tok) == Some(&Tok::Ident("as".into())) {
                    if let Some(Tok::Ident(a)) = tokens.get(*i + 1).map(|t| &t.tok) {
                        alias = Some(a.clone());
                    }
                    *i += 2;
                }
                out.push(UseItem {
                    path,
                    alias,
                    glob: false,
                    line: token.line,
                });
                return;
            }
            Tok::Star => {
                *i += 1;
                out.push(UseItem {
                    path,
                    alias: None,
                    glob: true,
                    line: token.line,
                });
                return;
            }
            Tok::LBrace => {
                *i += 1;
                while let Some(t) = tokens.get(*i) {
                    match t.tok {
                        Tok::RBrace => {
                            *i += 1;
                            return;
                        }
                        Tok::Comma => *i += 1,
                        Tok::Semi => return,
                        _ => {
                            let before = *i;
                            parse_use_tree(tokens, i, path.clone(), out);
                            if *i == before {
                                *i += 1;
                            }
                        }
                    }
                }
                return;
            }
            _ => return,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Ident(String),
    PathSep,
    LBrace,
    RBrace,
    Comma,
    Semi,
    Star,
    Dot,
    Other,
}

struct Token {
    tok: Tok,
    line: usize,
}

fn tokenize(clean: &str) -> Vec<Token> {
    let chars: Vec<char> = clean.chars().collect();
    let mut tokens = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let tok = match c {
            '\n' => {
                line += 1;
                i += 1;
                continue;
            }
            c if c.is_whitespace() => {
                i += 1;
                continue;
            }
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                tokens.push(Token {
                    tok: Tok::Ident(chars[start..i].iter().collect()),
                    line,
                });
                continue;
            }
            ':' if chars.get(i + 1) == Some(&':') => {
                i += 1;
                Tok::PathSep
            }
            '{' => Tok::LBrace,
            '}' => Tok::RBrace,
            ',' => Tok::Comma,
            ';' => Tok::Semi,
            '*' => Tok::Star,
            '.' => Tok::Dot,
            _ => Tok::Other,
        };
        tokens.push(Token { tok, line });
        i += 1;
    }
    tokens
}

/// Replaces comments and the contents of string and char literals with spaces, keeping
/// every newline so that line numbers stay right.
fn blank_comments_and_literals(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let blank = |out: &mut String, c: char| out.push(if c == '\n' { '\n' } else { ' ' });
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                blank(&mut out, chars[i]);
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, chars[i]);
                    i += 1;
                }
            }
        } else if let Some(hashes) = raw_string_start(&chars, i) {
            // r"..." / r#"..."# (a `b`/`c` prefix stays as a harmless one-letter identifier).
            let mut j = i + 1 + hashes + 1;
            for &c in &chars[i..j] {
                blank(&mut out, c);
            }
            while j < chars.len() {
                if chars[j] == '"' && (1..=hashes).all(|h| chars.get(j + h) == Some(&'#')) {
                    for _ in 0..=hashes {
                        out.push(' ');
                    }
                    j += 1 + hashes;
                    break;
                }
                blank(&mut out, chars[j]);
                j += 1;
            }
            i = j;
        } else if c == '"' {
            blank(&mut out, c);
            i += 1;
            while i < chars.len() {
                let d = chars[i];
                blank(&mut out, d);
                i += 1;
                if d == '\\' && i < chars.len() {
                    blank(&mut out, chars[i]);
                    i += 1;
                } else if d == '"' {
                    break;
                }
            }
        } else if c == '\'' {
            // A char literal ('x', '\n', '\'', '\u{..}', b'x') or a lifetime or label ('a),
            // which is kept as it is.
            let end = if next == Some('\\') {
                (i + 3..chars.len().min(i + 13)).find(|&j| chars[j] == '\'')
            } else {
                (chars.get(i + 2) == Some(&'\'')).then_some(i + 2)
            };
            match end {
                Some(end) => {
                    for &c in &chars[i..=end] {
                        blank(&mut out, c);
                    }
                    i = end + 1;
                }
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// If a raw string starts at `i` (`r"`, `r#"`, also after a `b` or `c` prefix), the number
/// of `#`s.
fn raw_string_start(chars: &[char], i: usize) -> Option<usize> {
    if chars[i] != 'r' || !starts_token(chars, i, &['b', 'c']) {
        return None;
    }
    let hashes = chars[i + 1..].iter().take_while(|&&c| c == '#').count();
    (chars.get(i + 1 + hashes) == Some(&'"')).then_some(hashes)
}

/// True if the character at `i` starts a token, possibly after a one-letter `prefix`
/// (`b"..."`, `br"..."`).
fn starts_token(chars: &[char], i: usize, prefixes: &[char]) -> bool {
    let ident = |j: usize| chars[j].is_alphanumeric() || chars[j] == '_';
    match i {
        0 => true,
        _ if !ident(i - 1) => true,
        _ if prefixes.contains(&chars[i - 1]) => i == 1 || !ident(i - 2),
        _ => false,
    }
}

// === files ===

/// Every `.rs` file under `dir` (relative to the package), with its module path. A file
/// included with `#[path = "..."] mod name;` gets the module path of that declaration.
fn rust_files(dir: &str) -> Vec<(PathBuf, Vec<String>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = root.join("src");
    let mut files = Vec::new();
    collect(&root.join(dir), &mut files);
    files.sort();
    let mut modules: Vec<(PathBuf, Vec<String>)> = files
        .into_iter()
        .map(|file| {
            let relative = file.strip_prefix(&src).expect("under src/");
            let mut module = vec!["crate".to_owned()];
            let parts: Vec<String> = relative
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect();
            for (n, part) in parts.iter().enumerate() {
                if n + 1 < parts.len() {
                    module.push(part.clone());
                } else if part != "mod.rs" && part != "lib.rs" {
                    module.push(part.trim_end_matches(".rs").to_owned());
                }
            }
            (file, module)
        })
        .collect();
    // `#[path]` modules: the declaring file's module path plus the declared name.
    let mut renamed = HashMap::new();
    for (file, module) in &modules {
        let source = fs::read_to_string(file).expect("readable source");
        let mut lines = source.lines();
        while let Some(line) = lines.next() {
            let Some(target) = line
                .trim()
                .strip_prefix("#[path = \"")
                .and_then(|r| r.strip_suffix("\"]"))
            else {
                continue;
            };
            let Some(name) = lines.next().and_then(|l| {
                let l = l.trim().trim_start_matches("pub ").strip_prefix("mod ")?;
                Some(l.trim_end_matches(';').trim().to_owned())
            }) else {
                continue;
            };
            let path = file.parent().expect("a directory").join(target);
            let mut child = module.clone();
            child.push(name);
            renamed.insert(path, child);
        }
    }
    for (file, module) in &mut modules {
        if let Some(child) = renamed.get(file) {
            *module = child.clone();
        }
    }
    modules
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries =
        fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The names code uses for the package's dependencies (`foo-bar` is `foo_bar`), from
/// every `*dependencies` table of `Cargo.toml`.
fn cargo_dependencies() -> Vec<String> {
    let manifest = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
        .expect("Cargo.toml");
    let mut in_dependencies = false;
    let mut names = Vec::new();
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            let header = line.trim_matches(|c| c == '[' || c == ']');
            in_dependencies = header.ends_with("dependencies");
            // `[dependencies.foo]`: one dependency as a table.
            if let Some((table, name)) = header.rsplit_once('.') {
                if table.ends_with("dependencies") && !names.contains(&name.replace('-', "_")) {
                    names.push(name.replace('-', "_"));
                }
            }
            continue;
        }
        if !in_dependencies || line.starts_with('#') {
            continue;
        }
        if let Some((key, _)) = line.split_once('=') {
            let name = key
                .trim()
                .split('.')
                .next()
                .unwrap_or_default()
                .replace('-', "_");
            if !name.is_empty() && !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names
}
