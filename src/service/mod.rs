//! What a daemon serving a kernel block device does whatever its frontend (ublk or the kernel's
//! nbd driver), so that `list`, the systemd unit and the udev rules work the same for both:
//!
//! - `keeper`: the thread that saves the map, publishes the cache health and, under a service
//!   manager, reports STATUS and ends the device when the disc changes;
//! - `health`: the cache health file `blkcache list` reads;
//! - `notify`: READY/STATUS/STOPPING for a service manager (`Type=notify`).

mod health;
pub mod keeper;
pub mod notify;

pub use health::published_health;
pub use keeper::{Keeper, Watch};

/// Why serving a device ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// A stop was asked for (a signal, `blkcache del`), or the device was removed.
    Stopped,
    /// The disc was swapped or ejected (`end_on_media_change`).
    MediaChanged,
}
