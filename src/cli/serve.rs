//! `blkcache serve SOURCE --socket PATH | --listen [ADDR:]PORT`: serve SOURCE through its cache
//! as a read-only NBD export, in the foreground until SIGINT/SIGTERM. Needs no root and no
//! kernel driver: any NBD client reads it (`nbdcopy`, `nbdinfo`, `nbdfuse`, `qemu-img`).
//!
//! Prints the export's NBD URI on stdout once it listens (and its cache's control socket, for
//! `blkcache fill CACHE` and a live `status CACHE`, is there). Must never listen on anything but
//! loopback unless an address is given, and says loudly that NBD over TCP is cleartext.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use blkcache::nbd::{self, EngineExport, Listener, ServerConfig};
use blkcache::serve::{self, ServeConfig};

/// The export's name (the default, empty, name is accepted too).
const EXPORT_NAME: &str = "blkcache";

/// Arguments of `blkcache serve`.
#[derive(Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("listen_on").required(true).args(["socket", "listen"]))]
pub struct ServeArgs {
    /// The source: an optical drive, a disk or a file. With --offline: the cache directory
    /// (ignored if --cache is given).
    pub source: PathBuf,
    /// Listen on this unix socket (created mode 0600: only you can connect).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Listen on TCP: PORT (loopback only) or ADDR:PORT. NBD has no encryption here: anyone on
    /// the network path sees the data, and anyone who reaches the address can read the disc.
    #[arg(long, value_name = "[ADDR:]PORT", value_parser = parse_listen)]
    pub listen: Option<SocketAddr>,
    /// Cache directory (default: one per media, as for `add`).
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// Sector size in bytes (default: the device's logical sector size; 512 for files).
    #[arg(long, value_name = "BYTES")]
    pub sector_size: Option<u32>,
    /// Bytes read from the source per miss (e.g. 65536, 64k, 1M; a multiple of the sector size).
    #[arg(long, value_name = "BYTES", value_parser = serve::parse_size)]
    pub read_size: Option<u32>,
    /// The most bytes read ahead of a client reading sequentially (e.g. 4M; `off`: none).
    /// Default 4 MiB; only untried bytes are read ahead, never known-bad areas.
    #[arg(long, value_name = "off|BYTES", value_parser = serve::parse_read_ahead)]
    pub read_ahead: Option<u64>,
    /// How many more times a sector already marked bad is read when a client asks for it.
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=16))]
    pub bad_retries: u32,
    /// Serve the cache without its source: sectors not in the cache fail with EIO.
    #[arg(long)]
    pub offline: bool,
    /// Test mode: read SOURCE as if damaged where MAPFILE is not `+` (GNU ddrescue's -H).
    #[arg(long, value_name = "MAPFILE", conflicts_with = "offline")]
    pub test_mode: Option<PathBuf>,
    /// Latency added to every read of the source, in milliseconds.
    #[arg(
        long,
        value_name = "MS",
        default_value_t = 0,
        conflicts_with = "offline"
    )]
    pub test_latency: u64,
}

/// `PORT` (loopback) or `ADDR:PORT`.
fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    s.parse()
        .map_err(|_| format!("'{s}' is not PORT or ADDR:PORT (e.g. 10809, 192.0.2.1:10809)"))
}

/// The serve configuration `add` would use for the same flags (ublk's queue settings unused).
fn serve_config(args: &ServeArgs) -> anyhow::Result<ServeConfig> {
    let mut cfg = ServeConfig {
        cache: args.cache.clone(),
        sector_size: args.sector_size,
        read_size: args.read_size,
        bad_retries: args.bad_retries,
        read_ahead: args.read_ahead,
        test_mode: args.test_mode.clone(),
        test_latency_ms: args.test_latency,
        ..ServeConfig::default()
    };
    if args.offline {
        cfg.cache = Some(cfg.cache.unwrap_or_else(|| args.source.clone()));
    } else {
        cfg.source = Some(args.source.clone());
    }
    cfg.resolve()?;
    Ok(cfg)
}

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let cfg = serve_config(&args)?;
    let opened = serve::prepare(&cfg)?;
    let (engine, _) = serve::start(&cfg, &opened)?;
    if let Some(found) = opened.found() {
        eprintln!("blkcache: {found}");
    }
    let listener = match (&args.socket, args.listen) {
        (Some(path), _) => Listener::unix(path)?,
        (None, Some(addr)) => {
            let l = Listener::tcp(addr)?;
            tracing::warn!(
                address = %addr,
                "NBD over TCP is cleartext and unauthenticated: anyone on the network path sees the \
                 data, and anyone who can reach this address can read the disc{}",
                if addr.ip().is_loopback() { " (loopback: local users only)" } else { "" }
            );
            l
        }
        (None, None) => anyhow::bail!("give --socket PATH or --listen [ADDR:]PORT"),
    };
    tracing::info!(
        media = %opened.media.describe(),
        cache = %opened.cache.dir().display(),
        uri = %listener.uri(),
        "serving over NBD"
    );
    // The control socket is there once the URI is printed.
    let fills = Arc::new(super::daemon::background_fill(
        &cfg,
        &engine,
        opened.cache.dir(),
    ));
    let control =
        super::daemon::control_socket(&engine, &fills, opened.cache.dir(), cfg.source.is_some());
    if let Some(c) = &control {
        c.set_serving(&listener.uri());
    }
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", listener.uri())?;
        out.flush()?;
    }
    let export = EngineExport::new(engine.clone(), EXPORT_NAME);
    let served = nbd::serve_until_signalled(&listener, &export, &ServerConfig::default());
    super::daemon::stop_control(&engine, &fills, control);
    served?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_is_loopback_unless_an_address_is_given() {
        assert_eq!(
            parse_listen("10809"),
            Ok("127.0.0.1:10809".parse().unwrap())
        );
        assert_eq!(
            parse_listen("0.0.0.0:10809"),
            Ok("0.0.0.0:10809".parse().unwrap())
        );
        assert_eq!(parse_listen("[::1]:1"), Ok("[::1]:1".parse().unwrap()));
        assert!(parse_listen("localhost").is_err());
    }
}
