//! A private, real Postfix for one test, on loopback, in a temporary directory.
//!
//! # Postfix settings an operator needs for coi-proxy
//!
//! The README copies this block. Everything else in the generated test configuration
//! (paths, ports, test domains, queue timings) is specific to the tests. The test
//! instance runs the same listener lines, with SASL only when asked to
//! ([`PostfixOptions::sasl`]; see "How the test instance is built").
//!
//! ```text
//! # --- master.cf ---
//! # A submission listener that only the proxy reaches (loopback). The proxy's 587/465
//! # fronts terminate TLS and relay AUTH, so this hop is plaintext; SASL stays as on
//! # your existing submission service (smtpd_sasl_type, smtpd_sasl_path).
//! #
//! # Why XCLIENT: every connection arrives from the proxy's address, and loopback is
//! # usually in mynetworks. Without XCLIENT each client would inherit that trust
//! # (permit_mynetworks: an open relay through the proxy, SECURITY-CASES.md §D case 31)
//! # and every client would share one address for anvil's rate limits. With XCLIENT
//! # the proxy hands over the real client address first, and Postfix judges, limits
//! # and logs that client. XCLIENT lets the peer claim any address, so authorize the
//! # proxy's address only.
//! 127.0.0.1:10587 inet n       -       y       -       -       smtpd
//!   -o syslog_name=postfix/coi-submission
//!   -o smtpd_authorized_xclient_hosts=127.0.0.1/32
//!   -o smtpd_tls_security_level=none
//!   -o smtpd_tls_auth_only=no
//!   -o smtpd_sasl_auth_enable=yes
//!   -o smtpd_relay_restrictions=permit_sasl_authenticated,reject_unauth_destination
//!
//! # --- main.cf ---
//! # SMTP AUTH through Dovecot: the proxy relays the client's AUTH PLAIN/LOGIN and
//! # Postfix checks it. Keep your existing settings; a Dovecot on another host (or in
//! # another container) needs an inet path, e.g. inet:127.0.0.1:12345, and on the
//! # Dovecot side: service auth { inet_listener { address = ... port = 12345 } }.
//! smtpd_sasl_type = dovecot
//! smtpd_sasl_path = private/auth
//! broken_sasl_auth_clients = no
//!
//! # If the proxy also fronts port 25 (MX), the port 25 listener needs the same
//! # authorization (or add it there with -o, like above):
//! # smtpd_authorized_xclient_hosts = 127.0.0.1/32
//!
//! # Local delivery through the proxy's delivery hook (LMTP), which relays to Dovecot's
//! # LMTP and answers each recipient only after Dovecot's own reply.
//! # Virtual mailbox domains (virtual_mailbox_domains):
//! virtual_transport = lmtp:inet:127.0.0.1:10026
//! # Domains in mydestination instead:
//! # mailbox_transport = lmtp:inet:127.0.0.1:10026
//! ```
//!
//! The proxy speaks to the submission listener in this order: greeting, `EHLO`,
//! `XCLIENT ADDR=<client ip> ...` (Postfix answers with a fresh `220` greeting and
//! forgets the session), `EHLO` again, then `AUTH`, `MAIL`, ... as the client sends them.
//! After `XCLIENT ADDR=` with a non-local address, `permit_mynetworks` no longer
//! applies: relaying needs `permit_sasl_authenticated` (tested here: a relay attempt
//! after XCLIENT is refused with `554 5.7.1`).
//!
//! # How the test instance is built
//!
//! Everything lives under a fresh directory `/tmp/coi-postfix-XXXX`: `conf/`
//! (`main.cf`, `master.cf`, `transport`), `queue/` (`queue_directory`), `data/`
//! (`data_directory`), `maillog` (`maillog_file`, written by the `postlog` service) and
//! `postfix.stderr`. `postfix -c <dir>/conf start-fg` runs as a child of the test
//! process: `postfix` execs `postfix-script`, which runs `master -s` as its child (only
//! as pid 1 would it exec the master). `master -s` stays in the foreground but makes
//! itself a session and process group leader, so its process group is exactly this
//! instance. Two things keep a start at about 40 ms instead of 2 s:
//! - The configuration files are dated a minute back. Postfix treats a file changed
//!   within the last second as still being edited and re-reads it every 300 ms until
//!   it is older.
//! - The queue directories are created here as `post-install create-missing` would,
//!   and a `quick-start` file in the queue tells `postfix-script` to skip its
//!   installation checks (post-install, postsuper, a dozen `find`s).
//!
//! Listeners (127.0.0.1, free ports, no TLS):
//! - "MX" ([`Postfix::mx_addr`]): receives for the instance's domain only; relaying is
//!   refused even from loopback (no `permit_mynetworks`), like a real port 25. Never
//!   offers AUTH.
//! - "submission" ([`Postfix::submission_addr`]): without SASL (the default) it relays
//!   for `mynetworks = 127.0.0.0/8`. With [`PostfixOptions::sasl`] it runs the
//!   operator's lines above: AUTH PLAIN and LOGIN, checked by the test Dovecot's auth
//!   listener (`smtpd_sasl_path = inet:127.0.0.1:<port>`, from
//!   [`Dovecot::auth_addr`](super::dovecot::Dovecot::auth_addr)), in plaintext
//!   (`smtpd_tls_auth_only = no`: the proxy terminates TLS), and it relays for
//!   authenticated clients only: `permit_sasl_authenticated, reject_unauth_destination`,
//!   so a loopback client without AUTH gets `554 5.7.1 Relay access denied` for a
//!   foreign recipient.
//!
//! Both accept `XCLIENT` from 127.0.0.0/8. Mail for the domain (a virtual mailbox
//! domain, every local part accepted) goes to [`PostfixOptions::lmtp`]; the Dovecot
//! support's LMTP strips the domain, so `alice@a.example` is Dovecot's `alice`. Mail
//! for another test domain follows [`PostfixOptions::relay_routes`]
//! (`transport_maps = texthash:...`, `smtp:[127.0.0.1]:<port>`); anything else bounces
//! at once (`default_transport = error`), and no DNS is used. Each instance's
//! `myhostname` is `mx.<domain>`: Postfix refuses to relay to a server that greets with
//! its own name ("loops back to myself"), so two instances must not share a domain.
//! Retries are fast (`queue_run_delay` and `minimal_backoff_time` 1 s,
//! `maximal_backoff_time` 5 s) and `message_size_limit` is 200 MiB.
//!
//! Running as root is required: `postfix start-fg` refuses other users, and the master
//! runs the daemons as `mail_owner = postfix` with `setgid_group = postdrop` (both
//! created by the Debian package). The chroot column of master.cf is `n` everywhere.
//! The directory is world-traversable (0755; `tempfile` creates it 0700) because the
//! daemons running as `postfix` read the configuration and work in the queue.
//! Postfix logs to syslog by default; here `maillog_file` points into the directory,
//! which needs `maillog_file_prefixes` to allow it (default: `/var, /dev/stdout`) and a
//! `postlog unix-dgram` service in master.cf (postfix-script refuses to start without).
//!
//! Stopping: SIGTERM to our master (the documented `postfix stop` does the same: the
//! master signals its process group and exits), then SIGKILL to whatever of its
//! process group is left after [`STOP_GRACE`]. Daemons that outlive the master are
//! reparented to init; in containers whose init does not reap, they stay `<defunct>`
//! (zombies use no resources and are not counted as running here).
//!
//! Debugging: with `COI_TEST_KEEP_POSTFIX=1` (and `--nocapture`) the directory is kept
//! and its path printed.
//!
//! Limits: if the test process is killed outright (SIGKILL, abort), `Drop` does not run
//! and the master keeps running in its own session (Ctrl-C does not reach it either);
//! `ps` shows it as `/usr/lib/postfix/sbin/master -s`, without its directory. Its
//! directory stays too: `postfix -c /tmp/coi-postfix-XXXX/conf stop` stops it.

