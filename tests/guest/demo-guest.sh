# Guest side of `make demo` (run as a scenario named "demo-guest"): the emulated CD drive through blkcache. Every
# console line starts with "DEMO" (run.sh shows only those); commands are shown as "DEMO $ CMD", output indented.
# It fails (and so does `make demo`) if the second pass makes the drive read anything.
. /scenarios/lib.sh

show() { # show CMD...: print the command like a terminal would, run it, print its output; fail if it fails
    echo "DEMO \$ $*"
    "$@" > /tmp/demo-show.out 2>&1
    s_rc=$?
    sed 's/^/DEMO   /' /tmp/demo-show.out
    [ $s_rc -eq 0 ] || fail "$* failed (exit $s_rc)"
}
add() { # add: blkcache add of the drive, shown with the device it printed; sets dev
    echo "DEMO \$ blkcache add /dev/sr0 --cache $cache"
    dev="$(blk_add /dev/sr0 --cache "$cache")" || exit 1
    echo "DEMO   $dev"
}
reads() { echo "DEMO drive reads so far: $(dev_reads sr0)${1:+ ($1)}"; }
cache=/tmp/demo-cache
mkdir -p /mnt/cd

echo "DEMO The emulated drive: /dev/sr0, $(cat /sys/block/sr0/queue/logical_block_size)-byte sectors."
echo "DEMO blkcache puts a cached block device in front of it; every sector read through it is kept in $cache."
reads
add
show blkcache list
show mount -t iso9660 -o ro "$dev" /mnt/cd
echo "DEMO \$ cd /mnt/cd"
cd /mnt/cd
show ls -lR
show head -n 3 docs/readme.txt
echo "DEMO Every file against the checksums the host took when it made the disc:"
show sha256sum -c /data/manifest.sha256
reads
echo "DEMO \$ cd /"
cd /
show umount /mnt/cd
show blkcache del "$dev"
echo "DEMO What is cached so far ('+' = cached, '?' = not read yet), in GNU ddrescue's mapfile format:"
show blkcache status "$cache/mapfile"
show cat "$cache/mapfile"

echo "DEMO Second time, same cache: the files come from the cache, the drive is not read again."
add
before="$(dev_reads sr0)"
reads "add reads the disc's first 64 KiB to check it is the same disc"
show mount -t iso9660 -o ro "$dev" /mnt/cd
echo "DEMO \$ cd /mnt/cd"
cd /mnt/cd
show sha256sum -c /data/manifest.sha256
cd /
after="$(dev_reads sr0)"
reads "$((after - before)) new"
umount /mnt/cd
blkcache del "$dev" > /dev/null
expect_eq "drive reads during the second pass" "$after" "$before"
exit 0
