// SPDX-License-Identifier: GPL-2.0
/*
 * kh_daxlike - a DAX-style driver for kharness: a pool of pages the module
 * owns ("blocks"), mapped on fault, with a write-notify (mkwrite) path.
 *
 *   /dev/kh_daxlike_special     vmf_insert_mixed() of the PFN: special PTEs
 *                               (where the arch has them), no reference
 *                               taken on the page; pfn_mkwrite
 *   /dev/kh_daxlike_refcounted  VM_MIXEDMAP, the page inserted with a
 *                               reference (vmf_insert_page_mkwrite() where
 *                               it exists, vmf_insert_page() before);
 *                               page_mkwrite
 *
 * Both are VM_MIXEDMAP, as DAX is: VM_PFNMAP would make a MAP_PRIVATE
 * mapping hit vmf_insert_pfn_prot()'s BUG_ON for COW mappings (it did, on
 * 7.2, the first time DX5 ran). File page N is block N.
 *
 * The write-notify path is DAX's: both pfn_mkwrite and page_mkwrite look the
 * block up again and insert it for writing (kh_vmf_insert_*_mkwrite()),
 * first zapping a zero page a read fault of a hole left there (DX3). The
 * MOVE ioctl reallocates a block in the wrong order, on purpose (DX4).
 *
 * The blocks live as long as the module, so what a mapping wrote stays
 * readable in debugfs after it is gone: /sys/kernel/debug/kh_daxlike/<mode>/
 * {stats,pages}, a "pages" line being "index pfn refcount mapcount byte8
 * hole" (byte8: the byte at offset 8 of the block).
 */
#include <linux/debugfs.h>
#include <linux/delay.h>
#include <linux/fs.h>
#include <linux/highmem.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/pagemap.h>
#include <linux/seq_file.h>

#include "kh_compat.h"
#include "kh_pages.h"
#include "uapi/kh_daxlike.h"

static unsigned int nr_blocks = 8;
module_param(nr_blocks, uint, 0444);
MODULE_PARM_DESC(nr_blocks, "pages in each device's pool (default 8)");

enum kh_dx_mode { KH_DX_SPECIAL, KH_DX_REFCOUNTED, KH_DX_NR_MODES };

static const char *const kh_dx_mode_names[KH_DX_NR_MODES] = {
	[KH_DX_SPECIAL] = "special",
	[KH_DX_REFCOUNTED] = "refcounted",
};

struct kh_dx_dev {
	enum kh_dx_mode mode;
	char name[32];
	struct miscdevice misc;
	struct mutex lock;		/* blocks[] and holes */
	struct page **blocks;
	unsigned long *holes;		/* blocks whose read faults map the zero page */
	atomic_long_t open_mappings;
	atomic_long_t mmaps;
	atomic_long_t faults;
	atomic_long_t zero_maps;	/* read faults of a hole */
	atomic_long_t zero_refused;	/* ... where the kernel refused the zero page */
	atomic_long_t mkwrite_calls;
	atomic_long_t mkwrite_stale;	/* the PTE mapped an older page of the block */
	atomic_long_t moves;
};

static struct kh_dx_dev kh_dx_devs[KH_DX_NR_MODES];
static struct dentry *kh_dx_debugfs;

static struct kh_dx_dev *kh_dx_of(struct vm_area_struct *vma)
{
	return vma->vm_private_data;
}

static void kh_dx_vm_open(struct vm_area_struct *vma)
{
	atomic_long_inc(&kh_dx_of(vma)->open_mappings);
}

static void kh_dx_vm_close(struct vm_area_struct *vma)
{
	atomic_long_dec(&kh_dx_of(vma)->open_mappings);
}

static unsigned long kh_dx_zero_pfn(struct vm_fault *vmf)
{
	return page_to_pfn(ZERO_PAGE(vmf->address));
}

static vm_fault_t kh_dx_insert(struct kh_dx_dev *dev, struct vm_fault *vmf, struct page *page)
{
	if (dev->mode == KH_DX_SPECIAL)
		return kh_vmf_insert_mixed(vmf, page_to_pfn(page));
	return kh_vmf_insert_page(vmf, page);
}

