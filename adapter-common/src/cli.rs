//! The command line every broker binary shares (`mqtt-broker` on tokio,
//! `mqtt-broker-std`, `mqtt-broker-smol`, `mqtt-broker-async-std`): the same flags, the
//! same subcommands, the same logging.
//!
//! ```text
//! mqtt-broker [-c FILE] [-p PORT] [--bind IP] [--no-persistence] [--data-dir DIR] [-v]
//! mqtt-broker check-config FILE
//! mqtt-broker passwd FILE USER [PASSWORD] [-D]
//! ```
//!
//! A binary's `main` is `cli::main("name", "about", |config| serve(config))`: the
//! subcommands are handled here, and `serve` gets the configuration with the flags
//! applied and logging set up.

use crate::auth::Passwords;
use crate::config::Config;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

/// The flags and subcommands.
#[derive(Parser, Debug)]
#[command(version, about = "An MQTT 3.1, 3.1.1 and 5.0 broker")]
pub struct Cli {
    /// Configuration file (TOML; see CONFIG.md). Without one, every default applies.
    #[arg(short, long)]
    pub config: Option<PathBuf>,
    /// Port of the first listener (default 1883).
    #[arg(short, long)]
    pub port: Option<u16>,
    /// Address of the first listener (default 127.0.0.1).
    #[arg(long)]
    pub bind: Option<IpAddr>,
    /// Keep no state across restarts (overrides `[persistence] enabled`).
    #[arg(long)]
    pub no_persistence: bool,
    /// Data directory of the durable state (overrides `[persistence] dir`; default
    /// `mqtt-data`).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// More logs: -v debug, -vv trace.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// A subcommand instead of running the broker.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
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

impl Cli {
    /// Parses the process's arguments, with `name` in the usage and `--version`.
    pub fn parse_as(name: &'static str, about: &'static str) -> Self {
        let matches = Self::command()
            .name(name)
            .bin_name(name)
            .about(about)
            .get_matches();
        Self::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }

    /// The configuration: the file (or the defaults) with the flags applied.
    pub fn config(&self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(f) => Config::load(f)?,
            None => Config::default(),
        };
        if self.port.is_some() || self.bind.is_some() {
            let l = &mut config.listeners[0];
            let ip = self.bind.unwrap_or(l.bind.ip());
            l.bind = SocketAddr::new(ip, self.port.unwrap_or(l.bind.port()));
        }
        if self.no_persistence {
            config.persistence.enabled = false;
        }
        if let Some(d) = &self.data_dir {
            config.persistence.dir = d.clone();
        }
        Ok(config)
    }

    /// Sets up logging: `[log] level`, raised by `-v`; `RUST_LOG` wins.
    pub fn init_logging(&self, config: &Config) {
        let level = match self.verbose {
            0 => config.log.level.clone(),
            1 => "debug".into(),
            _ => "trace".into(),
        };
        // The store's own engine reports its housekeeping at info; only its warnings
        // belong in the broker's log unless asked for with -v or RUST_LOG.
        let filter = if self.verbose == 0 {
            format!("{level},fjall=warn,lsm_tree=warn")
        } else {
            level
        };
        tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter)),
            )
            .init();
    }
}

/// A broker binary's `main`: parses the command line, runs a subcommand, or calls
/// `serve` with the configuration (logging set up) and returns what it returns.
pub fn main(
    name: &'static str,
    about: &'static str,
    serve: impl FnOnce(Config) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let cli = Cli::parse_as(name, about);
    match &cli.command {
        Some(Command::CheckConfig { file }) => {
            Config::load(file)?;
            println!("{}: ok", file.display());
            Ok(())
        }
        Some(Command::Passwd {
            file,
            user,
            password,
            delete,
        }) => {
            let mut p = Passwords::load(file)?;
            if *delete {
                anyhow::ensure!(p.remove(user), "{user}: no such user");
            } else {
                let password = match password {
                    Some(p) => p.clone(),
                    None => {
                        let mut line = String::new();
                        std::io::stdin().read_line(&mut line)?;
                        line.trim_end_matches(['\r', '\n']).to_string()
                    }
                };
                p.set(user, &password)?;
            }
            std::fs::write(file, p.to_text())?;
            Ok(())
        }
        None => {
            let config = cli.config()?;
            cli.init_logging(&config);
            serve(config)
        }
    }
}

/// Calls `f` (on a thread of its own) on every SIGINT or SIGTERM. Where there are no
/// signals it never calls it.
pub fn on_shutdown_signal(f: impl Fn() + Send + 'static) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                for _ in signals.forever() {
                    f();
                }
            })?;
    }
    #[cfg(not(unix))]
    let _ = f;
    Ok(())
}
