//! The ublk adapter: serves a `/dev/ublkbN` from an [`Engine`](crate::engine::Engine), and finds,
//! removes and recovers blkcache devices.
//!
//! - `config`: what a device serves, kept in libublk's per-device json;
//! - `daemon`: adding/recovering the device, signals, periodic and final map saves;
//! - `queue`: one async task per tag: hits copied into requests (USER_COPY), misses stepped
//!   through the engine;
//! - `media_read`: media reads (the media's `ReadPlan`) on the queue's own io_uring;
//! - `wake`: a queue's wake-up eventfd, for requests waiting on other requests or on the
//!   media-change watcher;
//! - `errno`: the one place errors become `-errno`;
//! - `devices`: listing, resolving and removing devices.
//!
//! The keeper thread, the cache health file and the service manager's notifications are shared
//! with the nbd frontend (`crate::service`).
//!
//! Must never contain read policy: hits, misses, retries and bad sectors are the engine's.

mod config;
mod daemon;
mod devices;
mod errno;
mod media_read;
mod queue;
mod wake;

pub use crate::service::{notify, Ended};
pub use config::{
    from_device_json, health_path, json_path, to_target_data, DeviceConfig, IO_BUF_BYTES, RUN_DIR,
    TARGET_NAME,
};
pub use daemon::{
    check_geometry, default_queues, isolate_mount_namespace, serve, DeviceSpec, ServeError,
    DEFAULT_DEPTH, MAX_DEFAULT_QUEUES,
};
pub use devices::{
    daemon_alive, device, list, remove, resolve, Device, DeviceState, Removal, RemoveError,
};
pub use errno::{copy_errno, read_errno, refused_op_errno};
