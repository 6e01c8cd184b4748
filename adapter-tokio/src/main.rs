//! `mqtt-broker`: the MQTT broker on tokio.

use adapter_tokio::auth::Passwords;
use adapter_tokio::config::Config;
use clap::{Parser, Subcommand};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "mqtt-broker",
    version,
    about = "An MQTT 3.1, 3.1.1 and 5.0 broker"
)]
struct Cli {
    /// Configuration file (TOML; see CONFIG.md). Without one, every default applies.
    #[arg(short, long)]
    config: Option<PathBuf>,
    /// Port of the first listener (default 1883).
    #[arg(short, long)]
    port: Option<u16>,
    /// Address of the first listener (default 127.0.0.1).
    #[arg(long)]
    bind: Option<IpAddr>,
    /// Keep no state across restarts (overrides `[persistence] enabled`).
    #[arg(long)]
    no_persistence: bool,
    /// Data directory of the durable state (overrides `[persistence] dir`; default
    /// `mqtt-data`).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// More logs: -v debug, -vv trace.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Checks a configuration file and prints what is wrong.
    CheckConfig {
        /// The file.
        file: PathBuf,
    },
    /// Creates or updates a password file (argon2id hashes).
    Passwd {
        /// The password file.
        file: PathBuf,
        /// The user.
        user: String,
        /// The password; read from standard input if left out.
        password: Option<String>,
        /// Remove the user instead.
        #[arg(short = 'D', long)]
        delete: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::CheckConfig { file }) => {
            Config::load(&file)?;
            println!("{}: ok", file.display());
            Ok(())
        }
        Some(Command::Passwd {
            file,
            user,
            password,
            delete,
        }) => {
            let mut p = Passwords::load(&file)?;
            if delete {
                anyhow::ensure!(p.remove(&user), "{user}: no such user");
            } else {
                let password = match password {
                    Some(p) => p,
                    None => {
                        let mut line = String::new();
                        std::io::stdin().read_line(&mut line)?;
                        line.trim_end_matches(['\r', '\n']).to_string()
                    }
                };
                p.set(&user, &password)?;
            }
            std::fs::write(&file, p.to_text())?;
            Ok(())
        }
        None => run(cli),
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let mut config = match &cli.config {
        Some(f) => Config::load(f)?,
        None => Config::default(),
    };
    if cli.port.is_some() || cli.bind.is_some() {
        let l = &mut config.listeners[0];
        let ip = cli.bind.unwrap_or(l.bind.ip());
        l.bind = SocketAddr::new(ip, cli.port.unwrap_or(l.bind.port()));
    }
    if cli.no_persistence {
        config.persistence.enabled = false;
    }
    if let Some(d) = cli.data_dir {
        config.persistence.dir = d;
    }
    let level = match cli.verbose {
        0 => config.log.level.clone(),
        1 => "debug".into(),
        _ => "trace".into(),
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let mut running = adapter_tokio::server::start(config, None).await?;
        tokio::select! {
            _ = shutdown_signal() => {
                running.shutdown().await;
                Ok(())
            }
            _ = running.stopped() => Err(anyhow::anyhow!("the broker stopped: see the log")),
        }
    })
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