#![allow(dead_code)]

use std::fs;
use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime};

use tempfile::TempDir;

use super::process::{
    check_alive, on_free_ports, probe_greeting, process_title, send_signal, unique_token,
};

/// How long [`Postfix::start`] waits for both listeners to greet.
pub const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a graceful stop (SIGTERM) may take before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(5);
/// Upper bound for one Postfix command (`postqueue`, `postfix`).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// Poll interval while waiting for processes, ports, the queue or the log.
const POLL: Duration = Duration::from_millis(10);
/// Set this environment variable to keep the instance directory (configuration, queue,
/// log) after the test; its path is printed to stderr.
pub const KEEP_ENV: &str = "COI_TEST_KEEP_POSTFIX";
/// `message_size_limit` of the test instances (the 100 MB message of issue 3 fits).
pub const MESSAGE_SIZE_LIMIT: u64 = 200 * 1024 * 1024;

/// What a test instance serves and where it delivers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PostfixOptions {
    /// The instance's mail domain (e.g. `a.example`); `myhostname` is `mx.<domain>`.
    pub domain: String,
    /// Where mail for [`domain`](Self::domain) goes by LMTP: Dovecot's LMTP, or the
    /// proxy's delivery hook in front of it.
    pub lmtp: SocketAddr,
    /// Other test domains and the SMTP server that receives their mail (another
    /// instance's [`Postfix::mx_addr`], or a proxy's MX front).
    pub relay_routes: Vec<(String, SocketAddr)>,
    /// SMTP AUTH on the submission listener, checked by the Dovecot auth listener at
    /// this address (`None`: no AUTH, relaying for loopback). See [`Self::sasl`].
    pub sasl: Option<SocketAddr>,
}

impl PostfixOptions {
    /// A domain delivering to `lmtp`, without relay routes.
    pub fn new(domain: &str, lmtp: SocketAddr) -> PostfixOptions {
        PostfixOptions {
            domain: domain.to_owned(),
            lmtp,
            relay_routes: Vec::new(),
            sasl: None,
        }
    }

    /// Turns on SMTP AUTH (PLAIN, LOGIN; no TLS needed) on the submission listener,
    /// checked by the Dovecot auth listener at `auth_addr`
    /// ([`Dovecot::auth_addr`](super::dovecot::Dovecot::auth_addr)), and lets only
    /// authenticated clients relay there: loopback is no longer trusted to relay.
    pub fn sasl(mut self, auth_addr: SocketAddr) -> PostfixOptions {
        self.sasl = Some(auth_addr);
        self
    }

    /// Adds a relay route: mail for `domain` goes to the SMTP server at `addr`.
    pub fn route(mut self, domain: &str, addr: SocketAddr) -> PostfixOptions {
        self.relay_routes.push((domain.to_owned(), addr));
        self
    }
}

