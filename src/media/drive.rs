//! What reads the media: a drive's vendor, model, firmware revision and serial number, from
//! sysfs (`/sys/dev/block/MAJ:MIN/device/{vendor,model,rev}`) and udev's database (`ID_SERIAL`
//! in `/run/udev/data/bMAJ:MIN`), else the SCSI unit serial number page (`device/vpd_pg80`).
//! Recorded in each cache that the drive reads (`cache::DriveRecord`). Only reads files.

use std::path::Path;

/// A drive as sysfs and udev describe it; every field may be missing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DriveInfo {
    /// `device/vendor` (e.g. "QEMU", "HL-DT-ST").
    pub vendor: Option<String>,
    /// `device/model`.
    pub model: Option<String>,
    /// `device/rev`: the firmware revision.
    pub rev: Option<String>,
    /// udev's `ID_SERIAL`, else the serial of `device/vpd_pg80`.
    pub serial: Option<String>,
}

impl DriveInfo {
    /// The block device `rdev` (major and minor) as sysfs under `sys` and udev's database
    /// under `udev_data` describe it (for a partition: its disk).
    pub fn of(rdev: u64, sys: &Path, udev_data: &Path) -> DriveInfo {
        let (major, minor) = (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev));
        let mut dir = sys.join(format!("dev/block/{major}:{minor}"));
        if dir.join("partition").exists() {
            dir = dir.join("..");
        }
        let dev = dir.join("device");
        let text = |name: &str| {
            std::fs::read(dev.join(name))
                .ok()
                .and_then(|b| clean(&String::from_utf8_lossy(&b)))
        };
        let udev_serial = std::fs::read_to_string(udev_data.join(format!("b{major}:{minor}")))
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("E:ID_SERIAL="))
                    .and_then(clean)
            });
        let vpd_serial = || {
            // SPC: 4-byte header (byte 3: page length), then the serial in ASCII.
            let page = std::fs::read(dev.join("vpd_pg80")).ok()?;
            let len = usize::from(*page.get(3)?);
            clean(&String::from_utf8_lossy(page.get(4..4 + len)?))
        };
        DriveInfo {
            vendor: text("vendor"),
            model: text("model"),
            rev: text("rev"),
            serial: udev_serial.or_else(vpd_serial),
        }
    }

    /// The block device `rdev` as this machine describes it.
    pub fn of_device(rdev: u64) -> DriveInfo {
        DriveInfo::of(rdev, Path::new("/sys"), Path::new("/run/udev/data"))
    }
}

/// Trimmed, printable, non-empty.
fn clean(s: &str) -> Option<String> {
    let t: String = s
        .trim_matches(|c: char| c.is_whitespace() || c == '\0')
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    (!t.is_empty()).then_some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sysfs_and_udev_as_the_kernel_lays_them_out() {
        let root = tempfile::tempdir().unwrap();
        let sys = root.path().join("sys");
        let udev = root.path().join("udev");
        let dev = sys.join("dev/block/11:0/device");
        std::fs::create_dir_all(&dev).unwrap();
        std::fs::create_dir_all(&udev).unwrap();
        std::fs::write(dev.join("vendor"), "QEMU    \n").unwrap();
        std::fs::write(dev.join("model"), "QEMU CD-ROM     \n").unwrap();
        std::fs::write(dev.join("rev"), "2.5+\n").unwrap();
        let rdev = nix::sys::stat::makedev(11, 0);
        let info = DriveInfo::of(rdev, &sys, &udev);
        assert_eq!(info.vendor.as_deref(), Some("QEMU"));
        assert_eq!(info.model.as_deref(), Some("QEMU CD-ROM"));
        assert_eq!(info.rev.as_deref(), Some("2.5+"));
        assert_eq!(info.serial, None);
        std::fs::write(dev.join("vpd_pg80"), b"\x05\x80\x00\x04AB12").unwrap();
        assert_eq!(
            DriveInfo::of(rdev, &sys, &udev).serial.as_deref(),
            Some("AB12")
        );
        std::fs::write(
            udev.join("b11:0"),
            "S:cdrom\nE:ID_SERIAL=QEMU_DVD-ROM_QM00003\n",
        )
        .unwrap();
        assert_eq!(
            DriveInfo::of(rdev, &sys, &udev).serial.as_deref(),
            Some("QEMU_DVD-ROM_QM00003")
        );
    }
}
