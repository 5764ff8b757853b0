/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * kh_daxlike's ioctls, shared by the module and the guest helpers.
 */
#ifndef KH_UAPI_DAXLIKE_H
#define KH_UAPI_DAXLIKE_H

#include <linux/ioctl.h>
#include <linux/types.h>

/*
 * Move block @index to a freshly allocated page, as a filesystem moves a
 * DAX block: publish the new page, wait @window_us, then zap the old
 * mappings. The wait is the driver bug DX4 reproduces on purpose: a write
 * fault in the window finds the new page in the driver and the old one in
 * the PTE (0 keeps only the window the scheduler gives).
 */
struct kh_dx_move {
	__u32 index;
	__u32 window_us;
};

#define KH_DX_IOC_MOVE	_IOW('K', 0x40, struct kh_dx_move)
/* Make block (arg) a hole: zapped, zeroed, read faults map the zero page. */
#define KH_DX_IOC_PUNCH	_IO('K', 0x41)

#endif /* KH_UAPI_DAXLIKE_H */
