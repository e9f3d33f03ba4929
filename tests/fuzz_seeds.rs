//! Replays the checked-in fuzz seeds (`fuzz/seeds/<target>/*`) through the same
//! `coi_proxy::fuzzing` functions the libFuzzer targets call, on stable, so every CI run
//! checks the fuzz invariants on known-interesting inputs.
//!
//! Targets, seed directories and `fuzz/Cargo.toml` cannot drift apart: a seed directory
//! without a target, a target without seeds, or a target file that calls the wrong
//! function fails here.
//!
//! `random_smoke` (ignored by default; `cargo test --test fuzz_seeds -- --ignored`) runs
//! each target on a few thousand inputs from a deterministic PRNG: a poor man's fuzzer for
//! machines without nightly.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Once;

use coi_proxy::fuzzing;

/// Every fuzz target, by name: the directory under `fuzz/seeds/`, the file under
/// `fuzz/fuzz_targets/`, the `[[bin]]` in `fuzz/Cargo.toml` and the function in
/// `coi_proxy::fuzzing` all carry this name.
fn target(name: &str) -> Option<fn(&[u8])> {
    Some(match name {
        "capability_filter" => fuzzing::capability_filter,
        "coi_address" => fuzzing::coi_address,
        "coi_token" => fuzzing::coi_token,
        "coi_headers" => fuzzing::coi_headers,
        "coi_classify" => fuzzing::coi_classify,
        "smtp_command" => fuzzing::smtp_command,
        "smtp_data" => fuzzing::smtp_data,
        "smtp_reply" => fuzzing::smtp_reply,
        "coi_config" => fuzzing::coi_config,
        "config_yaml" => fuzzing::config_yaml,
        "imap_command" => fuzzing::imap_command,
        "imap_encode_roundtrip" => fuzzing::imap_encode_roundtrip,
        "imap_fragment_commands" => fuzzing::imap_fragment_commands,
        "imap_fragment_responses" => fuzzing::imap_fragment_responses,
        "imap_response" => fuzzing::imap_response,
        "coi_submit" => fuzzing::coi_submit,
        "coi_contacts" => fuzzing::coi_contacts,
        "sasl_identity" => fuzzing::sasl_identity,
        "peer_frames" => fuzzing::peer_frames,
        _ => return None,
    })
}

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// Sorted entries of a directory, so runs and messages are stable.
fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .collect();
    entries.sort();
    entries
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .expect("a named entry")
        .to_string_lossy()
        .into_owned()
}

/// Names of the fuzz targets that have a file in `fuzz/fuzz_targets/`.
fn target_files() -> Vec<String> {
    entries(&fuzz_dir().join("fuzz_targets"))
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .map(|p| {
            p.file_stem()
                .expect("a file stem")
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

thread_local! {
    /// Set while `run_caught` runs a target on this thread.
    static CATCHING: Cell<bool> = const { Cell::new(false) };
    /// Message and location of the last panic caught on this thread.
    static CAUGHT: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Runs `f` on `input`, returning the panic message and location if it panics. The panic
/// is not printed (thousands may be caught); panics elsewhere print as usual.
fn run_caught(f: fn(&[u8]), input: &[u8]) -> Result<(), String> {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if CATCHING.with(Cell::get) {
                CAUGHT.with(|c| *c.borrow_mut() = info.to_string());
            } else {
                default(info);
            }
        }));
    });
    CATCHING.with(|c| c.set(true));
    let result = panic::catch_unwind(AssertUnwindSafe(|| f(input)));
    CATCHING.with(|c| c.set(false));
    result.map_err(|_| CAUGHT.with(|c| c.take()))
}

#[test]
fn every_seed_passes_its_target() {
    let mut counts = BTreeMap::new();
    let mut problems = Vec::new();
    for dir in entries(&fuzz_dir().join("seeds")) {
        let name = file_name(&dir);
        if !dir.is_dir() {
            problems.push(format!("fuzz/seeds/{name}: not a directory"));
            continue;
        }
        let Some(f) = target(&name) else {
            problems.push(format!("fuzz/seeds/{name}: no fuzz target of that name"));
            continue;
        };
        let seeds = entries(&dir);
        if seeds.is_empty() {
            problems.push(format!("fuzz/seeds/{name}: no seeds"));
        }
        for seed in &seeds {
            let input =
                fs::read(seed).unwrap_or_else(|e| panic!("cannot read {}: {e}", seed.display()));
            if let Err(message) = run_caught(f, &input) {
                problems.push(format!("fuzz/seeds/{name}/{}: {message}", file_name(seed)));
            }
        }
        counts.insert(name, seeds.len());
    }
    for name in target_files() {
        if !counts.contains_key(&name) {
            problems.push(format!(
                "fuzz/fuzz_targets/{name}.rs: no fuzz/seeds/{name}/ directory"
            ));
        }
    }
    for (name, count) in &counts {
        println!("{name}: {count} seeds");
    }
    println!(
        "{} seeds in {} targets",
        counts.values().sum::<usize>(),
        counts.len()
    );
    assert!(
        problems.is_empty(),
        "fuzz seed replay failed:\n{}",
        problems.join("\n")
    );
}

