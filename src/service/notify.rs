//! Telling a service manager (systemd, `Type=notify`) how the daemon is doing: READY once the
//! device is live, STATUS with the device and how much of the media is cached, STOPPING.
//!
//! Every call is a no-op without `$NOTIFY_SOCKET` (not run by systemd), and a failed
//! notification is logged, never fatal: serving matters more than reporting.

use crate::engine::Engine;
use crate::map::Status;

/// One line for `systemctl status`: what is served as what, and how much is cached.
pub fn status_line(engine: &Engine, device: &str) -> String {
    let size = engine.size();
    let cached = engine
        .mapfile_snapshot()
        .map
        .stats()
        .get(Status::Finished)
        .bytes;
    let percent = if size == 0 {
        100.0
    } else {
        cached as f64 * 100.0 / size as f64
    };
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let mut line = format!(
        "serving {} as {device}: {percent:.1}% cached ({:.1} of {:.1} MiB)",
        engine.media().describe(),
        mib(cached),
        mib(size)
    );
    if engine.media_changed() {
        line.push_str("; the disc was changed or removed: only cached sectors are served");
    }
    line
}

/// READY=1 with the first status line.
pub fn ready(engine: &Engine, device: &str) {
    send(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&status_line(engine, device)),
    ]);
}

/// A new STATUS= line.
pub fn status(line: &str) {
    send(&[sd_notify::NotifyState::Status(line)]);
}

/// STATUS= with why serving failed (before READY, or at the end): `systemctl status` keeps it.
pub fn failed(why: &str) {
    send(&[sd_notify::NotifyState::Status(&format!("failed: {why}"))]);
}

/// STOPPING=1 with why.
pub fn stopping(why: &str) {
    send(&[
        sd_notify::NotifyState::Stopping,
        sd_notify::NotifyState::Status(why),
    ]);
}

/// Whether a service manager listens (`$NOTIFY_SOCKET`).
pub fn enabled() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

fn send(states: &[sd_notify::NotifyState<'_>]) {
    if !enabled() {
        return;
    }
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!(error = %e, "cannot notify the service manager");
    }
}
