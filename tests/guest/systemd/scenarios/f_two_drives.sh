# Two drives at once: sr0 and sr1 each get their own unit and device. The same disc in both is served by the first;
# the second is refused (one writer per cache) with the reason in its unit's status. Another disc in sr1 is then
# served beside the first.
# boot-disc: none
# install: scenario

U1=blkcache@sr1.service
LINK1=/dev/blkcache/sr1
note "disc A in sr0"
dev0="$(serve "$ISO_A")"
note "disc A in sr1 as well"
insert "$ISO_A" cd1
wait_for 40 unit_is "$U1" failed
status="$(unit_prop "$U1" StatusText)"
case "$status" in *"failed: "*"in use by another blkcache"*) ;; *) fail "$U1 status does not say why: '$status'" ;; esac
note "$U1: $status"
[ -e "$LINK1" ] && fail "$LINK1 exists for a refused drive"
unit_is "$UNIT" active || fail "$UNIT is $(unit_state "$UNIT") after sr1 was refused"
cmp "$LINK" "$ISO_A" || fail "$LINK no longer serves disc A"

note "disc B in sr1"
insert "$ISO_B" cd1
wait_for 40 link_serves "$ISO_B" "$LINK1"
dev1="$(served_dev "$LINK1")"
[ "$dev1" != "$dev0" ] || fail "sr0 and sr1 share $dev0"
cmp "$LINK1" "$ISO_B" || fail "$LINK1 differs from disc B"
cmp "$LINK" "$ISO_A" || fail "$LINK differs from disc A with B in sr1"
expect_eq "list --json device of /dev/sr1" "$(listed_dev /dev/sr1)" "$dev1"
expect_eq "list --json device of /dev/sr0" "$(listed_dev /dev/sr0)" "$dev0"
