/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * What every page our modules hand out holds until a test writes to it:
 * 64-bit word w of the object's page i is KH_STAMP(i, w). A mapping that
 * shows another page of the object, or a page shifted, repeated or zeroed,
 * cannot read as the right one. f_op->read returns the object's content at
 * the file offset: the other way to read what a mapping shows. Shared by
 * the modules and the guest helpers.
 */
#ifndef KH_UAPI_STAMP_H
#define KH_UAPI_STAMP_H

#include <linux/types.h>

#define KH_STAMP_MAGIC		0x4b48ULL	/* "KH" */
#define KH_STAMP(page, word)	((__u64)KH_STAMP_MAGIC << 48 | (__u64)(page) << 20 | \
				 (__u64)(word))
/* The object page a stamped word names, or -1 if it is no stamp. */
#define KH_STAMP_PAGE(v)	((v) >> 48 == KH_STAMP_MAGIC ? (long)(((v) >> 20) & 0xfffffff) \
							     : -1L)

#endif /* KH_UAPI_STAMP_H */