#[test]
fn every_target_is_wired_up() {
    let manifest = fs::read_to_string(fuzz_dir().join("Cargo.toml")).expect("fuzz/Cargo.toml");
    let files = target_files();
    assert!(!files.is_empty(), "no fuzz targets found");
    let mut problems = Vec::new();
    for name in &files {
        if target(name).is_none() {
            problems.push(format!(
                "fuzz/fuzz_targets/{name}.rs: not a function in coi_proxy::fuzzing"
            ));
        }
        let path = fuzz_dir().join("fuzz_targets").join(format!("{name}.rs"));
        let source = fs::read_to_string(&path).expect("target source");
        if !source.contains(&format!("coi_proxy::fuzzing::{name}(data)")) {
            problems.push(format!(
                "fuzz/fuzz_targets/{name}.rs: does not call coi_proxy::fuzzing::{name}(data)"
            ));
        }
        if !manifest.contains(&format!(
            "name = \"{name}\"\npath = \"fuzz_targets/{name}.rs\""
        )) {
            problems.push(format!("fuzz/Cargo.toml: no [[bin]] for {name}"));
        }
    }
    let bins = manifest.matches("[[bin]]").count();
    if bins != files.len() {
        problems.push(format!(
            "fuzz/Cargo.toml has {bins} [[bin]] tables for {} target files",
            files.len()
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// === random smoke ===

/// xorshift64*: tiny, deterministic, good enough to spray bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

/// IMAP and YAML terminals the generator splices in, so that random inputs get past the
/// first token of each grammar.
const TOKENS: &[&[u8]] = &[
    b" ",
    b"\r\n",
    b"\n",
    b"\r",
    b"\0",
    b"\"",
    b"\\",
    b"(",
    b")",
    b"[",
    b"]",
    b"{",
    b"}",
    b"{0}",
    b"{5}",
    b"{3+}",
    b"~{2}",
    b"{4294967295}",
    b"{99999999999999999999}",
    b"*",
    b"+",
    b"a1",
    b"NIL",
    b"OK",
    b"NO",
    b"BAD",
    b"BYE",
    b"PREAUTH",
    b"CAPABILITY",
    b"UID",
    b"FETCH",
    b"APPEND",
    b"LOGIN",
    b"AUTHENTICATE",
    b"PLAIN",
    b"GETMETADATA",
    b"SETMETADATA",
    b"CREATE",
    b"DELETE",
    b"RENAME",
    b"INBOX",
    b"DEPTH",
    b"MAXSIZE",
    b"infinity",
    b"METADATA",
    b"SEARCH",
    b"EXISTS",
    b"AUTH=",
    b"-PLUS",
    b"COMPRESS=DEFLATE",
    b"STARTTLS",
    b"APPENDLIMIT=",
    b"SORT=",
    b"COI",
    b"IMAP4rev1",
    b"/private/vendor/vendor.dovecot/coi/config",
    b"/enabled",
    b"/message-filter",
    b"/mailbox-root",
    b"yes",
    b"none",
    b"active",
    b"seen",
    b"/private/vendor/coi-proxy/config",
    b"imap:",
    b"listeners:",
    b"- address: ",
    b"127.0.0.1:1143",
    b"tls:",
    b"upstream:",
    b"limits:",
    b"max_line_bytes: ",
    b"timeouts:",
    b"admin:",
    b"  ",
    b": ",
    b"- ",
    b"&a",
    b"*a",
    b"!!",
    b"~",
    b"1024",
    b"0",
    b"18446744073709551616",
    b"1s",
    b"5m",
];

fn random_input(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    match rng.below(3) {
        // Raw bytes.
        0 => (0..rng.below(300)).map(|_| rng.byte()).collect(),
        // Token soup.
        1 => {
            let mut out = Vec::new();
            for _ in 0..rng.below(40) {
                if rng.below(4) == 0 {
                    out.push(rng.byte());
                } else {
                    out.extend_from_slice(TOKENS[rng.below(TOKENS.len())]);
                }
            }
            out
        }
        // A mutated seed.
        _ => {
            let mut out = if seeds.is_empty() {
                Vec::new()
            } else {
                seeds[rng.below(seeds.len())].clone()
            };
            for _ in 0..=rng.below(4) {
                let at = rng.below(out.len() + 1);
                match rng.below(5) {
                    0 if at < out.len() => out[at] = rng.byte(),
                    1 if at < out.len() => {
                        let end = (at + rng.below(8)).min(out.len());
                        out.drain(at..end);
                    }
                    2 => {
                        let token = TOKENS[rng.below(TOKENS.len())];
                        out.splice(at..at, token.iter().copied());
                    }
                    // A run of one byte: long words and lines, past the framers' limits.
                    3 => {
                        let run = vec![rng.byte(); rng.below(400)];
                        out.splice(at..at, run);
                    }
                    _ => {
                        let byte = rng.byte();
                        out.insert(at, byte);
                    }
                }
            }
            out
        }
    }
}

#[test]
#[ignore = "slow: a few thousand random inputs per target"]
fn random_smoke() {
    const INPUTS_PER_TARGET: usize = 5000;
    let mut failures = Vec::new();
    for name in target_files() {
        let f = target(&name).unwrap_or_else(|| panic!("unknown target {name}"));
        let dir = fuzz_dir().join("seeds").join(&name);
        let seeds: Vec<Vec<u8>> = entries(&dir)
            .iter()
            .map(|p| fs::read(p).expect("seed"))
            .collect();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ name.len() as u64);
        let mut found = 0;
        for _ in 0..INPUTS_PER_TARGET {
            let input = random_input(&mut rng, &seeds);
            if let Err(message) = run_caught(f, &input) {
                found += 1;
                if found <= 3 {
                    failures.push(format!(
                        "{name}: {message}\n  input: b\"{}\"",
                        input.escape_ascii()
                    ));
                }
            }
        }
        println!("{name}: {INPUTS_PER_TARGET} random inputs, {found} failed");
    }
    assert!(
        failures.is_empty(),
        "random inputs broke fuzz invariants:\n{}",
        failures.join("\n")
    );
}
