# r: add --fill. The ISO behind a damage map (4 bad sectors in the padding at its end, 30 ms per read) served
# with --fill: the daemon reads the whole disc into its cache with GNU ddrescue's strategy while the mounted file
# system is read (the files match); once the fill ends, the map has nothing left to try, exactly the damaged
# sectors are bad, and the image equals the ISO wherever '+'.
. /scenarios/lib.sh

cache=/tmp/r-cache
damaged_copy r

dev="$(blk_add "$src" --cache "$cache" --test-mode "$damage" --test-latency 30 --sector-size $ss --fill)" || exit 1
note "device $dev, filling in the background"
expect_files_match "$dev" /mnt/r
log="$cache/daemon.log"
grep -q "fill ended" "$log" && note "(the fill had already ended when the files were read)"
i=0
until grep -q "fill ended" "$log"; do
    i=$((i + 1))
    [ $i -gt 300 ] && fail "the fill did not end within 300 s: $(tail -n3 "$log" | tr '\n' ' ')"
    sleep 1
done
note "$(grep "fill ended" "$log" | tail -n1)"
must blkcache del "$dev"
map="$(cache_map "$cache")" || exit 1
set -- $(status_json "$map" non_tried)
expect_eq "non-tried bytes after the fill" "$1" 0
expect_eq "bad runs after the fill" "$(map_runs_of "$map" - | tr '\n' ';')" "$((bad * ss)) $((4 * ss));"
expect_eq "rescued bytes after the fill" "$(map_bytes "$map" +)" $((size - 4 * ss))
img="$(cache_image "$cache")" || exit 1
expect_cached_match "$map" "$img" "$ISO"
exit 0
