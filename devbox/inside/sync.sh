# devbox's file sync, run by the container's sh through one long-lived exec (sync: on).
# It reads batches on stdin and answers one line each on stdout; it needs only sh, dd, rm and tar.
#
# A batch is a line "TAR RM" (two byte counts) followed by TAR bytes of a tar archive (paths relative
# to /) and RM bytes of newline-separated absolute paths to delete ("*.pyc" globs allowed, for the
# bytecode of a changed module). Deletions go first, so a file may become a folder and back.
# Answers: "devbox-sync ok" or "devbox-sync failed: <tar's or rm's last line>".
#
# Exact reads matter: the next batch's line follows the bytes at once. busybox's `head -c` reads
# ahead on a pipe, so `dd iflag=fullblock` counts the bytes; the first lines check it does.
set -u
d=/.devbox/sync
mkdir -p "$d" || exit 1
check=$( (printf 'ab'; sleep 0.05; printf 'cdXY\n') | { dd bs=4 count=1 iflag=fullblock 2>/dev/null; IFS= read -r x; echo "$x"; })
if [ "$check" != "abcdXY" ] || ! command -v tar >/dev/null 2>&1; then
  echo "devbox-sync unable"  # no exact reads or no tar: devbox falls back to the archive API
  exit 0
fi
echo "devbox-sync ready"

take() {  # take $1 bytes of stdin into the file $2
  : > "$2"
  if [ "$(($1 / 65536))" -gt 0 ]; then dd bs=65536 count="$(($1 / 65536))" iflag=fullblock 2>/dev/null >> "$2"; fi
  if [ "$(($1 % 65536))" -gt 0 ]; then dd bs="$(($1 % 65536))" count=1 iflag=fullblock 2>/dev/null >> "$2"; fi
  return 0
}

last_line() {
  last=""
  while IFS= read -r line; do last=$line; done < "$1"
  echo "$last"
}

while IFS=' ' read -r tar_bytes rm_bytes; do
  take "$tar_bytes" "$d/in.tar"
  take "$rm_bytes" "$d/rm.list"
  failed=""
  if [ -s "$d/rm.list" ]; then
    set --
    while IFS= read -r path; do
      case "$path" in *'*.pyc') set -- "$@" "${path%\*.pyc}"*.pyc ;; *) set -- "$@" "$path" ;; esac
    done < "$d/rm.list"
    rm -rf -- "$@" 2> "$d/err" || failed="rm: $(last_line "$d/err")"
  fi
  if [ -z "$failed" ] && [ -s "$d/in.tar" ]; then
    tar -xf "$d/in.tar" -C / 2> "$d/err" || failed="tar: $(last_line "$d/err")"
  fi
  if [ -n "$failed" ]; then echo "devbox-sync failed: $failed"; else echo "devbox-sync ok"; fi
done
