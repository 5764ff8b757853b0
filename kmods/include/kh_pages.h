/* SPDX-License-Identifier: GPL-2.0 */
/*
 * kh_pages.h - the content of the pages our modules hand out: each stamped
 * with its index in the object (uapi/kh_stamp.h), and read(2) of the device
 * returning the object's bytes at the file offset, so a test compares what
 * a mapping at any offset shows with what the object holds there.
 */
#ifndef KH_PAGES_H
#define KH_PAGES_H

#include <linux/highmem.h>
#include <linux/mm.h>
#include <linux/uaccess.h>

#include "uapi/kh_stamp.h"

static inline void kh_stamp_page(struct page *page, unsigned long idx)
{
	u64 *w = kmap_local_page(page);
	unsigned long i;

	for (i = 0; i < PAGE_SIZE / sizeof(*w); i++)
		w[i] = KH_STAMP(idx, i);
	kunmap_local(w);
}

/*
 * read(2) of an object of nr pages: the bytes at *ppos, to the object's
 * end. The caller holds what keeps pages[] stable.
 */
static inline ssize_t kh_read_pages(struct page **pages, unsigned long nr,
				    char __user *ubuf, size_t count, loff_t *ppos)
{
	loff_t size = (loff_t)nr << PAGE_SHIFT;
	size_t done = 0;

	if (*ppos < 0)
		return -EINVAL;
	while (done < count && *ppos < size) {
		unsigned long idx = *ppos >> PAGE_SHIFT, off = offset_in_page(*ppos);
		size_t len = min_t(size_t, count - done, PAGE_SIZE - off);
		char *p = kmap_local_page(pages[idx]);
		unsigned long left = copy_to_user(ubuf + done, p + off, len);

		kunmap_local(p);
		done += len - left;
		*ppos += len - left;
		if (left)
			return done ? done : -EFAULT;
	}
	return done;
}

#endif /* KH_PAGES_H */
