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
 * 7.2, the first time DX5 ran). File page N is block N. The blocks live as long as the module, so what a
 * mapping wrote stays readable in debugfs after it is gone:
 * /sys/kernel/debug/kh_daxlike/<mode>/{stats,pages}, a "pages" line being
 * "index pfn refcount mapcount byte8" (the byte at offset 8 of the block).
 */
#include <linux/debugfs.h>
#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/pagemap.h>
#include <linux/seq_file.h>

#include "kh_compat.h"

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
	struct page **blocks;
	atomic_long_t open_mappings;
	atomic_long_t mmaps;
	atomic_long_t faults;
	atomic_long_t mkwrite_calls;
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

static vm_fault_t kh_dx_fault(struct vm_fault *vmf)
{
	struct kh_dx_dev *dev = kh_dx_of(vmf->vma);
	struct page *page;

	atomic_long_inc(&dev->faults);
	if (vmf->pgoff >= nr_blocks)
		return VM_FAULT_SIGBUS;
	page = dev->blocks[vmf->pgoff];
	if (dev->mode == KH_DX_SPECIAL)
		return kh_vmf_insert_mixed(vmf, page_to_pfn(page));
	return kh_vmf_insert_page(vmf, page);
}

/* The PTE is made writable in place: same PFN, as a DAX block stays put. */
static vm_fault_t kh_dx_pfn_mkwrite(struct vm_fault *vmf)
{
	atomic_long_inc(&kh_dx_of(vmf->vma)->mkwrite_calls);
	return 0;
}

/* Our pages have no page->mapping: lock and say so (see kh_ringbuf). */
static vm_fault_t kh_dx_page_mkwrite(struct vm_fault *vmf)
{
	atomic_long_inc(&kh_dx_of(vmf->vma)->mkwrite_calls);
	folio_lock(page_folio(vmf->page));
	return VM_FAULT_LOCKED;
}

static const struct vm_operations_struct kh_dx_vm_ops[KH_DX_NR_MODES] = {
	[KH_DX_SPECIAL] = {
		.open = kh_dx_vm_open,
		.close = kh_dx_vm_close,
		.fault = kh_dx_fault,
		.pfn_mkwrite = kh_dx_pfn_mkwrite,
	},
	[KH_DX_REFCOUNTED] = {
		.open = kh_dx_vm_open,
		.close = kh_dx_vm_close,
		.fault = kh_dx_fault,
		.page_mkwrite = kh_dx_page_mkwrite,
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

static const struct file_operations kh_dx_fops = {
	.owner = THIS_MODULE,
	.open = kh_dx_open,
	.mmap = kh_dx_mmap,
};

static int kh_dx_stats_show(struct seq_file *m, void *v)
{
	struct kh_dx_dev *dev = m->private;

	seq_printf(m, "mode %s\n", kh_dx_mode_names[dev->mode]);
	seq_printf(m, "nr_pages %u\n", nr_blocks);
	seq_printf(m, "open_mappings %ld\n", atomic_long_read(&dev->open_mappings));
	seq_printf(m, "mmaps %ld\n", atomic_long_read(&dev->mmaps));
	seq_printf(m, "faults %ld\n", atomic_long_read(&dev->faults));
	seq_printf(m, "mkwrite_calls %ld\n", atomic_long_read(&dev->mkwrite_calls));
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(kh_dx_stats);

static int kh_dx_pages_show(struct seq_file *m, void *v)
{
	struct kh_dx_dev *dev = m->private;
	unsigned int i;

	for (i = 0; i < nr_blocks; i++) {
		struct page *page = dev->blocks[i];
		u8 *p = kmap_local_page(page);

		seq_printf(m, "%u %lu %d %d %u\n", i, page_to_pfn(page), page_count(page),
			   kh_page_mapcount(page), p[8]);
		kunmap_local(p);
	}
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(kh_dx_pages);

static void kh_dx_free(struct kh_dx_dev *dev)
{
	unsigned int i;

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
		dev->blocks = kcalloc(nr_blocks, sizeof(*dev->blocks), GFP_KERNEL);
		if (!dev->blocks) {
			kh_dx_cleanup(i);
			return -ENOMEM;
		}
		for (b = 0; b < nr_blocks; b++) {
			dev->blocks[b] = alloc_page(GFP_KERNEL | __GFP_ZERO);
			if (!dev->blocks[b]) {
				kh_dx_cleanup(i);
				return -ENOMEM;
			}
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
