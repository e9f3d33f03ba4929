//! `mbsync` (isync 1.4) as a real-world IMAP client, plus local Maildir helpers.
//!
//! [`sync`] synchronises a local Maildir tree with an IMAP account both ways
//! (`Patterns *`, `Create Both`, `Expunge Both`). The local tree uses mbsync's
//! `SubFolders Verbatim`: INBOX is `<root>/INBOX`, folder `Archive/2024` is
//! `<root>/Archive/2024`, each with `cur/new/tmp`. Sync state is kept inside the tree
//! (`SyncState *`), so repeated syncs of one tree are incremental.
//!
//! [`populate_maildir`] writes deterministic messages; [`canonical_listing`] reduces a
//! tree to folder names and sorted `(content hash, size, flags)` so that two trees
//! can be compared with `assert_eq!` regardless of file names, UIDs and `new`/`cur`.
//!
//! mbsync stores messages with LF line endings (it converts CRLF from IMAP), so the
//! generated messages use LF and survive a round trip byte for byte.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, SystemTime};

use tokio::io::AsyncReadExt;

/// Size of the large message [`populate_maildir`] adds on request (1 MiB body).
pub const LARGE_MESSAGE_BYTES: usize = 1024 * 1024;
/// A generous bound for one mbsync run over loopback.
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(60);

/// The IMAP account mbsync logs in to (plaintext IMAP, `LOGIN` command).
#[derive(Clone, Copy, Debug)]
pub struct ImapAccount<'a> {
    pub addr: SocketAddr,
    pub user: &'a str,
    pub password: &'a str,
}

/// What one mbsync run did.
#[derive(Debug)]
pub struct MbsyncOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl MbsyncOutput {
    /// Whether mbsync exited with status 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }
}

/// Synchronises the Maildir tree at `maildir` with `account`, both ways, within
/// `timeout`. On timeout mbsync is killed (by its pid) and the error carries the output
/// so far. A non-zero exit is not an error here: check [`MbsyncOutput::success`].
pub async fn sync(
    account: &ImapAccount<'_>,
    maildir: &Path,
    timeout: Duration,
) -> io::Result<MbsyncOutput> {
    let config_dir = tempfile::Builder::new().prefix("coi-mbsync-").tempdir()?;
    let config_path = config_dir.path().join("mbsyncrc");
    fs::create_dir_all(maildir)?;
    fs::write(&config_path, render_config(account, maildir))?;

    let mut child = tokio::process::Command::new("mbsync")
        .arg("-c")
        .arg(&config_path)
        .arg("-a")
        // Keep mbsync away from the real ~/.mbsyncrc and ~/.mbsync.
        .env("HOME", config_dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot run mbsync ({e}); run scripts/install-deps.sh"),
            )
        })?;
    let stdout = tokio::spawn(read_all(child.stdout.take()));
    let stderr = tokio::spawn(read_all(child.stderr.take()));

    let waited = tokio::time::timeout(timeout, child.wait()).await;
    let status = match waited {
        Ok(status) => Some(status?),
        Err(_) => {
            // SIGKILL to the pid we spawned, then reap it.
            child.kill().await?;
            None
        }
    };
    let stdout = stdout.await.map_err(io::Error::other)?;
    let stderr = stderr.await.map_err(io::Error::other)?;
    match status {
        Some(status) => Ok(MbsyncOutput {
            status,
            stdout,
            stderr,
        }),
        None => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "mbsync did not finish within {timeout:?}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
            ),
        )),
    }
}

/// The `.mbsyncrc` for one account and one local tree.
pub fn render_config(account: &ImapAccount<'_>, maildir: &Path) -> String {
    let root = maildir.display();
    format!(
        "IMAPAccount remote\n\
         Host {host}\n\
         Port {port}\n\
         User {user}\n\
         Pass \"{password}\"\n\
         SSLType None\n\
         AuthMechs LOGIN\n\
         \n\
         IMAPStore remote\n\
         Account remote\n\
         \n\
         MaildirStore local\n\
         Path {root}/\n\
         Inbox {root}/INBOX\n\
         SubFolders Verbatim\n\
         \n\
         Channel sync\n\
         Far :remote:\n\
         Near :local:\n\
         Patterns *\n\
         Create Both\n\
         Expunge Both\n\
         SyncState *\n",
        host = account.addr.ip(),
        port = account.addr.port(),
        user = account.user,
        password = account.password,
    )
}