/// A running private Postfix. Dropping it stops its processes (SIGTERM, then SIGKILL
/// after a bounded wait) and removes the directory (unless [`KEEP_ENV`] is set).
#[derive(Debug)]
pub struct Postfix {
    /// `postfix-script start-fg` (the `postfix` command execs it).
    child: Option<Child>,
    /// The master daemon (a child of `child`); also the instance's process group id.
    master: Option<u32>,
    options: PostfixOptions,
    mx_addr: SocketAddr,
    submission_addr: SocketAddr,
    /// Unique text in the SMTP greeting, so readiness probes cannot mistake another
    /// server that grabbed our port for this one.
    greeting: String,
    /// Declared last: the directory is removed after the processes are gone.
    dir: TempDir,
}

impl Postfix {
    /// Starts a fresh instance and waits (at most [`READY_TIMEOUT`]) until its MX and
    /// submission listeners greet. Blocking; it typically takes about 40 ms.
    ///
    /// Errors include the Postfix log when the process exits early or never greets.
    pub fn start(options: PostfixOptions) -> io::Result<Postfix> {
        require_root()?;
        let binary = postfix_binary("postfix")?;
        on_free_ports(|mx_port, submission_port| {
            let mut postfix = Postfix::prepare(options.clone(), mx_port, submission_port)?;
            postfix.spawn(&binary)?;
            Ok(postfix)
        })
    }

    /// Stops the instance gracefully (SIGTERM to the master, which stops its daemons),
    /// falling back to SIGKILL. Configuration, queue and log stay until drop, so the
    /// instance can be [`restart`](Self::restart)ed with its queued mail. Does nothing
    /// when already stopped.
    pub fn stop(&mut self) -> io::Result<()> {
        self.terminate(true)
    }

    /// Kills the instance abruptly (SIGKILL to the master, then to its process group):
    /// open SMTP sessions are cut without a reply, like a crashed MTA.
    pub fn kill(&mut self) -> io::Result<()> {
        self.terminate(false)
    }

    /// Starts a stopped instance again with the same configuration, ports and queue.
    /// Deferred mail waits for its backoff; call [`flush`](Self::flush) to retry now.
    pub fn restart(&mut self) -> io::Result<()> {
        self.terminate(true)?;
        let binary = postfix_binary("postfix")?;
        self.spawn(&binary)
    }

    /// Appends `lines` to the instance's `main.cf` (later settings win) and restarts it,
    /// keeping its ports and queue: for a test or bench that needs one Postfix rule more.
    pub fn add_to_main_cf(&mut self, lines: &str) -> io::Result<()> {
        let main_cf = self.config_dir().join("main.cf");
        let mut text = fs::read_to_string(&main_cf)?;
        text.push('\n');
        text.push_str(lines);
        text.push('\n');
        write_file(&main_cf, &text, 0o644)?;
        self.restart()
    }

    /// Replaces the relay routes. A running instance is restarted (the daemons read
    /// the transport table when they start), which keeps its ports and queue.
    /// Needed when two instances route to each other: start B, start A with a route
    /// to B, then give B its route to A.
    pub fn set_relay_routes(&mut self, routes: Vec<(String, SocketAddr)>) -> io::Result<()> {
        self.options.relay_routes = routes;
        write_file(
            &self.config_dir().join("transport"),
            &render_transport(&self.options),
            0o644,
        )?;
        if self.is_running() {
            self.restart()?;
        }
        Ok(())
    }

    /// Whether the instance is (still) running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The "port 25" listener (127.0.0.1): mail for [`domain`](Self::domain) only.
    pub fn mx_addr(&self) -> SocketAddr {
        self.mx_addr
    }

    /// The "port 587" listener (127.0.0.1): accepts XCLIENT from 127.0.0.0/8; relays
    /// for 127.0.0.0/8, or with [`PostfixOptions::sasl`] for authenticated clients only.
    pub fn submission_addr(&self) -> SocketAddr {
        self.submission_addr
    }

    /// The instance's mail domain.
    pub fn domain(&self) -> &str {
        &self.options.domain
    }

    /// `myhostname`, the name in the greeting (`mx.<domain>`).
    pub fn hostname(&self) -> String {
        format!("mx.{}", self.options.domain)
    }

    /// The options the instance was started with (with the current relay routes).
    pub fn options(&self) -> &PostfixOptions {
        &self.options
    }

    /// The master's pid while running; also the process group id of every process of
    /// the instance.
    pub fn master_pid(&self) -> Option<u32> {
        self.master
    }

    /// The running processes of the instance: the master and its daemons (none when
    /// stopped).
    pub fn processes(&self) -> Vec<u32> {
        self.master.map(live_group_members).unwrap_or_default()
    }

    /// The instance's private directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `config_directory` (`main.cf`, `master.cf`, `transport`), the `-c` argument of
    /// every Postfix command for this instance.
    pub fn config_dir(&self) -> PathBuf {
        self.dir().join("conf")
    }

    /// `queue_directory`.
    pub fn queue_dir(&self) -> PathBuf {
        self.dir().join("queue")
    }

    /// `maillog_file`.
    pub fn log_path(&self) -> PathBuf {
        self.dir().join("maillog")
    }

