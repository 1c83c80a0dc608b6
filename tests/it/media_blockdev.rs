//! `FileMedia` on a real block device: a read-only loop device with 2048-byte sectors (like an
//! optical disc), exercising BLKGETSIZE64, BLKSSZGET, O_DIRECT and sysfs `removable`.
//!
//! Needs `losetup` and the right to attach loop devices (root); fails saying so otherwise.

use std::sync::Arc;

use blkcache::engine::{Engine, EngineConfig};
use blkcache::image::Image;
use blkcache::map::{Mapfile, Meta};
use blkcache::media::{fingerprint, AlignedBuf, FileMedia, Media, MediaError, MediaOptions};
use rand::{RngCore, SeedableRng};

use crate::util::Loop;

#[test]
fn a_loop_device_with_2048_byte_sectors_is_read_through_the_ioctls() {
    let dir = tempfile::tempdir().unwrap();
    let backing = dir.path().join("disc.iso");
    let mut data = vec![0u8; 4 << 20];
    rand::rngs::StdRng::seed_from_u64(42).fill_bytes(&mut data);
    std::fs::write(&backing, &data).unwrap();
    let dev = Loop::attach(&backing, 2048);

    let media = FileMedia::open(&dev.0, MediaOptions::default()).unwrap();
    assert!(media.is_block_device());
    assert_eq!(media.size(), 4 << 20, "BLKGETSIZE64");
    assert_eq!(media.sector_size(), 2048, "BLKSSZGET");
    assert_eq!(
        media.removable(),
        Some(false),
        "sysfs removable of a loop device"
    );
    assert!(media.direct(), "loop devices take O_DIRECT");
    let flags = nix::fcntl::fcntl(media.raw_fd(), nix::fcntl::FcntlArg::F_GETFL).unwrap();
    assert_eq!(flags & libc::O_ACCMODE, libc::O_RDONLY);
    assert!(
        media.describe().contains("2048-byte sectors"),
        "{}",
        media.describe()
    );
    let mut buf = AlignedBuf::new(8192);
    assert_eq!(media.read_at(2048 * 7, &mut buf).unwrap(), 8192);
    assert!(buf[..] == data[2048 * 7..2048 * 7 + 8192]);
    // The same disc seen through the file and through the device has the same identity.
    let via_file = FileMedia::open(
        &backing,
        MediaOptions {
            sector_size: Some(2048),
            ..MediaOptions::default()
        },
    )
    .unwrap();
    assert_eq!(
        fingerprint(&media, &dev.0).unwrap(),
        fingerprint(&via_file, &backing).unwrap()
    );

    // 512-byte sectors cannot be read from a 2048-byte device.
    let err = FileMedia::open(
        &dev.0,
        MediaOptions {
            sector_size: Some(512),
            ..MediaOptions::default()
        },
    )
    .unwrap_err();
    assert!(
        matches!(err, MediaError::SectorSize { size: 512, .. }),
        "{err}"
    );

    // The engine over the device: 512-aligned requests inside 2048-byte sectors.
    let media: Arc<dyn Media> = Arc::new(media);
    let image = Image::create(&dir.path().join("image"), media.size()).unwrap();
    let mapfile = Mapfile::new(media.size(), Meta::default());
    let engine = Engine::new(
        media,
        image,
        mapfile,
        dir.path().join("map"),
        EngineConfig::default(),
    )
    .unwrap();
    let mut out = vec![0u8; 3 * 512];
    engine.read(512 * 5, &mut out).unwrap();
    assert!(out == data[512 * 5..512 * 8]);
    engine.read(512 * 5, &mut out).unwrap();
    assert_eq!(engine.counters().media_reads, 1);
}
