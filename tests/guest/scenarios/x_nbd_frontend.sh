# x: `add --frontend nbd` on a kernel with ublk: /dev/sr0 served through the kernel's nbd driver (/dev/nbdN,
# read-only, 2048-byte blocks) next to a ublk device serving the ISO file; `list` shows both kinds, live; each
# device's bytes equal the ISO, the nbd one's file system mounts with matching files; `del` removes both, the
# nbd one disconnected, and the sr0 cache's map holds the whole disc.
. /scenarios/lib.sh

[ -e /dev/ublk-control ] || fail "this scenario is for kernels with ublk, but /dev/ublk-control is missing"
ublk="$(blk_add "$ISO" --cache /tmp/x-ublk)" || exit 1
nbd="$(blk_add /dev/sr0 --frontend nbd --cache /tmp/x-nbd)" || exit 1
case "$ublk" in /dev/ublkb*) ;; *) fail "add gave $ublk, not /dev/ublkbN" ;; esac
case "$nbd" in /dev/nbd*) ;; *) fail "add --frontend nbd gave $nbd, not /dev/nbdN" ;; esac
name="${nbd#/dev/}"
note "$ublk (ublk) and $nbd (nbd) side by side"
expect_eq "$name logical_block_size" "$(cat /sys/block/$name/queue/logical_block_size)" 2048
expect_eq "$name read-only" "$(cat /sys/block/$name/ro)" 1
blkcache list
blkcache list | grep -Eq "^$nbd +nbd +live " || fail "blkcache list does not show $nbd as a live nbd device"
blkcache list | grep -Eq "^$ublk +ublk +live " || fail "blkcache list does not show $ublk as a live ublk device"
cmp "$nbd" "$ISO" || fail "$nbd differs from the ISO"
cmp "$ublk" "$ISO" || fail "$ublk differs from the ISO"
expect_files_match "$nbd" /mnt/v
must blkcache del "$nbd" "$ublk"
[ -e "/sys/block/$name/pid" ] && fail "$nbd is still connected after del"
[ -b "$ublk" ] && fail "$ublk still exists after del"
map_expect "$(cache_map /tmp/x-nbd)" "0 $(stat -c %s "$ISO") +"
exit 0