    /// The mail log followed by whatever the start command wrote to stdout/stderr.
    pub fn log_contents(&self) -> String {
        let mut text = fs::read_to_string(self.log_path()).unwrap_or_default();
        let stderr = fs::read_to_string(self.dir().join("postfix.stderr")).unwrap_or_default();
        if !stderr.trim().is_empty() {
            text.push_str("--- postfix stdout/stderr ---\n");
            text.push_str(&stderr);
        }
        text
    }

    /// Waits until a line of the mail log contains `needle` and returns that line.
    /// The log is written asynchronously (by the `postlog` service), so a test that
    /// expects a log line must poll for it.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> io::Result<String> {
        self.wait_for_log_line(&[needle], timeout)
    }

    /// Waits until one line of the mail log contains every one of `needles` (e.g. the
    /// queue id and `status=sent`: a message may be deferred first) and returns it.
    pub fn wait_for_log_line(&self, needles: &[&str], timeout: Duration) -> io::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let log = fs::read_to_string(self.log_path()).unwrap_or_default();
            if let Some(line) = log
                .lines()
                .find(|line| needles.iter().all(|needle| line.contains(needle)))
            {
                return Ok(line.to_owned());
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "no log line with all of {needles:?} within {timeout:?}\n\
                         --- postfix log ---\n{}",
                        self.log_contents()
                    ),
                ));
            }
            std::thread::sleep(POLL);
        }
    }

    /// `postqueue -p`: the queue listing as text (with delay reasons), or
    /// `Mail queue is empty`.
    pub fn mailq(&self) -> io::Result<String> {
        self.postqueue("-p")
    }

    /// The ids of all queued messages (`postqueue -j`), in every queue (incoming,
    /// active, deferred, hold).
    pub fn queue_ids(&self) -> io::Result<Vec<String>> {
        let output = self.postqueue("-j")?;
        Ok(output.lines().filter_map(json_queue_id).collect())
    }

    /// `postqueue -f`: attempts to deliver all queued mail now.
    pub fn flush(&self) -> io::Result<()> {
        self.postqueue("-f").map(drop)
    }

    /// Waits until the queue is empty (every message delivered or bounced).
    pub fn wait_queue_empty(&self, timeout: Duration) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.queue_ids()?.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "queue not empty after {timeout:?}:\n{}",
                        self.mailq().unwrap_or_default()
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs `postqueue -c <conf> <arg>` and returns its stdout. Works while stopped
    /// too (as root it then reads the queue directly).
    fn postqueue(&self, arg: &str) -> io::Result<String> {
        let mut command = Command::new(postfix_binary("postqueue")?);
        command.arg("-c").arg(self.config_dir()).arg(arg);
        run_command(command, &self.dir().join("postqueue"), COMMAND_TIMEOUT)
    }

    /// Creates the directory tree and configuration.
    fn prepare(options: PostfixOptions, mx_port: u16, submission_port: u16) -> io::Result<Postfix> {
        validate_domain(&options.domain)?;
        for (domain, _) in &options.relay_routes {
            validate_domain(domain)?;
        }
        let dir = tempfile::Builder::new()
            .prefix("coi-postfix-")
            .tempdir_in("/tmp")?;
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))?;
        let root = dir.path();
        fs::create_dir(root.join("conf"))?;
        fs::set_permissions(root.join("conf"), fs::Permissions::from_mode(0o755))?;
        create_queue(root)?;

        let greeting = format!("coi-test-postfix {}", unique_token());
        let mx_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, mx_port));
        let submission_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, submission_port));
        let conf = root.join("conf");
        write_file(
            &conf.join("main.cf"),
            &render_main_cf(root, &options, &greeting),
            0o644,
        )?;
        write_file(
            &conf.join("master.cf"),
            &render_master_cf(mx_port, submission_port, options.sasl.is_some()),
            0o644,
        )?;
        write_file(&conf.join("transport"), &render_transport(&options), 0o644)?;

        Ok(Postfix {
            child: None,
            master: None,
            options,
            mx_addr,
            submission_addr,
            greeting,
            dir,
        })
    }

    /// Runs `postfix -c <conf> start-fg` and waits for both greetings.
    fn spawn(&mut self, binary: &Path) -> io::Result<()> {
        // Skip postfix-script's installation checks (post-install create-missing,
        // postsuper, a dozen finds: ~0.15 s, more on a busy machine); the directories
        // were made by create_queue. postfix-script removes the marker.
        write_file(&self.queue_dir().join("quick-start"), "", 0o644)?;
        let output = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir().join("postfix.stderr"))?;
        let child = Command::new(binary)
            .arg("-c")
            .arg(self.config_dir())
            .arg("start-fg")
            .stdin(Stdio::null())
            .stdout(output.try_clone()?)
            .stderr(output)
            .spawn()?;
        self.child = Some(child);
        self.master = None;
        match self.wait_ready(Instant::now() + READY_TIMEOUT) {
            Ok(()) => Ok(()),
            Err(e) => {
                let _ = self.terminate(false);
                let log = self.log_contents();
                let kind = if log.contains("Address already in use") {
                    io::ErrorKind::AddrInUse
                } else {
                    e.kind()
                };
                Err(io::Error::new(
                    kind,
                    format!("postfix did not start: {e}\n--- postfix log ---\n{log}"),
                ))
            }
        }
    }

    /// Polls both listeners until each sends our greeting, then finds the master.
    fn wait_ready(&mut self, deadline: Instant) -> io::Result<()> {
        for addr in [self.mx_addr, self.submission_addr] {
            loop {
                self.check_alive()?;
                if Instant::now() >= deadline {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no greeting on {addr} within {READY_TIMEOUT:?}"),
                    ));
                }
                match probe_greeting(addr, deadline, Some(b"QUIT\r\n"))? {
                    Some(line) if line.starts_with("220 ") && line.contains(&self.greeting) => {
                        break;
                    }
                    Some(line) => {
                        // Someone else answers on our port: a clash, retry elsewhere.
                        return Err(io::Error::new(
                            io::ErrorKind::AddrInUse,
                            format!("unexpected greeting on {addr}: {line:?}"),
                        ));
                    }
                    None => std::thread::sleep(POLL),
                }
            }
        }
        self.check_alive()?;
        let shell = self.child.as_ref().map(Child::id).unwrap_or_default();
        self.master = find_master(shell);
        if self.master.is_none() {
            return Err(io::Error::other(format!(
                "postfix greets but no master process below pid {shell}"
            )));
        }
        Ok(())
    }

    /// An error when the start command has exited.
    fn check_alive(&mut self) -> io::Result<()> {
        check_alive(&mut self.child, "postfix")
    }

    /// Stops the master we started and every process of its process group.
    ///
    /// Graceful: SIGTERM to the master; it sends SIGTERM to its process group and
    /// exits, and `postfix-script` (our child) exits after it. Then a bounded wait,
    /// then SIGKILL. Abrupt: SIGKILL to the master first (so it cannot spawn anything
    /// more), then to the rest of its process group.
    fn terminate(&mut self, graceful: bool) -> io::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        // The master of a failed start may not be known yet.
        let master = self.master.take().or_else(|| find_master(child.id()));
        if let Some(master) = master {
            // While the master lives, it is our child's child (the script waits for
            // it); checking that keeps a recycled pid from being signalled.
            let ours = children(child.id()).contains(&master);
            if graceful && ours {
                send_signal("TERM", &[master]);
                let deadline = Instant::now() + STOP_GRACE;
                while !(exited(&mut child)? && live_group_members(master).is_empty())
                    && Instant::now() < deadline
                {
                    std::thread::sleep(POLL);
                }
            }
            let deadline = Instant::now() + STOP_GRACE;
            loop {
                let mut alive = live_group_members(master);
                if !ours {
                    alive.retain(|pid| *pid != master);
                }
                if alive.is_empty() || Instant::now() >= deadline {
                    break;
                }
                // The master first (so it cannot spawn more), then its daemons.
                if alive.contains(&master) {
                    send_signal("KILL", &[master]);
                }
                send_signal("KILL", &alive);
                std::thread::sleep(POLL);
            }
        }
        if !exited(&mut child)? {
            child.kill()?;
        }
        child.wait()?;
        Ok(())
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = self.terminate(true);
        if std::env::var_os(KEEP_ENV).is_some() {
            self.dir.disable_cleanup(true);
            eprintln!("{KEEP_ENV}: kept {}", self.dir().display());
        }
    }
}

