//! A scripted SMTP or LMTP upstream in this process, for the faults a real Postfix or
//! Dovecot cannot produce on cue: silence, a close or a reset after the end of data (or
//! in the middle of it), or chosen replies there. It speaks just enough for the proxy
//! (greeting, LHLO or EHLO, XCLIENT, AUTH, MAIL, RCPT, DATA, RSET, NOOP, QUIT) and records
//! what it receives. [`StubWorld`] puts the in-process proxy in front of it.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use super::io::STEP;
use super::memory::MemoryGate;
use super::proxy::{DeliveryTuning, Options, Proxy, SubmissionOptions};
use super::world::hook_options;

/// Which server the stub plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// Dovecot's LMTP, behind the delivery hook.
    Lmtp,
    /// Postfix's submission listener, behind the submission front.
    Smtp,
}

impl Protocol {
    fn greeting(self) -> &'static [u8] {
        match self {
            Protocol::Lmtp => b"220 stub.test LMTP\r\n",
            Protocol::Smtp => b"220 stub.test ESMTP\r\n",
        }
    }

    /// The answer to a command other than DATA and QUIT.
    fn answer(self, verb: &str) -> &'static [u8] {
        match (self, verb) {
            (Protocol::Lmtp, "LHLO") => {
                b"250-stub.test\r\n250-PIPELINING\r\n250-ENHANCEDSTATUSCODES\r\n250 8BITMIME\r\n"
            }
            (Protocol::Lmtp, "MAIL") => b"250 2.1.0 OK\r\n",
            (Protocol::Lmtp, "RCPT") => b"250 2.1.5 OK\r\n",
            (Protocol::Lmtp, "RSET" | "NOOP") => b"250 2.0.0 OK\r\n",
            (Protocol::Smtp, "XCLIENT") => b"220 stub.test ESMTP\r\n",
            (Protocol::Smtp, "EHLO") => b"250-stub.test\r\n250-PIPELINING\r\n250-SIZE 0\r\n250-AUTH PLAIN LOGIN\r\n250-ENHANCEDSTATUSCODES\r\n250 8BITMIME\r\n",
            (Protocol::Smtp, "AUTH") => b"235 2.7.0 Authentication successful\r\n",
            (Protocol::Smtp, "MAIL" | "RCPT" | "RSET" | "NOOP") => b"250 2.0.0 Ok\r\n",
            _ => b"502 5.5.2 Error: command not recognized\r\n",
        }
    }

    fn go_ahead(self) -> &'static [u8] {
        match self {
            Protocol::Lmtp => b"354 OK\r\n",
            Protocol::Smtp => b"354 End data with <CR><LF>.<CR><LF>\r\n",
        }
    }
}

/// What the stub does at the end of data (or, for `CloseInData`, at its first line; for
/// `CloseAtData` and `SilentAtData`, at DATA itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Script {
    /// Sends these reply lines (for LMTP one reply per accepted recipient).
    Reply(&'static str),
    /// Never answers; reads on until the proxy closes.
    Silent,
    /// Closes the connection (FIN).
    Close,
    /// Resets the connection (RST).
    Reset,
    /// Closes the connection at the first line of data, before the end.
    CloseInData,
    /// Closes the connection when DATA arrives, without answering it.
    CloseAtData,
    /// Never answers DATA; reads on until the proxy closes.
    SilentAtData,
}

/// What one upstream connection received.
#[derive(Clone, Debug, Default)]
pub struct StubConnection {
    /// Command lines, without CRLF (message data excluded).
    pub commands: Vec<String>,
    /// The message data as received (dot-stuffed, end line included), at most the first
    /// [`DATA_KEPT`] bytes.
    pub data: Vec<u8>,
    /// End-of-data lines received.
    pub ends: usize,
    /// The stub went silent after an end of data (`Script::Silent`) or DATA
    /// (`Script::SilentAtData`).
    pub went_silent: bool,
    /// The proxy ended the connection (QUIT, or closed it).
    pub ended_by_proxy: bool,
}

/// How much of the message data [`StubConnection::data`] keeps.
pub const DATA_KEPT: usize = 64 * 1024;

