#!/usr/bin/env bash
# File uploads on local storage (functions from bench/lib.sh). A report, not a test: always
# exits 0. Needs ImageMagick's `convert` to make the test photo.
#
#   (a) a 10 MB file through `files.upload` (FormData, local storage) against writing the
#       same bytes to disk (cp + sync): the overhead of the upload path itself. Measured on
#       a text file of the same size (no image processing) and on the photo.
#   (b) the photo's processing (decode, orient, re-encode without metadata, 320 px thumbnail,
#       ThumbHash): the photo's upload time minus the text file's.
#   (c) peak resident memory (VmHWM) of the server while BENCH_UPLOADS (8) uploads of the
#       photo complete at once; images are processed one per core at a time.
#
#   BENCH_REPEAT=5   uploads per measurement; the median counts
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"
REPEAT=${BENCH_REPEAT:-5}
UPLOADS=${BENCH_UPLOADS:-8}

command -v convert >/dev/null || { log "ImageMagick's convert is needed (apt-get install imagemagick)"; exit 0; }
ensure_built

PHOTO="$WORK/photo.jpg" TEXT="$WORK/text.txt"
log "making a 12-megapixel JPEG of about 10 MB"
convert -size 4000x3000 xc:gray +noise Gaussian -attenuate 1.5 +noise Gaussian -quality 98 "$PHOTO"
SIZE=$(stat -c %s "$PHOTO")
head -c "$SIZE" /dev/zero | tr '\0' 'a' >"$TEXT"
log "photo: $SIZE bytes"

start_server files ALIAS_MAX_IMAGE_BYTES=$((SIZE + 1)) ALIAS_STORAGE_QUOTA_BYTES=100000000000
body=$(curl -fsS -X POST "$BASE/trpc/auth.register" -H 'content-type: application/json' \
    -d '{"email":"bench@example.com","password":"correct horse battery","name":"Bench"}')
TOKEN=$(printf '%s' "$body" | grep -o '"accessToken":"[^"]*"' | cut -d'"' -f4)

# upload FILE TYPE: one files.upload; prints seconds.
upload() {
    curl -fsS -o /dev/null -w '%{time_total}\n' -H "Authorization: Bearer $TOKEN" \
        -F "file=@$1;type=$2" "$BASE/trpc/files.upload"
}

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

disk=$(for _ in $(seq "$REPEAT"); do
    start=$(date +%s.%N); cp "$PHOTO" "$WORK/copy"; sync "$WORK/copy"; end=$(date +%s.%N)
    awk -v a="$start" -v b="$end" 'BEGIN { print b - a }'; rm -f "$WORK/copy"
done | median)
text=$(for _ in $(seq "$REPEAT"); do upload "$TEXT" text/plain; done | median)
photo=$(for _ in $(seq "$REPEAT"); do upload "$PHOTO" image/jpeg; done | median)

before=$(awk '/VmHWM/ { print $2 }' "/proc/$SERVER_PID/status")
start=$(date +%s.%N)
pids=()
for _ in $(seq "$UPLOADS"); do upload "$PHOTO" image/jpeg >/dev/null & pids+=($!); done
# Only the uploads: a bare `wait` would also wait for the server this script started.
wait "${pids[@]}"
end=$(date +%s.%N)
after=$(awk '/VmHWM/ { print $2 }' "/proc/$SERVER_PID/status")

printf '\nfile of %s bytes, median of %s\n' "$SIZE" "$REPEAT"
printf '%-40s %8.3f s\n' "write to disk (cp + sync)" "$disk"
printf '%-40s %8.3f s\n' "files.upload, text (no processing)" "$text"
printf '%-40s %8.3f s\n' "files.upload, 12 MP JPEG" "$photo"
printf '%-40s %8.3f s\n' "image processing (JPEG - text)" "$(awk -v a="$photo" -v b="$text" 'BEGIN { print a - b }')"
printf '%-40s %8.3f s\n' "$UPLOADS JPEG uploads at once, wall time" "$(awk -v a="$start" -v b="$end" 'BEGIN { print b - a }')"
printf '%-40s %8d MiB (before them: %d MiB)\n' "peak RSS after $UPLOADS at once" $((after / 1024)) $((before / 1024))
