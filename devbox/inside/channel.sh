# devbox's channel into the container: one long-lived exec of the container's sh that reads requests
# on stdin and answers on stdout, so that a request costs no exec of its own (an exec is three calls to
# the engine and a runc start: 30-100 ms on a remote engine). It needs only sh, dd, rm and tar.
#
# "files TAR RM": TAR bytes of a tar archive (paths relative to /), then RM bytes of newline-separated
#   absolute paths to delete first ("*.pyc" globs allowed, for the bytecode of a changed module), so a
#   file may become a folder and back. Answer: "devbox-files ok" or "devbox-files failed: <last line>".
# "run N MARKER": N bytes of a sh script, run. Answer: its output, a newline, then "MARKER CODE".
#
# Exact reads matter: the next request's line follows the bytes at once. busybox's `head -c` reads
# ahead on a pipe, so `dd iflag=fullblock` counts the bytes; the first lines check it does.
set -u
d=/.devbox/channel-$$
mkdir -p "$d" || exit 1
check=$( (printf 'ab'; sleep 0.05; printf 'cdXY\n') | { dd bs=4 count=1 iflag=fullblock 2>/dev/null; IFS= read -r x; echo "$x"; })
if [ "$check" != "abcdXY" ]; then
  echo "devbox-channel unable"  # no exact reads: devbox uses the engine's API instead
  exit 0
fi
if command -v tar >/dev/null 2>&1; then echo "devbox-channel ready files"; else echo "devbox-channel ready"; fi

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

files() {
  take "$1" "$d/in.tar"
  take "$2" "$d/rm.list"
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
  if [ -n "$failed" ]; then echo "devbox-files failed: $failed"; else echo "devbox-files ok"; fi
}

while IFS=' ' read -r op a b; do
  case "$op" in
    files) files "$a" "$b" ;;
    run) take "$a" "$d/run.sh"; sh "$d/run.sh" 2>&1 < /dev/null; printf '\n%s %s\n' "$b" "$?" ;;
    *) echo "devbox-channel unknown request: $op"; exit 1 ;;
  esac
done
rm -rf "$d"
