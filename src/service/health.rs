//! The cache's health (`Engine::health`), published by a serving daemon for `blkcache list`: one
//! small JSON file per device in the frontend's run directory (a tmpfs: `/run/ublksrvd` for ublk,
//! `/run/blkcache` for nbd), never in the cache directory, whose disk may be the full or failing
//! one. The keeper thread writes it (atomically) when the health changes and removes it when the
//! daemon stops.
//!
//! Must never make `list` show another daemon's health: the file names the daemon's pid, and a
//! file left by an earlier daemon of the same device is ignored.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::engine::CacheHealth;

#[derive(Debug, Serialize, Deserialize)]
struct Published {
    pid: i32,
    health: CacheHealth,
}

/// Publishes `health` in `path` as the health of the device this process serves.
pub(super) fn publish(path: &Path, health: &CacheHealth) {
    let published = Published {
        pid: std::process::id() as i32,
        health: health.clone(),
    };
    let result = serde_json::to_vec(&published)
        .map_err(|e| e.to_string())
        .and_then(|json| crate::files::write_atomic(path, &json).map_err(|e| e.to_string()));
    if let Err(error) = result {
        tracing::warn!(%error, "cannot publish the cache health for `blkcache list`");
    }
}

/// Removes the health file `path` (the daemon stops, or starts afresh).
pub(super) fn unpublish(path: &Path) {
    let _ = std::fs::remove_file(path);
}

/// The health daemon `pid` published in `path`: `Ok` if it published none (it does only once
/// the health changes), `None` if the file cannot be read.
pub fn published_health(path: &Path, pid: i32) -> Option<CacheHealth> {
    match std::fs::read(path) {
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

    #[test]
    fn another_daemons_health_is_not_shown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.json");
        assert_eq!(published_health(&path, 1), Some(CacheHealth::Ok));
        let failed = CacheHealth::Failed {
            error: "EIO".into(),
        };
        publish(&path, &failed);
        let me = std::process::id() as i32;
        assert_eq!(published_health(&path, me), Some(failed));
        assert_eq!(published_health(&path, me + 1), Some(CacheHealth::Ok));
        unpublish(&path);
        assert!(!path.exists());
    }
}