async fn read_all<R: tokio::io::AsyncRead + Unpin>(pipe: Option<R>) -> String {
    let mut bytes = Vec::new();
    if let Some(mut pipe) = pipe {
        let _ = pipe.read_to_end(&mut bytes).await;
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The directory of `folder` in a tree (`"INBOX"` or a `/`-separated name).
pub fn folder_path(root: &Path, folder: &str) -> PathBuf {
    folder
        .split('/')
        .fold(root.to_path_buf(), |path, part| path.join(part))
}

/// Creates `folder` (with `cur`, `new`, `tmp`) and returns its directory.
pub fn create_folder(root: &Path, folder: &str) -> io::Result<PathBuf> {
    let dir = folder_path(root, folder);
    for sub in ["cur", "new", "tmp"] {
        fs::create_dir_all(dir.join(sub))?;
    }
    Ok(dir)
}

/// A deterministic RFC 5322 message (LF line endings). Its identity is `folder` and
/// `index`; the body has at least `body_bytes` bytes of 76-column text.
pub fn sample_message(folder: &str, index: usize, body_bytes: usize) -> Vec<u8> {
    let slug: String = folder
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let mut text = format!(
        "From: Sender {index} <sender{index}@example.org>\n\
         To: Alice <alice@example.org>\n\
         Subject: Test message {index} in {folder}\n\
         Date: Mon, 1 Jan 2024 12:{minute:02}:00 +0000\n\
         Message-ID: <{slug}-{index}@coi-proxy.test>\n\
         MIME-Version: 1.0\n\
         Content-Type: text/plain; charset=utf-8\n\
         \n\
         Message {index} of folder {folder}.\n",
        minute = index % 60,
    );
    let mut line = 0usize;
    let body_start = text.len();
    while text.len() - body_start < body_bytes {
        // 75 characters + LF; varying content so every line differs.
        text.push_str(&format!(
            "{line:08} {:066}\n",
            (line * 7919 + index) % 1_000_003
        ));
        line += 1;
    }
    text.into_bytes()
}

/// The maildir flags `populate_maildir` gives message `index` (cycling through
/// none, Seen, Flagged+Seen, Replied+Seen, Draft).
pub fn sample_flags(index: usize) -> &'static str {
    ["", "S", "FS", "RS", "D"][index % 5]
}

/// Writes `count` messages into `folder` (created if needed). Message `i` is
/// `sample_message(folder, i, 200)` with `sample_flags(i)`; with `include_large` the last
/// one has a [`LARGE_MESSAGE_BYTES`] body instead. Directory times are then set two
/// seconds back, so mbsync does not pause for "recent directory modification".
pub fn populate_maildir(
    root: &Path,
    folder: &str,
    count: usize,
    include_large: bool,
) -> io::Result<()> {
    let dir = create_folder(root, folder)?;
    for index in 0..count {
        let body = if include_large && index + 1 == count {
            LARGE_MESSAGE_BYTES
        } else {
            200
        };
        let content = sample_message(folder, index, body);
        let name = format!(
            "1704110400.M{index}P1.coi-proxy-test:2,{}",
            sample_flags(index)
        );
        // Write in tmp/, then move into cur/, as maildir writers do.
        let tmp = dir.join("tmp").join(&name);
        fs::write(&tmp, &content)?;
        fs::rename(&tmp, dir.join("cur").join(&name))?;
    }
    let past = SystemTime::now() - Duration::from_secs(2);
    for sub in ["cur", "new", "tmp"] {
        fs::File::open(dir.join(sub))?.set_modified(past)?;
    }
    Ok(())
}

/// One message in a [`MaildirListing`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct MessageEntry {
    /// FNV-1a 64 of the file content without `X-TUID:` header lines, in hex.
    pub hash: String,
    /// Size of that content.
    pub size: u64,
    /// Maildir flags from the file name's `:2,` info part, sorted (`""` for none).
    pub flags: String,
}

/// A comparable summary of a Maildir tree: folder name (relative path with `/`, e.g.
/// `INBOX`, `Archive/2024`) to its messages, sorted. Folders without messages count.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MaildirListing {
    pub folders: BTreeMap<String, Vec<MessageEntry>>,
}

impl MaildirListing {
    /// Messages over all folders.
    pub fn message_count(&self) -> usize {
        self.folders.values().map(Vec::len).sum()
    }
}

/// Lists every maildir folder (a directory with `cur/`) under `root`. Files other than
/// messages in `cur/` and `new/` (mbsync state, `.uidvalidity`) are ignored.
pub fn canonical_listing(root: &Path) -> io::Result<MaildirListing> {
    let mut listing = MaildirListing::default();
    let mut queue = vec![root.to_path_buf()];
    while let Some(dir) = queue.pop() {
        if dir.join("cur").is_dir() {
            let name = dir
                .strip_prefix(root)
                .map_err(io::Error::other)?
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            let mut messages = Vec::new();
            for sub in ["cur", "new"] {
                for entry in fs::read_dir(dir.join(sub))? {
                    let entry = entry?;
                    if !entry.file_type()?.is_file() {
                        continue;
                    }
                    let content = without_tuid(&fs::read(entry.path())?);
                    messages.push(MessageEntry {
                        hash: format!("{:016x}", fnv1a64(&content)),
                        size: content.len() as u64,
                        flags: flags_of(&entry.file_name().to_string_lossy()),
                    });
                }
            }
            messages.sort();
            listing.folders.insert(name, messages);
        }
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name();
            if entry.file_type()?.is_dir() && !matches!(name.to_str(), Some("cur" | "new" | "tmp"))
            {
                queue.push(entry.path());
            }
        }
    }
    Ok(listing)
}

/// The message without mbsync's `X-TUID:` bookkeeping header. mbsync 1.4 adds it (a
/// transaction id) to every message it uploads, so it comes back on the way down; it is
/// not part of what was synchronised.
fn without_tuid(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len());
    let mut rest = message;
    let mut in_header = true;
    while !rest.is_empty() {
        let end = rest
            .iter()
            .position(|b| *b == b'\n')
            .map_or(rest.len(), |i| i + 1);
        let (line, tail) = rest.split_at(end);
        if in_header && (line == b"\n" || line == b"\r\n") {
            in_header = false;
        }
        if !(in_header && line.starts_with(b"X-TUID: ")) {
            out.extend_from_slice(line);
        }
        rest = tail;
    }
    out
}

/// Sorted maildir flags of a file name (`...:2,FS` → `FS`).
fn flags_of(file_name: &str) -> String {
    let mut flags: Vec<char> = file_name
        .rsplit_once(":2,")
        .map(|(_, flags)| flags.chars().filter(char::is_ascii_uppercase).collect())
        .unwrap_or_default();
    flags.sort_unstable();
    flags.into_iter().collect()
}

/// FNV-1a, 64 bit: deterministic across runs and toolchains (std's hasher is not
/// guaranteed to be), and no extra dependency.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