/// Whether `child` has exited (reaping it if so).
fn exited(child: &mut Child) -> io::Result<bool> {
    Ok(child.try_wait()?.is_some())
}

/// The complete `main.cf` of a test instance.
fn render_main_cf(root: &Path, options: &PostfixOptions, greeting: &str) -> String {
    let root = root.display();
    let domain = &options.domain;
    let lmtp = options.lmtp;
    // Empty without SASL: the file is then exactly as before SASL existed.
    let sasl = match options.sasl {
        None => String::new(),
        Some(auth) => format!(
            "\n# SMTP AUTH (enabled on the submission listener in master.cf), checked by\n\
             # the test Dovecot's auth listener.\n\
             smtpd_sasl_type = dovecot\n\
             smtpd_sasl_path = inet:{ip}:{port}\n\
             broken_sasl_auth_clients = no",
            ip = auth.ip(),
            port = auth.port(),
        ),
    };
    format!(
        r#"# Generated by tests/support/postfix.rs for one test. Do not edit.
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/data
mail_owner = postfix
setgid_group = postdrop

# Logging into the instance directory (postlog service in master.cf).
maillog_file = {root}/maillog
maillog_file_prefixes = {root}

# Identity. A distinct myhostname per domain: Postfix refuses to relay to a server
# that greets with its own name.
myhostname = mx.{domain}
mydomain = {domain}
myorigin = {domain}
smtpd_banner = $myhostname ESMTP {greeting}
biff = no
append_dot_mydomain = no

# Loopback only, IPv4 only, no DNS at all.
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
smtp_dns_support_level = disabled
smtp_host_lookup = native
lmtp_host_lookup = native
smtpd_peername_lookup = no

# Trust: loopback relays on the submission listener (the MX listener overrides the
# relay restrictions in master.cf). XCLIENT from loopback, like from a proxy.
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_authorized_xclient_hosts = 127.0.0.0/8
smtpd_tls_security_level = none
smtp_tls_security_level = none
{sasl}
# The domain: every local part accepted, delivered by LMTP (the Dovecot support's
# LMTP strips the domain).
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
relay_domains =
virtual_mailbox_domains = {domain}
virtual_transport = lmtp:inet:{lmtp}

# Other test domains: explicit routes; everything else bounces without DNS.
transport_maps = texthash:{root}/conf/transport
default_transport = error:5.1.2 no route outside the test domains

# Fast retries and short timeouts for tests.
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 5s
smtp_connect_timeout = 5s
lmtp_connect_timeout = 5s
message_size_limit = {MESSAGE_SIZE_LIMIT}
"#
    )
}

