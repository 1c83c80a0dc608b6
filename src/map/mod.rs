//! Which bytes of the source are cached, in GNU ddrescue's model and mapfile format.
//!
//! - [`filemap`]: `FileMap`, the in-memory extents with ddrescue statuses (O(log n) lookup/mark);
//! - [`mod@format`]: the mapfile text format, pure text <-> [`Mapfile`], no I/O;
//! - [`persist`]: loading and atomic, durable saving;
//! - [`stats`]: per-status figures and the `blkcache status` report;
//! - [`picture`]: the map drawn like ddrescueview, for a terminal or as SVG.
//!
//! Nothing here may panic on any input: bad mapfiles are errors naming the file and line.

pub mod filemap;
pub mod format;
pub mod persist;
pub mod picture;
pub mod stats;

pub use filemap::{FileMap, Run, Status};
pub use format::{format, parse, MapError, Mapfile, Meta, Phase};
pub use persist::{load, parse_bytes, save};
pub use stats::{Count, Report, Stats};
