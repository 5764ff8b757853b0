#!/bin/sh
# kharness guest agent: serves commands on the virtio port named kh.agent.
#
# Host -> guest, one line:  RUN <id> <base64 of a shell script>
#                           PUT <id> <size> <octal mode> <base64 of the path>,
#                               then exactly <size> raw bytes
#                           POWEROFF
# Guest -> host:            READY <uname -r>
#                           OUT <id> / base64 lines / ERR <id> / base64 lines / END <id> <status>
# The console stays the kernel's alone; nothing here is scraped from it.
# Commands run with fd 3 closed, and a virtio port opens only once, so a
# command cannot write to the channel; its output travels as base64, whose
# lines can never read as a frame.

# The port shows up asynchronously where virtio_console is a module.
port=
tries=0
while [ -z "$port" ] && [ $tries -lt 100 ]; do
	for p in /sys/class/virtio-ports/*; do
		[ "$(cat "$p/name" 2>/dev/null)" = kh.agent ] && port=/dev/${p##*/}
	done
	[ -n "$port" ] && [ -c "$port" ] && break
	port=
	tries=$((tries + 1))
	sleep 0.1
done
if [ -z "$port" ]; then
	echo "kh-agent: no virtio port named kh.agent" >/dev/console
	exit 1
fi
exec 3<>"$port"
# virtme-ng's init may leave debugfs to us; the initramfs init has mounted it.
grep -q " /sys/kernel/debug " /proc/mounts || mount -t debugfs debugfs /sys/kernel/debug
work=$(mktemp -d /tmp/kh.XXXXXX)
echo "READY $(uname -r)" >&3
while read -r verb id payload <&3; do
	case $verb in
	RUN)
		echo "$payload" | base64 -d >"$work/cmd"
		(cd /tmp && exec sh "$work/cmd") >"$work/out" 2>"$work/err" </dev/null 3>&-
		rc=$?
		{
			echo "OUT $id"; base64 "$work/out"
			echo "ERR $id"; base64 "$work/err"
			echo "END $id $rc"
		} >&3
		;;
	PUT)
		# dd, not head -c: busybox's head reads ahead past the count.
		set -- $payload
		dest=$(echo "$3" | base64 -d)
		big=$(($1 / 65536)) rest=$(($1 % 65536))
		{
			dd bs=65536 count=$big iflag=fullblock
			[ $rest -eq 0 ] || dd bs=$rest count=1 iflag=fullblock
		} 2>/dev/null <&3 >"$work/put"
		: >"$work/err"
		if [ "$(wc -c <"$work/put")" -eq "$1" ] && mkdir -p "$(dirname "$dest")" 2>>"$work/err" &&
			mv "$work/put" "$dest" 2>>"$work/err" && chmod "$2" "$dest" 2>>"$work/err"; then
			echo "END $id 0" >&3
		else
			{ echo "ERR $id"; base64 "$work/err"; echo "END $id 1"; } >&3
		fi
		;;
	POWEROFF)
		sync
		poweroff -f
		;;
	esac
done
