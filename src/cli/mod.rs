//! Command-line interface: one file per subcommand, each holding its own arguments.

mod add;
mod daemon;
mod del;
mod eject;
mod export;
mod fill;
mod journal;
mod list;
mod merge;
mod progress;
mod recover;
mod serve;
mod status;
mod target;
mod udev;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// A transparent, persistent read-through cache for physical media.
///
/// Every sector read through a blkcache device is read from the drive once, written into a sparse
/// image and recorded in a GNU ddrescue-compatible mapfile.
#[derive(Debug, Parser)]
#[command(name = "blkcache", version, about, long_about = None)]
pub struct Cli {
    /// More log output (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve a source (drive, disk, file) through its cache as /dev/ublkbN.
    Add(add::AddArgs),
    /// Stop serving a device: save the map and remove the device.
    Del(del::DelArgs),
    Fill(fill::FillArgs),
    Export(export::ExportArgs),
    Merge(merge::MergeArgs),
    /// List blkcache devices.
    List(list::ListArgs),
    /// Re-attach a daemon to devices whose daemon died.
    Recover(recover::RecoverArgs),
    /// Serve a source through its cache as a read-only NBD export (no root, no kernel driver).
    Serve(serve::ServeArgs),
    Status(status::StatusArgs),
    /// Internal: serve a configuration as a daemon (started by add and recover).
    #[command(hide = true)]
    Daemon(daemon::DaemonArgs),
    /// Stop serving a drive (map saved) and eject its disc: `blkcache eject sr0`.
    Eject(eject::EjectArgs),
    /// For udev: what a /dev/ublkbN or /dev/nbdN serves, as KEY=value lines (61-blkcache.rules).
    #[command(hide = true)]
    UdevEnv(udev::UdevEnvArgs),
}

/// Logs go to stderr; RUST_LOG wins over -v. A daemon's stderr becomes its log file: no colours.
pub fn init_logging(cli: &Cli) {
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && !matches!(cli.command, Command::Daemon(_));
    let default = match cli.verbose {
        0 => "info,libublk=warn",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Run by systemd: lines with syslog priorities for the journal.
    if journal::stderr_is_journal() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .event_format(journal::JournalLines)
            .try_init();
        return;
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // No colour codes in daemon.log or a redirected stderr.
        .with_ansi(colour)
        .try_init();
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Add(args) => add::run(args, cli.verbose),
        Command::Del(args) => del::run(args),
        Command::Fill(args) => fill::run(args),
        Command::Export(args) => export::run(args),
        Command::Merge(args) => merge::run(args),
        Command::List(args) => list::run(args),
        Command::Recover(args) => recover::run(args, cli.verbose),
        Command::Serve(args) => serve::run(args),
        Command::Status(args) => status::run(args),
        Command::Daemon(args) => daemon::run(args),
        Command::Eject(args) => eject::run(args),
        Command::UdevEnv(args) => udev::run(args),
    }
}
