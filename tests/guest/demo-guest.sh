# Guest side of `make demo` (run as a scenario named "demo-guest"): the emulated CD drive through blkcache.
. /scenarios/lib.sh

show() { # show CMD...: print the command like a terminal would, then run it
    echo "DEMO \$ $*"
    "$@" 2>&1 | sed 's/^/DEMO   /'
}
cache=/tmp/demo-cache
echo "DEMO The emulated drive: /dev/sr0, $(cat /sys/block/sr0/queue/logical_block_size)-byte sectors"
echo "DEMO \$ blkcache add /dev/sr0 --cache $cache"
dev="$(blk_add /dev/sr0 --cache "$cache")" || exit 1
echo "DEMO   $dev"
show blkcache list
mkdir -p /mnt/cd
show mount -t iso9660 -o ro "$dev" /mnt/cd
show ls -lR /mnt/cd
show head -n 3 /mnt/cd/docs/readme.txt
show sha256sum /mnt/cd/media/big-a.bin
show cat /sys/block/sr0/stat
show blkcache del "$dev"
show blkcache status "$cache/mapfile"
show cat "$cache/mapfile"
echo "DEMO Second time: the same files come from the cache; the drive's read counter does not move"
dev="$(blk_add /dev/sr0 --cache "$cache")" || exit 1
before="$(dev_reads sr0)" # after add: add reads the disc's first 64 KiB to check its identity
show mount -t iso9660 -o ro "$dev" /mnt/cd
show sha256sum /mnt/cd/media/big-a.bin
echo "DEMO drive reads before: $before, after: $(dev_reads sr0)"
umount /mnt/cd
blkcache del "$dev"
exit 0
