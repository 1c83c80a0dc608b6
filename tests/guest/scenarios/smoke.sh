# smoke: the harness itself. Modules are loaded, ublk control exists, the emulated CD has 2048-byte sectors and
# reads the test ISO, scsi_debug injects a medium error that an O_DIRECT read sees as ENODATA, and the host's QEMU
# monitor ejects and changes the disc on request.
. /scenarios/lib.sh

for m in ublk_drv loop sr_mod isofs virtio_scsi; do
    grep -q "^$m " /proc/modules || fail "module $m not loaded"
done
[ -c /dev/ublk-control ] || fail "/dev/ublk-control missing"
[ -b /dev/sr0 ] || fail "/dev/sr0 missing"
expect_eq "sr0 logical block size" "$(cat /sys/block/sr0/queue/logical_block_size)" 2048
expect_eq "sr0 size (512-byte units)" "$(cat /sys/block/sr0/size)" "$(( $(stat -c %s "$ISO") / 512 ))"
# The drive holds exactly the test ISO, read with O_DIRECT in 2048-byte blocks.
must cmp /dev/sr0 "$ISO"
r0="$(dev_reads sr0)"
must dd if=/dev/sr0 of=/tmp/first.bin bs=2048 count=16 iflag=direct status=none
r1="$(dev_reads sr0)"
[ "$r1" -gt "$r0" ] || fail "O_DIRECT read did not reach sr0 (reads $r0 -> $r1)"
dd if="$ISO" of=/tmp/first.ref bs=2048 count=16 status=none
must cmp /tmp/first.bin /tmp/first.ref
# The ISO mounts and its files match the host's checksums.
expect_files_match /dev/sr0 /mnt/cd

# scsi_debug: a 2048-byte-sector disk with 4 bad sectors at LBA 100.
sdev="$(scsi_debug_load dev_size_mb=8 sector_size=2048 opts=2 medium_error_start=100 medium_error_count=4 delay=0)"
note "scsi_debug device: $sdev"
expect_eq "$sdev logical block size" "$(cat /sys/block/$sdev/queue/logical_block_size)" 2048
must dd if="/dev/$sdev" of=/dev/null bs=2048 skip=99 count=1 iflag=direct status=none
expect_direct_error "/dev/$sdev" 2048 100 "No data available"
expect_direct_error "/dev/$sdev" 2048 103 "No data available"
must dd if="/dev/$sdev" of=/dev/null bs=2048 skip=104 count=1 iflag=direct status=none
scsi_debug_unload

# Media change through the host's QEMU monitor: eject, insert the other disc, then the test disc again.
host_cmd "eject -f cd0"
wait_for 20 sh -c '! dd if=/dev/sr0 of=/dev/null bs=2048 count=1 iflag=direct'
note "ejected: $(dd if=/dev/sr0 of=/dev/null bs=2048 count=1 iflag=direct 2>&1 | tail -n1)"
host_cmd "change cd0 @DATA@/other.iso raw read-only"
wait_for 20 cmp /dev/sr0 "$DATA/other.iso"
host_cmd "change cd0 @DATA@/test.iso raw read-only"
wait_for 20 cmp /dev/sr0 "$ISO"

if command -v blkcache > /dev/null; then
    blkcache --version || fail "blkcache --version failed"
fi
exit 0