static vm_fault_t kh_dx_fault(struct vm_fault *vmf)
{
	struct kh_dx_dev *dev = kh_dx_of(vmf->vma);
	pgoff_t idx = vmf->pgoff;
	vm_fault_t ret;

	atomic_long_inc(&dev->faults);
	if (idx >= nr_blocks)
		return VM_FAULT_SIGBUS;
	mutex_lock(&dev->lock);
	if (test_bit(idx, dev->holes)) {
		if (!(vmf->flags & FAULT_FLAG_WRITE)) {
			ret = kh_vmf_insert_mixed(vmf, kh_dx_zero_pfn(vmf));
			if (ret != VM_FAULT_SIGBUS) {
				atomic_long_inc(&dev->zero_maps);
				goto out;
			}
			/*
			 * 6.11 and later take the zero page into a VM_MIXEDMAP
			 * mapping only for fsdax or VM_IO (vm_mixed_zeropage_allowed()),
			 * and VM_IO would refuse all GUP: the read allocates.
			 */
			atomic_long_inc(&dev->zero_refused);
		}
		clear_bit(idx, dev->holes);	/* a write allocates the block */
	}
	ret = kh_dx_insert(dev, vmf, dev->blocks[idx]);
out:
	mutex_unlock(&dev->lock);
	return ret;
}

/*
 * A write to a read-only PTE of a shared mapping: pfn_mkwrite for special
 * PTEs and the zero page, page_mkwrite for refcounted pages. As in DAX, the
 * block is looked up again and inserted for writing, which upgrades the PTE
 * in place when it still maps that block.
 */
static vm_fault_t kh_dx_mkwrite(struct vm_fault *vmf)
{
	struct kh_dx_dev *dev = kh_dx_of(vmf->vma);
	unsigned long mapped = pte_pfn(vmf->orig_pte);
	pgoff_t idx = vmf->pgoff;
	bool zapped = false;
	struct page *page;
	vm_fault_t ret;

	atomic_long_inc(&dev->mkwrite_calls);
	mutex_lock(&dev->lock);
	if (mapped == kh_dx_zero_pfn(vmf)) {
		/* A hole's zero page: the write allocates, the zero page goes. */
		clear_bit(idx, dev->holes);
		unmap_mapping_range(vmf->vma->vm_file->f_mapping, (loff_t)idx << PAGE_SHIFT,
				    PAGE_SIZE, 0);
		zapped = true;
	}
	page = dev->blocks[idx];
	if (!zapped && mapped != page_to_pfn(page))
		atomic_long_inc(&dev->mkwrite_stale);

	if (dev->mode == KH_DX_SPECIAL)
		ret = kh_vmf_insert_mixed_mkwrite(vmf, page_to_pfn(page));
	else
		ret = kh_vmf_insert_page_mkwrite(vmf, page);
	if (ret != VM_FAULT_FALLBACK)
		goto out;

	/* No mkwrite insert for this kind of PFN on this kernel. */
	if (zapped) {
		ret = kh_dx_insert(dev, vmf, page);	/* read-only: the write faults again */
	} else if (mapped != page_to_pfn(page)) {
		ret = VM_FAULT_NOPAGE;			/* retry once the mover has zapped */
	} else if (vmf->page) {
		folio_lock(page_folio(vmf->page));	/* no page->mapping: say so */
		ret = VM_FAULT_LOCKED;
	} else {
		ret = 0;				/* the core upgrades the PTE */
	}
out:
	mutex_unlock(&dev->lock);
	return ret;
}

static const struct vm_operations_struct kh_dx_vm_ops[KH_DX_NR_MODES] = {
	[KH_DX_SPECIAL] = {
		.open = kh_dx_vm_open,
		.close = kh_dx_vm_close,
		.fault = kh_dx_fault,
		.pfn_mkwrite = kh_dx_mkwrite,
	},
	[KH_DX_REFCOUNTED] = {
		.open = kh_dx_vm_open,
		.close = kh_dx_vm_close,
		.fault = kh_dx_fault,
		.page_mkwrite = kh_dx_mkwrite,
		.pfn_mkwrite = kh_dx_mkwrite,	/* the zero page of a hole */
	},
};