/// The stub server. Aborted (with its connections) when dropped.
pub struct Stub {
    pub addr: SocketAddr,
    script: Arc<Mutex<Script>>,
    connections: Arc<Mutex<Vec<StubConnection>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Stub {
    pub async fn start(protocol: Protocol, script: Script) -> Stub {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the stub");
        let addr = listener.local_addr().expect("stub address");
        let script = Arc::new(Mutex::new(script));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let script = script.clone();
            let connections = connections.clone();
            async move {
                let mut handlers = tokio::task::JoinSet::new();
                while let Ok((stream, _)) = listener.accept().await {
                    let index = {
                        let mut all = connections.lock().unwrap();
                        all.push(StubConnection::default());
                        all.len() - 1
                    };
                    handlers.spawn(serve(
                        protocol,
                        stream,
                        index,
                        script.clone(),
                        connections.clone(),
                    ));
                }
            }
        });
        Stub {
            addr,
            script,
            connections,
            task,
        }
    }

    /// What to do at the next end of data, on every connection.
    pub fn set(&self, script: Script) {
        *self.script.lock().unwrap() = script;
    }

    pub fn connections(&self) -> Vec<StubConnection> {
        self.connections.lock().unwrap().clone()
    }

    /// Every command line received, over all connections.
    pub fn commands(&self) -> Vec<String> {
        self.connections()
            .into_iter()
            .flat_map(|c| c.commands)
            .collect()
    }

    /// End-of-data lines received, over all connections.
    pub fn ends(&self) -> usize {
        self.connections().iter().map(|c| c.ends).sum()
    }

    /// The connections that went silent.
    pub fn silent(&self) -> Vec<StubConnection> {
        self.connections()
            .into_iter()
            .filter(|c| c.went_silent)
            .collect()
    }

    /// Requires exactly `n` connections that went silent, and that the proxy ends every
    /// one of them within [`STEP`]: it gives them up rather than keeping them.
    pub async fn assert_silent_connections_given_up(&self, n: usize) {
        let deadline = Instant::now() + STEP;
        loop {
            let silent = self.silent();
            assert_eq!(silent.len(), n, "{:#?}", self.connections());
            if silent.iter().all(|c| c.ended_by_proxy) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "silent connections left open: {silent:#?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A [`Stub`] and the in-process proxy in front of it: for [`Protocol::Lmtp`] the
/// delivery hook without a mailbox writer (everything by LMTP), for [`Protocol::Smtp`]
/// the submission front for a.test. Holds a memory gate while it lives.
pub struct StubWorld {
    pub stub: Stub,
    pub proxy: Proxy,
    _gate: MemoryGate,
}

impl StubWorld {
    /// The stub plays `protocol` with `script`; the proxy waits `upstream_reply` for the
    /// stub's replies.
    pub async fn start(
        protocol: Protocol,
        script: Script,
        upstream_reply: Duration,
        gate: MemoryGate,
    ) -> StubWorld {
        let stub = Stub::start(protocol, script).await;
        let reply_ms = Some(upstream_reply.as_millis() as u64);
        let options = match protocol {
            Protocol::Lmtp => Options {
                delivery_tuning: DeliveryTuning {
                    upstream_reply_ms: reply_ms,
                    ..DeliveryTuning::default()
                },
                ..hook_options(stub.addr, None)
            },
            Protocol::Smtp => {
                let mut submission = SubmissionOptions::new(stub.addr, "a.test");
                submission.upstream_reply_ms = reply_ms;
                Options {
                    submission: Some(submission),
                    ..Options::default()
                }
            }
        };
        let proxy = Proxy::start(stub.addr, options).await;
        StubWorld {
            stub,
            proxy,
            _gate: gate,
        }
    }

    /// The delivery hook's listener ([`Protocol::Lmtp`]).
    pub fn hook(&self) -> SocketAddr {
        self.proxy.delivery.expect("the hook")
    }

    /// The submission front's plaintext listener ([`Protocol::Smtp`]).
    pub fn submission(&self) -> SocketAddr {
        self.proxy.submission.expect("submission listeners").plain
    }
}

async fn serve(
    protocol: Protocol,
    stream: TcpStream,
    index: usize,
    script: Arc<Mutex<Script>>,
    connections: Arc<Mutex<Vec<StubConnection>>>,
) {
    let record = |f: &dyn Fn(&mut StubConnection)| f(&mut connections.lock().unwrap()[index]);
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let _ = write.write_all(protocol.greeting()).await;
    let mut line = Vec::new();
    let mut in_data = false;
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => {
                record(&|c| c.ended_by_proxy = true);
                return;
            }
            Ok(_) => {}
        }
        let now = *script.lock().unwrap();
        if in_data {
            record(&|c| {
                let room = DATA_KEPT.saturating_sub(c.data.len());
                c.data.extend_from_slice(&line[..line.len().min(room)]);
            });
            if now == Script::CloseInData {
                return;
            }
            if line != b".\r\n" {
                continue;
            }
            in_data = false;
            record(&|c| c.ends += 1);
            match now {
                Script::Reply(text) => {
                    let _ = write.write_all(text.as_bytes()).await;
                }
                Script::Silent => {
                    record(&|c| c.went_silent = true);
                    drain(&mut reader).await;
                    record(&|c| c.ended_by_proxy = true);
                    return;
                }
                // The scripts at DATA never get here.
                Script::Close
                | Script::CloseInData
                | Script::CloseAtData
                | Script::SilentAtData => return,
                Script::Reset => {
                    let stream = reader.into_inner().reunite(write).expect("one stream");
                    stream.set_zero_linger().expect("SO_LINGER 0");
                    return;
                }
            }
            continue;
        }
        let text = String::from_utf8_lossy(&line).trim_end().to_owned();
        let verb = text.split(' ').next().unwrap_or("").to_ascii_uppercase();
        record(&|c| c.commands.push(text.clone()));
        let answer = match verb.as_str() {
            "DATA" if now == Script::CloseAtData => return,
            "DATA" if now == Script::SilentAtData => {
                record(&|c| c.went_silent = true);
                drain(&mut reader).await;
                record(&|c| c.ended_by_proxy = true);
                return;
            }
            "DATA" => {
                in_data = true;
                protocol.go_ahead()
            }
            "QUIT" => {
                record(&|c| c.ended_by_proxy = true);
                let _ = write.write_all(b"221 2.0.0 Bye\r\n").await;
                return;
            }
            verb => protocol.answer(verb),
        };
        if write.write_all(answer).await.is_err() {
            return;
        }
    }
}

/// Reads and discards until the proxy closes.
async fn drain(reader: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) {
    let mut sink = Vec::new();
    while matches!(reader.read_until(b'\n', &mut sink).await, Ok(n) if n > 0) {
        sink.clear();
    }
}
