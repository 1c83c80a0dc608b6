//! What one blkcache device serves, as stored in libublk's per-device json (`target_data` of
//! `/run/ublksrvd/NNNN.json`), so that `list`, `del` and `recover` can find a device's source,
//! cache and daemon, and a recovering daemon can rebuild the same engine after a crash.
//!
//! Must never hold anything a recovering daemon could not rebuild from (no fds, no state).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The libublk target name of blkcache devices; `list` shows only devices with this name.
pub const TARGET_NAME: &str = "blkcache";

/// Where libublk keeps the per-device json files.
pub const RUN_DIR: &str = "/run/ublksrvd";

/// One device's configuration: enough to serve it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceConfig {
    /// The source path; `None` when the cache is served offline.
    pub source: Option<PathBuf>,
    /// The cache directory.
    pub cache: PathBuf,
    /// Device size in bytes.
    pub size: u64,
    /// Logical (and physical) block size.
    pub sector_size: u32,
    /// Sector size forced with `--sector-size`, if any (reapplied on recovery).
    #[serde(default)]
    pub sector_size_override: Option<u32>,
    /// Number of hardware queues.
    pub queues: u16,
    /// Depth of each queue.
    pub depth: u16,
    /// Largest I/O in bytes (libublk's io buffer size).
    pub io_buf_bytes: u32,
    /// Bytes read from the media per miss (engine read size), if set.
    #[serde(default)]
    pub read_size: Option<u32>,
    /// Extra reads of a sector already marked bad (engine `bad_retries`).
    #[serde(default)]
    pub bad_retries: u32,
    /// Test-mode damage map (ddrescue's `-H`), if any.
    #[serde(default)]
    pub test_mode: Option<PathBuf>,
    /// Test-mode latency per media read, in milliseconds.
    #[serde(default)]
    pub test_latency_ms: u64,
    /// Pid of the daemon serving the device (updated by each recovery).
    pub pid: i32,
    /// The daemon's log file.
    pub log: PathBuf,
}

impl DeviceConfig {
    /// Whether the device serves its cache with no source.
    pub fn offline(&self) -> bool {
        self.source.is_none()
    }
}

/// Path of the json libublk keeps for device `id`.
pub fn json_path(id: u32) -> PathBuf {
    Path::new(RUN_DIR).join(format!("{id:04}.json"))
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
            source: Some("/dev/sr0".into()),
            cache: "/var/lib/blkcache/abc".into(),
            size: 1 << 20,
            sector_size: 2048,
            sector_size_override: None,
            queues: 1,
            depth: 64,
            io_buf_bytes: 512 << 10,
            read_size: Some(65536),
            bad_retries: 1,
            test_mode: None,
            test_latency_ms: 0,
            pid: 42,
            log: "/var/lib/blkcache/abc/daemon.log".into(),
        }
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