/// The complete `master.cf`: the two listeners plus the services Postfix needs, all
/// without chroot. With `sasl`, the submission listener takes AUTH and relays for
/// authenticated clients only.
fn render_master_cf(mx_port: u16, submission_port: u16, sasl: bool) -> String {
    let submission = if sasl {
        format!(
            "# \"Submission\": SMTP AUTH through Dovecot, in plaintext (the proxy terminates\n\
             # TLS); relays for authenticated clients only, loopback gets no trust.\n\
             127.0.0.1:{submission_port} inet n - n - - smtpd\n  \
               -o syslog_name=postfix/submission\n  \
               -o smtpd_sasl_auth_enable=yes\n  \
               -o smtpd_tls_auth_only=no\n  \
               -o smtpd_relay_restrictions=permit_sasl_authenticated,reject_unauth_destination"
        )
    } else {
        // Exactly the lines from before SASL existed.
        format!(
            "# \"Submission\": relays for mynetworks; like the proxy's backend listener \
             (no SASL).\n\
             127.0.0.1:{submission_port} inet n - n - - smtpd\n  \
               -o syslog_name=postfix/submission"
        )
    };
    format!(
        r#"# Generated by tests/support/postfix.rs for one test. Do not edit.
# service type  private unpriv  chroot  wakeup  maxproc command + args
# "MX": receives for the domain only, no relaying even from loopback.
127.0.0.1:{mx_port} inet n - n - - smtpd
  -o syslog_name=postfix/mx
  -o smtpd_relay_restrictions=reject_unauth_destination
{submission}
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"#
    )
}

/// The `transport` table (texthash: read as is, no postmap).
fn render_transport(options: &PostfixOptions) -> String {
    let mut text = String::from("# Generated by tests/support/postfix.rs. Relay routes.\n");
    for (domain, addr) in &options.relay_routes {
        text.push_str(&format!("{domain} smtp:[{}]:{}\n", addr.ip(), addr.port()));
    }
    text
}

/// Test domains end up in configuration files: keep them to plain DNS names.
fn validate_domain(domain: &str) -> io::Result<()> {
    let ok = !domain.is_empty()
        && domain
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("not a plain test domain: {domain:?}"),
        ))
    }
}

/// `"queue_id": "ABC123"` from one line of `postqueue -j`.
fn json_queue_id(line: &str) -> Option<String> {
    let rest = &line[line.find("\"queue_id\"")? + "\"queue_id\"".len()..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    let rest = rest.strip_prefix('"')?;
    Some(rest[..rest.find('"')?].to_owned())
}

/// The queue and data directories as `post-install create-missing` makes them (Postfix
/// 3.7, Debian): `queue_directory` and `pid/` root-owned, the queues owned by
/// `mail_owner`, `maildrop`/`public` group `setgid_group`, `data_directory` private to
/// `mail_owner`.
fn create_queue(root: &Path) -> io::Result<()> {
    let (owner_uid, _) = passwd_ids("postfix")?;
    let postdrop_gid = group_id("postdrop")?;
    let queue = root.join("queue");
    let mut dirs: Vec<(PathBuf, u32, u32, u32)> = vec![
        (queue.clone(), 0, 0, 0o755),
        (queue.join("pid"), 0, 0, 0o755),
        (root.join("data"), owner_uid, 0, 0o700),
        (queue.join("maildrop"), owner_uid, postdrop_gid, 0o730),
        (queue.join("public"), owner_uid, postdrop_gid, 0o710),
    ];
    for name in [
        "active", "bounce", "corrupt", "defer", "deferred", "flush", "hold", "incoming", "private",
        "saved", "trace",
    ] {
        dirs.push((queue.join(name), owner_uid, 0, 0o700));
    }
    for (path, uid, gid, mode) in dirs {
        fs::create_dir(&path)?;
        std::os::unix::fs::chown(&path, Some(uid), Some(gid))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// Uid and gid of a system user from /etc/passwd.
fn passwd_ids(user: &str) -> io::Result<(u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd")?;
    passwd
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.len() >= 4 && fields[0] == user)
        .and_then(|fields| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
        .ok_or_else(|| {
            io::Error::other(format!(
                "system user `{user}` not found in /etc/passwd (install postfix)"
            ))
        })
}

/// Gid of a group from /etc/group.
fn group_id(group: &str) -> io::Result<u32> {
    let groups = fs::read_to_string("/etc/group")?;
    groups
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.len() >= 3 && fields[0] == group)
        .and_then(|fields| fields[2].parse().ok())
        .ok_or_else(|| {
            io::Error::other(format!(
                "group `{group}` not found in /etc/group (install postfix)"
            ))
        })
}

/// Postfix refuses to start (and to run a master) for other users than root.
fn require_root() -> io::Result<()> {
    // `/proc/self` is owned by the effective uid (no libc; unsafe is forbidden).
    if fs::metadata("/proc/self")?.uid() == 0 {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "the Postfix test support needs root (postfix start-fg runs only as root); \
             run the tests as root, e.g. in the CI container",
        ))
    }
}

