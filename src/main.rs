//! `coi-proxy run --config FILE` serves; `coi-proxy check --config FILE` validates.
//! Exit codes: 0 success, 64 (EX_USAGE) for a bad configuration, 1 when startup fails.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use coi_proxy::config::{self, Config};

/// BSD sysexits EX_USAGE, as linkerd uses for a bad configuration.
const EXIT_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(
    version,
    about = "Chat Over IMAP sidecar proxy for Dovecot and Postfix"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve until SIGTERM or SIGINT.
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate the configuration and its files, print every error, and exit.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => match load(&config) {
            Ok(_) => {
                println!("{}: ok", config.display());
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Run { config } => {
            let config = match load(&config) {
                Ok(config) => config,
                Err(code) => return code,
            };
            if let Err(e) = coi_proxy::trace::init(&config.log) {
                eprintln!("log: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    eprintln!("cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            runtime.block_on(run(config))
        }
    }
}

/// Loads and validates; on failure prints every error with its key path.
fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    let config = config::load(path).map_err(|errors| {
        eprintln!("{}: invalid configuration", path.display());
        eprintln!("{errors}");
        ExitCode::from(EXIT_CONFIG)
    })?;
    let mut problems = Vec::new();
    if let Some(tls) = &config.tls {
        if let Err(e) = coi_proxy::net::tls::server_config(tls) {
            problems.push(format!("tls: {}", error_chain(&e)));
        }
    }
    if let config::UpstreamTls::Implicit { ca_file, .. } = &config.imap.upstream.tls {
        if let Err(e) = coi_proxy::net::tls::client_config(ca_file) {
            problems.push(format!("imap.upstream.ca_file: {}", error_chain(&e)));
        }
    }
    if let Some(link) = &config.peer.link {
        match coi_proxy::net::quic::PeerTls::load(&link.tls, &link.ca_file) {
            Ok(tls) if tls.domains.is_empty() => problems.push(
                "peer.certificate: names no DNS name: peers could not tell which mail domain it speaks for"
                    .to_owned(),
            ),
            Ok(_) => {}
            Err(e) => problems.push(format!("peer: {}", error_chain(&e))),
        }
    }
    if !problems.is_empty() {
        eprintln!("{}: invalid configuration", path.display());
        for problem in problems {
            eprintln!("{problem}");
        }
        return Err(ExitCode::from(EXIT_CONFIG));
    }
    Ok(config)
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

async fn run(config: Config) -> ExitCode {
    let running = match coi_proxy::app::start(&config).await {
        Ok(running) => running,
        Err(e) => {
            tracing::error!(error = %error_chain(&e), "startup failed");
            eprintln!("startup failed: {}", error_chain(&e));
            return ExitCode::FAILURE;
        }
    };
    // One machine-readable line per listener, for scripts and tests that bind port 0.
    for (name, address) in &running.imap {
        println!("listening imap {name} {address}");
    }
    if let Some(address) = running.admin {
        println!("listening admin {address}");
    }
    wait_for_signal().await;
    tracing::info!(grace = ?config.shutdown.grace, "shutting down");
    running.shutdown(config.shutdown.grace).await;
    ExitCode::SUCCESS
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the process can only be killed; serve forever.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
