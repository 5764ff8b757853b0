#!/bin/sh
# kharness guest agent: serves commands on the virtio port named kh.agent.
#
# Host -> guest, one line:  RUN <id> <base64 of a shell script>
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
	POWEROFF)
		sync
		poweroff -f
		;;
	esac
done