static int kh_dx_mmap(struct file *file, struct vm_area_struct *vma)
{
	struct kh_dx_dev *dev = container_of(file->private_data, struct kh_dx_dev, misc);

	if (vma->vm_pgoff + vma_pages(vma) > nr_blocks)
		return -EINVAL;
	kh_vm_flags_set(vma, VM_MIXEDMAP | VM_DONTEXPAND | VM_DONTDUMP);
	vma->vm_private_data = dev;
	vma->vm_ops = &kh_dx_vm_ops[dev->mode];
	atomic_long_inc(&dev->open_mappings);
	atomic_long_inc(&dev->mmaps);
	return 0;
}

static int kh_dx_open(struct inode *inode, struct file *file)
{
	return 0;	/* misc_open() has set private_data to our miscdevice */
}

static void kh_dx_zap(struct file *file, unsigned int idx)
{
	unmap_mapping_range(file->f_mapping, (loff_t)idx << PAGE_SHIFT, PAGE_SIZE, 0);
}

/*
 * The wrong order, kept on purpose: the new page is published before the
 * old mappings are zapped, so a write fault in between finds the new block
 * in the driver while the PTE maps the old one (DX4). A correct driver
 * zaps under the lock its fault handlers take, as DAX's entry lock does.
 */
static long kh_dx_move(struct kh_dx_dev *dev, struct file *file, struct kh_dx_move *m)
{
	struct page *new, *old;

	if (m->index >= nr_blocks || m->window_us > USEC_PER_SEC)
		return -EINVAL;
	new = alloc_page(GFP_KERNEL);
	if (!new)
		return -ENOMEM;
	mutex_lock(&dev->lock);
	old = dev->blocks[m->index];
	copy_highpage(new, old);
	dev->blocks[m->index] = new;
	mutex_unlock(&dev->lock);
	if (m->window_us)
		fsleep(m->window_us);
	kh_dx_zap(file, m->index);
	put_page(old);		/* the zap dropped the mappings' references */
	atomic_long_inc(&dev->moves);
	return 0;
}

static long kh_dx_punch(struct kh_dx_dev *dev, struct file *file, unsigned long idx)
{
	if (idx >= nr_blocks)
		return -EINVAL;
	mutex_lock(&dev->lock);
	set_bit(idx, dev->holes);
	kh_dx_zap(file, idx);
	clear_highpage(dev->blocks[idx]);
	mutex_unlock(&dev->lock);
	return 0;
}

static long kh_dx_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct kh_dx_dev *dev = container_of(file->private_data, struct kh_dx_dev, misc);
	struct kh_dx_move m;

	switch (cmd) {
	case KH_DX_IOC_MOVE:
		if (copy_from_user(&m, (void __user *)arg, sizeof(m)))
			return -EFAULT;
		return kh_dx_move(dev, file, &m);
	case KH_DX_IOC_PUNCH:
		return kh_dx_punch(dev, file, arg);
	}
	return -ENOTTY;
}

/* The blocks' bytes at the file offset (a hole's block is zeroed). */
static ssize_t kh_dx_read(struct file *file, char __user *ubuf, size_t count, loff_t *ppos)
{
	struct kh_dx_dev *dev = container_of(file->private_data, struct kh_dx_dev, misc);
	ssize_t ret;

	mutex_lock(&dev->lock);
	ret = kh_read_pages(dev->blocks, nr_blocks, ubuf, count, ppos);
	mutex_unlock(&dev->lock);
	return ret;
}

static const struct file_operations kh_dx_fops = {
	.owner = THIS_MODULE,
	.open = kh_dx_open,
	.read = kh_dx_read,
	.mmap = kh_dx_mmap,
	.unlocked_ioctl = kh_dx_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
};

