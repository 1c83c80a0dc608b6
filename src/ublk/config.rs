//! What one blkcache device serves, as stored in libublk's per-device json (`target_data` of
//! `/run/ublksrvd/NNNN.json`), so that `list`, `del` and `recover` can find a device's source,
//! cache and daemon, and a recovering daemon can rebuild the same engine after a crash.
//!
//! Must never hold anything a recovering daemon could not rebuild from (no fds, no state).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::serve::ServeConfig;

/// The libublk target name of blkcache devices; `list` shows only devices with this name.
pub const TARGET_NAME: &str = "blkcache";

/// Where libublk keeps the per-device json files.
pub const RUN_DIR: &str = "/run/ublksrvd";

/// Largest I/O the device takes (libublk's per-tag buffer).
pub const IO_BUF_BYTES: u32 = 512 * 1024;

/// One device's configuration: what it serves ([`ServeConfig`], with the cache directory filled
/// in), enough to serve it again, plus what the kernel and `list` need.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceConfig {
    /// The settings it is served with (flattened: the json keeps its older, flat shape).
    #[serde(flatten)]
    pub serve: ServeConfig,
    /// Device size in bytes.
    pub size: u64,
    /// Logical (and physical) block size.
    pub sector_size: u32,
    /// Largest I/O in bytes (libublk's io buffer size).
    pub io_buf_bytes: u32,
    /// Pid of the daemon serving the device (updated by each recovery).
    pub pid: i32,
    /// The daemon's log file.
    pub log: PathBuf,
}

impl DeviceConfig {
    /// Whether the device serves its cache with no source.
    pub fn offline(&self) -> bool {
        self.serve.source.is_none()
    }

    /// The source, `None` offline.
    pub fn source(&self) -> Option<&Path> {
        self.serve.source.as_deref()
    }

    /// The cache directory (always set for a served device).
    pub fn cache(&self) -> &Path {
        self.serve.cache.as_deref().unwrap_or(Path::new(""))
    }
}

/// Path of the json libublk keeps for device `id`.
pub fn json_path(id: u32) -> PathBuf {
    Path::new(RUN_DIR).join(format!("{id:04}.json"))
}

/// Where the daemon of device `id` publishes its cache health (`crate::service`), beside
/// libublk's json.
pub fn health_path(id: u32) -> PathBuf {
    Path::new(RUN_DIR).join(format!("{id:04}.blkcache-health.json"))
}

/// The blkcache configuration in a libublk device json, or `None` when the json is another
/// target's or has no blkcache data.
pub fn from_device_json(json: &serde_json::Value) -> Option<DeviceConfig> {
    if json["target"]["tgt_type"].as_str() != Some(TARGET_NAME) {
        return None;
    }
    serde_json::from_value(json["target_data"][TARGET_NAME].clone()).ok()
}

/// The `target_data` value holding `cfg`.
pub fn to_target_data(cfg: &DeviceConfig) -> serde_json::Value {
    serde_json::json!({ TARGET_NAME: cfg })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> DeviceConfig {
        DeviceConfig {
            serve: ServeConfig {
                source: Some("/dev/sr0".into()),
                cache: Some("/var/lib/blkcache/abc".into()),
                read_size: Some(65536),
                bad_retries: 1,
                queues: 1,
                depth: 64,
                ..ServeConfig::default()
            },
            size: 1 << 20,
            sector_size: 2048,
            io_buf_bytes: 512 << 10,
            pid: 42,
            log: "/var/lib/blkcache/abc/daemon.log".into(),
        }
    }

    /// A device added by the previous version (flat json, every field named as now) is
    /// recovered with the same settings.
    #[test]
    fn reads_the_previous_versions_json() {
        let json = serde_json::json!({
            "target": { "tgt_type": "blkcache" },
            "target_data": { "blkcache": {
                "source": "/dev/sr0", "cache": "/var/lib/blkcache/abc", "size": 1048576,
                "sector_size": 2048, "sector_size_override": null, "queues": 1, "depth": 64,
                "io_buf_bytes": 524288, "read_size": 65536, "bad_retries": 1, "test_mode": null,
                "test_latency_ms": 0, "pid": 42, "log": "/var/lib/blkcache/abc/daemon.log"
            } },
        });
        assert_eq!(from_device_json(&json), Some(cfg()));
    }

    #[test]
    fn round_trips_through_a_libublk_json() {
        // The shape libublk writes: dev_info, target (UblkTgt), target_data.
        let json = serde_json::json!({
            "dev_info": { "dev_id": 3 },
            "target": { "tgt_type": "blkcache", "dev_size": 1048576 },
            "target_data": to_target_data(&cfg()),
        });
        assert_eq!(from_device_json(&json), Some(cfg()));
    }

    #[test]
    fn other_targets_are_not_ours() {
        let json = serde_json::json!({
            "target": { "tgt_type": "loop" },
            "target_data": to_target_data(&cfg()),
        });
        assert_eq!(from_device_json(&json), None);
        let json = serde_json::json!({ "target": { "tgt_type": "blkcache" } });
        assert_eq!(from_device_json(&json), None);
    }

    #[test]
    fn json_path_is_libublks() {
        assert_eq!(json_path(7), PathBuf::from("/run/ublksrvd/0007.json"));
    }
}
