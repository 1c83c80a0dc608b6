//! The drives that read a cache: one [`DriveRecord`] per drive (or file, or test-mode source),
//! kept in `blkcache.json` (`CacheMeta::drives`), added or refreshed by every `add`, `serve` and
//! `fill` that reads the media, and shown by `list` and `status CACHE`.

use serde::{Deserialize, Serialize};

/// One drive (or file) that read the media of a cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriveRecord {
    /// "drive" (a block device), "file", or "test-mode" (a file read through a damage map).
    pub kind: String,
    /// The source path it was read through.
    pub path: String,
    /// Vendor, model, firmware revision and serial (drives; from sysfs and udev).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rev: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// The media size this drive reported (bytes).
    pub size: u64,
    /// First and last time it read the media (seconds since the Unix epoch).
    pub first_seen: u64,
    pub last_seen: u64,
    /// How many times it did (adds, serves, fills).
    pub uses: u64,
}

impl DriveRecord {
    /// Whether `self` and `other` are the same drive: the same kind, vendor, model and serial,
    /// and the same path when there is no serial to tell drives apart.
    fn same_drive(&self, other: &DriveRecord) -> bool {
        (&self.kind, &self.vendor, &self.model, &self.serial)
            == (&other.kind, &other.vendor, &other.model, &other.serial)
            && (self.serial.is_some() || self.path == other.path)
    }

    /// One line: "QEMU QEMU CD-ROM (rev 2.5+, serial X) at /dev/sr0, 1234 bytes, 3 uses".
    pub fn describe(&self) -> String {
        let mut name: Vec<&str> = [&self.vendor, &self.model]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect();
        if name.is_empty() {
            name.push(&self.kind);
        }
        let mut extra = Vec::new();
        if let Some(r) = &self.rev {
            extra.push(format!("rev {r}"));
        }
        if let Some(s) = &self.serial {
            extra.push(format!("serial {s}"));
        }
        let extra = if extra.is_empty() {
            String::new()
        } else {
            format!(" ({})", extra.join(", "))
        };
        format!(
            "{}{extra} at {}, {} bytes, {} use(s)",
            name.join(" "),
            self.path,
            self.size,
            self.uses
        )
    }
}

/// Adds `seen` to `drives`, or refreshes the record of the same drive (last seen, size, uses).
pub fn note(drives: &mut Vec<DriveRecord>, seen: DriveRecord) {
    match drives.iter_mut().find(|d| d.same_drive(&seen)) {
        Some(d) => {
            d.last_seen = seen.last_seen;
            d.size = seen.size;
            d.path = seen.path;
            d.rev = seen.rev.or(d.rev.take());
            d.uses += 1;
        }
        None => drives.push(seen),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(kind: &str, path: &str, serial: Option<&str>, t: u64) -> DriveRecord {
        DriveRecord {
            kind: kind.into(),
            path: path.into(),
            vendor: Some("QEMU".into()),
            model: Some("QEMU CD-ROM".into()),
            rev: None,
            serial: serial.map(Into::into),
            size: 100,
            first_seen: t,
            last_seen: t,
            uses: 1,
        }
    }

    #[test]
    fn one_record_per_drive() {
        let mut d = Vec::new();
        note(&mut d, rec("drive", "/dev/sr0", Some("A"), 1));
        note(&mut d, rec("drive", "/dev/sr1", Some("A"), 2));
        note(&mut d, rec("drive", "/dev/sr1", Some("B"), 3));
        note(&mut d, rec("file", "/x.iso", None, 4));
        note(&mut d, rec("file", "/y.iso", None, 5));
        assert_eq!(d.len(), 4, "{d:?}");
        assert_eq!((d[0].uses, d[0].first_seen, d[0].last_seen), (2, 1, 2));
        assert_eq!(d[0].path, "/dev/sr1");
        assert!(d[0]
            .describe()
            .starts_with("QEMU QEMU CD-ROM (serial A) at /dev/sr1"));
    }
}