static int kh_dx_stats_show(struct seq_file *m, void *v)
{
	struct kh_dx_dev *dev = m->private;

	seq_printf(m, "mode %s\n", kh_dx_mode_names[dev->mode]);
	seq_printf(m, "nr_pages %u\n", nr_blocks);
	seq_printf(m, "open_mappings %ld\n", atomic_long_read(&dev->open_mappings));
	seq_printf(m, "mmaps %ld\n", atomic_long_read(&dev->mmaps));
	seq_printf(m, "faults %ld\n", atomic_long_read(&dev->faults));
	seq_printf(m, "zero_maps %ld\n", atomic_long_read(&dev->zero_maps));
	seq_printf(m, "zero_refused %ld\n", atomic_long_read(&dev->zero_refused));
	seq_printf(m, "mkwrite_calls %ld\n", atomic_long_read(&dev->mkwrite_calls));
	seq_printf(m, "mkwrite_stale %ld\n", atomic_long_read(&dev->mkwrite_stale));
	seq_printf(m, "moves %ld\n", atomic_long_read(&dev->moves));
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(kh_dx_stats);

static int kh_dx_pages_show(struct seq_file *m, void *v)
{
	struct kh_dx_dev *dev = m->private;
	unsigned int i;

	mutex_lock(&dev->lock);
	for (i = 0; i < nr_blocks; i++) {
		struct page *page = dev->blocks[i];
		u8 *p = kmap_local_page(page);

		seq_printf(m, "%u %lu %d %d %u %d\n", i, page_to_pfn(page), page_count(page),
			   kh_page_mapcount(page), p[8], test_bit(i, dev->holes));
		kunmap_local(p);
	}
	mutex_unlock(&dev->lock);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(kh_dx_pages);

static void kh_dx_free(struct kh_dx_dev *dev)
{
	unsigned int i;

	bitmap_free(dev->holes);
	dev->holes = NULL;
	if (!dev->blocks)
		return;
	for (i = 0; i < nr_blocks; i++)
		if (dev->blocks[i])
			put_page(dev->blocks[i]);
	kfree(dev->blocks);
	dev->blocks = NULL;
}

static void kh_dx_cleanup(int registered)
{
	int i;

	debugfs_remove_recursive(kh_dx_debugfs);
	for (i = 0; i < KH_DX_NR_MODES; i++) {
		if (i < registered)
			misc_deregister(&kh_dx_devs[i].misc);
		kh_dx_free(&kh_dx_devs[i]);
	}
}

static int __init kh_dx_init(void)
{
	unsigned int i, b;
	int err;

	if (!nr_blocks || nr_blocks > 1024)
		return -EINVAL;
	kh_dx_debugfs = debugfs_create_dir("kh_daxlike", NULL);
	for (i = 0; i < KH_DX_NR_MODES; i++) {
		struct kh_dx_dev *dev = &kh_dx_devs[i];
		struct dentry *dir;

		dev->mode = i;
		mutex_init(&dev->lock);
		dev->blocks = kcalloc(nr_blocks, sizeof(*dev->blocks), GFP_KERNEL);
		dev->holes = bitmap_zalloc(nr_blocks, GFP_KERNEL);
		if (!dev->blocks || !dev->holes) {
			kh_dx_cleanup(i);
			return -ENOMEM;
		}
		for (b = 0; b < nr_blocks; b++) {
			dev->blocks[b] = alloc_page(GFP_KERNEL);
			if (!dev->blocks[b]) {
				kh_dx_cleanup(i);
				return -ENOMEM;
			}
			kh_stamp_page(dev->blocks[b], b);
		}
		snprintf(dev->name, sizeof(dev->name), "kh_daxlike_%s", kh_dx_mode_names[i]);
		dev->misc.minor = MISC_DYNAMIC_MINOR;
		dev->misc.name = dev->name;
		dev->misc.fops = &kh_dx_fops;
		dev->misc.mode = 0666;
		err = misc_register(&dev->misc);
		if (err) {
			kh_dx_cleanup(i);
			return err;
		}
		dir = debugfs_create_dir(kh_dx_mode_names[i], kh_dx_debugfs);
		debugfs_create_file("stats", 0444, dir, dev, &kh_dx_stats_fops);
		debugfs_create_file("pages", 0444, dir, dev, &kh_dx_pages_fops);
	}
	return 0;
}

static void __exit kh_dx_exit(void)
{
	kh_dx_cleanup(KH_DX_NR_MODES);
}

module_init(kh_dx_init);
module_exit(kh_dx_exit);
MODULE_DESCRIPTION("kharness DAX-style driver: special and refcounted block mappings");
MODULE_LICENSE("GPL");
