//! The cache's health (`Engine::health`), published by the daemon for `blkcache list`: one small
//! JSON file per device beside libublk's own (`/run/ublksrvd`, a tmpfs), never in the cache
//! directory, whose disk may be the full or failing one. The saver thread writes it (atomically)
//! when the health changes and removes it when the daemon stops.
//!
//! Must never make `list` show another daemon's health: the file names the daemon's pid, and a
//! file left by an earlier daemon of the same device id is ignored.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::config::RUN_DIR;
use crate::engine::CacheHealth;

#[derive(Debug, Serialize, Deserialize)]
struct Published {
    pid: i32,
    health: CacheHealth,
}

/// The health file of device `id`.
pub fn health_path(id: u32) -> PathBuf {
    PathBuf::from(RUN_DIR).join(format!("{id:04}.blkcache-health.json"))
}

/// Publishes `health` as the health of device `id`, served by this process.
pub(super) fn publish(id: u32, health: &CacheHealth) {
    let published = Published {
        pid: std::process::id() as i32,
        health: health.clone(),
    };
    let result = serde_json::to_vec(&published)
        .map_err(|e| e.to_string())
        .and_then(|json| {
            crate::files::write_atomic(&health_path(id), &json).map_err(|e| e.to_string())
        });
    if let Err(error) = result {
        tracing::warn!(%error, "cannot publish the cache health for `blkcache list`");
    }
}

/// Removes the health file of device `id` (the daemon stops).
pub(super) fn unpublish(id: u32) {
    let _ = std::fs::remove_file(health_path(id));
}

/// The health device `id`'s daemon `pid` published: `Ok` if it published none (it does only
/// once the health changes), `None` if the file cannot be read.
pub fn published_health(id: u32, pid: i32) -> Option<CacheHealth> {
    match std::fs::read(health_path(id)) {
        Ok(json) => serde_json::from_slice::<Published>(&json).ok().map(|p| {
            if p.pid == pid {
                p.health
            } else {
                CacheHealth::Ok
            }
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(CacheHealth::Ok),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_round_trips_through_json() {
        let p = Published {
            pid: 7,
            health: CacheHealth::Full {
                error: "no space".into(),
            },
        };
        let json = serde_json::to_string(&p).unwrap();
        assert!(json.contains(r#""state":"full""#), "{json}");
        let back: Published = serde_json::from_str(&json).unwrap();
        assert_eq!(back.health, p.health);
    }
}
