//! blkcache: a transparent, persistent read-through cache for physical media.
//!
//! Layers, bottom up (none of them knows about ublk but the last):
//! - [`map`]: which bytes are cached, in GNU ddrescue's mapfile model and text format;
//! - [`image`]: the sparse image file that holds the cached bytes;
//! - [`media`]: what is read (block devices, optical drives, plain files, test-mode media);
//! - [`engine`]: the read path joining the three;
//! - [`serve`]: one serve configuration, and opening media and cache to serve it;
//! - [`rescue`]: GNU ddrescue's strategy for reading a whole media through the engine (`fill`);
//! - [`control`]: the control socket of a serving daemon (fills and live status);
//! - [`service`]: what every daemon serving a kernel block device does (map saves, cache health,
//!   service manager notifications), whichever the frontend;
//! - `ublk`: the thin adapter that serves a `/dev/ublkbN` from the engine;
//! - [`nbd`]: the other adapter, serving the engine to NBD clients and the kernel's `nbd` driver.

pub mod cache;
pub mod control;
pub mod engine;
pub mod files;
pub mod image;
pub mod map;
pub mod media;
pub mod nbd;
pub mod rescue;
pub mod serve;
pub mod service;
pub mod ublk;