/// A Postfix command (in /usr/sbin, which is not on every user's PATH).
fn postfix_binary(name: &str) -> io::Result<PathBuf> {
    for dir in ["/usr/sbin", "/usr/local/sbin"] {
        let candidate = Path::new(dir).join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    let found = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file());
    found.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{name} is not installed (postfix); run scripts/install-deps.sh"),
        )
    })
}

/// Runs `command` with stdout/stderr in files next to `base` (no pipe can fill up),
/// bounded by `timeout`. Returns stdout; a failure carries stderr.
fn run_command(mut command: Command, base: &Path, timeout: Duration) -> io::Result<String> {
    let out_path = base.with_extension("out");
    let err_path = base.with_extension("err");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out_path)?)
        .stderr(fs::File::create(&err_path)?)
        .spawn()?;
    let deadline = Instant::now() + timeout;
    let status: ExitStatus = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{command:?} did not finish within {timeout:?}"),
            ));
        }
        std::thread::sleep(POLL);
    };
    let stdout = fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = fs::read_to_string(&err_path).unwrap_or_default();
    if status.success() {
        Ok(stdout)
    } else {
        Err(io::Error::other(format!(
            "{command:?} failed ({status}): {stderr}{stdout}"
        )))
    }
}

/// The master daemon below our `postfix-script` child: the child whose program is
/// `.../master` and that leads its own process group.
fn find_master(shell: u32) -> Option<u32> {
    children(shell).into_iter().find(|pid| {
        let is_master = process_title(*pid)
            .is_some_and(|title| title.rsplit('/').next().is_some_and(|p| p == "master"));
        is_master && process_stat(*pid).is_some_and(|stat| stat.pgrp == *pid)
    })
}

/// The direct children of `pid`, from `/proc/<pid>/task/*/children`.
fn children(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return found;
    };
    for task in tasks.flatten() {
        let text = fs::read_to_string(task.path().join("children")).unwrap_or_default();
        found.extend(
            text.split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok()),
        );
    }
    found
}

/// The processes of process group `pgid` that are alive (zombies excluded). A process
/// group id is not reused while any member exists, so this never names a stranger.
pub fn live_group_members(pgid: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| process_stat(*pid).is_some_and(|stat| stat.pgrp == pgid && stat.state != 'Z'))
        .collect()
}

/// Whether `pid` is a live (non-zombie) process.
pub fn process_alive(pid: u32) -> bool {
    process_stat(pid).is_some_and(|stat| stat.state != 'Z')
}

/// The fields of `/proc/<pid>/stat` this module needs.
struct ProcStat {
    state: char,
    pgrp: u32,
}

fn process_stat(pid: u32) -> Option<ProcStat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid pgrp ...": comm may contain spaces and parentheses.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some(ProcStat { state, pgrp })
}

/// Writes `text` to a file (created or truncated) with `mode`, dated one minute back.
///
/// Postfix reads a configuration or table file that changed within the last second
/// as "being edited": it re-reads it every 300 ms until it is older (`dict_load_file`),
/// which made every start of a fresh instance take about 1.8 s.
fn write_file(path: &Path, text: &str, mode: u32) -> io::Result<()> {
    let mut file = fs::File::create(path)?;
    file.write_all(text.as_bytes())?;
    file.set_permissions(fs::Permissions::from_mode(mode))?;
    file.set_modified(SystemTime::now() - Duration::from_secs(60))?;
    Ok(())
}

/// A tiny async SMTP client for tests, on [`super::io::LineClient`]: every step is
/// bounded by [`super::io::STEP`].
pub mod smtp {
    use std::io;
    use std::net::SocketAddr;

    use base64::engine::general_purpose::STANDARD as BASE64;
    use base64::Engine as _;

    use super::super::io::LineClient;

    /// One SMTP reply: the code and the text of every line (without `250-`/`250 `).
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct Reply {
        pub code: u16,
        pub lines: Vec<String>,
    }

    impl Reply {
        /// All lines joined, for messages and `contains` checks.
        pub fn text(&self) -> String {
            self.lines.join("\n")
        }

        /// The queue id of `250 2.0.0 Ok: queued as ABC123`.
        pub fn queue_id(&self) -> Option<String> {
            let last = self.lines.last()?;
            let id = last.split("queued as ").nth(1)?.split_whitespace().next()?;
            Some(id.to_owned())
        }

        /// EHLO keywords (every line but the first), upper-cased first word.
        pub fn ehlo_keywords(&self) -> Vec<String> {
            self.lines
                .iter()
                .skip(1)
                .filter_map(|line| line.split_whitespace().next())
                .map(str::to_ascii_uppercase)
                .collect()
        }
    }

    /// Reads one (possibly multi-line) reply.
    pub async fn read_reply(client: &mut LineClient) -> io::Result<Reply> {
        let mut lines = Vec::new();
        loop {
            let line = client.read_line().await?;
            let bad = || {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("not an SMTP reply line: {line:?}"),
                )
            };
            let code: u16 = line.get(..3).and_then(|c| c.parse().ok()).ok_or_else(bad)?;
            let separator = line.as_bytes().get(3).copied();
            lines.push(line.get(4..).unwrap_or("").to_owned());
            match separator {
                Some(b'-') => continue,
                Some(b' ') | None => return Ok(Reply { code, lines }),
                Some(_) => return Err(bad()),
            }
        }
    }

    /// Sends one command line and reads its reply.
    pub async fn command(client: &mut LineClient, line: &str) -> io::Result<Reply> {
        client.write_line(line).await?;
        read_reply(client).await
    }

    /// Sends a command and fails unless the reply code is `want`.
    pub async fn expect(client: &mut LineClient, line: &str, want: u16) -> io::Result<Reply> {
        let reply = command(client, line).await?;
        if reply.code == want {
            Ok(reply)
        } else {
            Err(io::Error::other(format!(
                "{line:?}: expected {want}, got {} {}",
                reply.code,
                reply.text()
            )))
        }
    }

    /// Connects and reads the 220 greeting.
    pub async fn connect(addr: SocketAddr) -> io::Result<LineClient> {
        let mut client = LineClient::connect(addr).await?;
        let greeting = read_reply(&mut client).await?;
        if greeting.code != 220 {
            return Err(io::Error::other(format!(
                "greeting from {addr}: {} {}",
                greeting.code,
                greeting.text()
            )));
        }
        Ok(client)
    }

    /// `AUTH PLAIN <initial response>` for `user` (empty authzid) and returns the
    /// final reply as it is: `235` for good credentials, `535` for bad ones.
    pub async fn auth_plain(
        client: &mut LineClient,
        user: &str,
        password: &str,
    ) -> io::Result<Reply> {
        command(
            client,
            &format!("AUTH PLAIN {}", plain_response("", user, password)),
        )
        .await
    }

    /// `AUTH LOGIN`, then the user name and the password, each after its `334`
    /// challenge. Returns the final reply as it is (`235`, `535`), or the first reply
    /// that is not the expected challenge.
    pub async fn auth_login(
        client: &mut LineClient,
        user: &str,
        password: &str,
    ) -> io::Result<Reply> {
        let reply = command(client, "AUTH LOGIN").await?;
        if !is_challenge(&reply, "Username:") {
            return Ok(reply);
        }
        let reply = command(client, &BASE64.encode(user)).await?;
        if !is_challenge(&reply, "Password:") {
            return Ok(reply);
        }
        command(client, &BASE64.encode(password)).await
    }

    /// The SASL PLAIN response `authzid NUL authcid NUL password`, base64-encoded.
    pub fn plain_response(authzid: &str, authcid: &str, password: &str) -> String {
        BASE64.encode(format!("{authzid}\0{authcid}\0{password}"))
    }

    /// Whether `reply` is a `334` challenge whose base64 text decodes to `prompt`.
    fn is_challenge(reply: &Reply, prompt: &str) -> bool {
        reply.code == 334
            && reply
                .lines
                .first()
                .and_then(|text| BASE64.decode(text.trim()).ok())
                .is_some_and(|decoded| decoded == prompt.as_bytes())
    }

    /// The DATA payload for `message`: CRLF line ends, dot-stuffed, ending in
    /// `CRLF.CRLF`.
    pub fn data_payload(message: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(message.len() + 16);
        for line in message.lines() {
            if line.starts_with('.') {
                out.push(b'.');
            }
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        out
    }

    /// Opens a transaction in the current session (after EHLO): MAIL, RCPT for each
    /// recipient, DATA; every step must succeed. The message is next.
    pub async fn start_data(
        client: &mut LineClient,
        from: &str,
        recipients: &[&str],
    ) -> io::Result<()> {
        expect(client, &format!("MAIL FROM:<{from}>"), 250).await?;
        for rcpt in recipients {
            expect(client, &format!("RCPT TO:<{rcpt}>"), 250).await?;
        }
        expect(client, "DATA", 354).await?;
        Ok(())
    }

    /// Sends `message` in the current session (after EHLO): MAIL, RCPT for each
    /// recipient, DATA. Every step must succeed; returns the reply to the final ".".
    pub async fn send_in_session(
        client: &mut LineClient,
        from: &str,
        recipients: &[&str],
        message: &str,
    ) -> io::Result<Reply> {
        start_data(client, from, recipients).await?;
        client.write_raw(&data_payload(message)).await?;
        let reply = read_reply(client).await?;
        if reply.code != 250 {
            return Err(io::Error::other(format!(
                "end of data: {} {}",
                reply.code,
                reply.text()
            )));
        }
        Ok(reply)
    }

    /// One whole submission: connect, EHLO, MAIL, RCPT..., DATA, QUIT. Returns the queue
    /// id Postfix gave the message.
    pub async fn submit(
        addr: SocketAddr,
        from: &str,
        recipients: &[&str],
        message: &str,
    ) -> io::Result<String> {
        let mut client = connect(addr).await?;
        expect(&mut client, "EHLO client.test", 250).await?;
        let reply = send_in_session(&mut client, from, recipients, message).await?;
        expect(&mut client, "QUIT", 221).await?;
        reply
            .queue_id()
            .ok_or_else(|| io::Error::other(format!("no queue id in {:?}", reply.text())))
    }

    /// A minimal RFC 5322 message with a unique Message-ID.
    pub fn message(from: &str, to: &str, subject: &str, body: &str) -> String {
        format!(
            "From: <{from}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n\
             Message-ID: <{}@coi.test>\r\nDate: Thu, 1 Jan 2026 00:00:00 +0000\r\n\r\n{body}\r\n",
            super::unique_token()
        )
    }
}
