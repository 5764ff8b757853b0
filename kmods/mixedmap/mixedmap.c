// SPDX-License-Identifier: GPL-2.0
/*
 * kh_mixedmap - a VM_MIXEDMAP driver for kharness: pages with a struct page
 * side by side with PFNs that have none.
 *
 * A mapping is nr_pages module-owned pages followed by the pages of the
 * ivshmem-plain device's BAR 2 (PCI 1af4:1110), real memory with no struct
 * page, where the guest has that device (kharness gives every guest one).
 *
 *   /dev/kh_mixedmap_prepop  vm_insert_pages() of the module's pages in
 *                            f_op->mmap, one batch
 *   /dev/kh_mixedmap_loop    vm_insert_page() of each in f_op->mmap
 *   /dev/kh_mixedmap_fault   nothing at mmap: the fault handler inserts
 *
 * The BAR pages always come through the fault handler (vmf_insert_mixed()).
 *
 * Two more devices map the BAR alone with remap_pfn_range() (VM_PFNMAP), the
 * memtype tracking PAT1/PAT2 watch on x86: all of the VMA at mmap, or only
 * its first half (the rest has no fault handler and gets SIGBUS):
 *   /dev/kh_mixedmap_pfnmap, /dev/kh_mixedmap_pfnmap_half
 * page_mkwrite (module pages) and pfn_mkwrite (BAR) count and allow.
 * /sys/kernel/debug/kh_mixedmap/<mode>/stats has the counters, the BAR's
 * first PFN and the time the last mmap spent inserting; "pages" lists the
 * module's pages as "index pfn refcount mapcount".
 */
#include <linux/debugfs.h>
#include <linux/fs.h>
#include <linux/ktime.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/pagemap.h>
#include <linux/pci.h>
#include <linux/seq_file.h>

#include "kh_compat.h"
#include "kh_pages.h"

static unsigned int nr_pages = 32;
module_param(nr_pages, uint, 0444);
MODULE_PARM_DESC(nr_pages, "module-owned pages at the start of each mapping (default 32)");

#define KH_IVSHMEM_VENDOR	0x1af4
#define KH_IVSHMEM_DEVICE	0x1110
#define KH_IVSHMEM_BAR		2

enum kh_mx_mode {
	KH_MX_PREPOP, KH_MX_LOOP, KH_MX_FAULT, KH_MX_PFNMAP, KH_MX_PFNMAP_HALF, KH_MX_NR_MODES
};

static const char *const kh_mx_mode_names[KH_MX_NR_MODES] = {
	[KH_MX_PREPOP] = "prepop",
	[KH_MX_LOOP] = "loop",
	[KH_MX_FAULT] = "fault",
	[KH_MX_PFNMAP] = "pfnmap",
	[KH_MX_PFNMAP_HALF] = "pfnmap_half",
};

struct kh_mx_dev {
	enum kh_mx_mode mode;
	char name[32];
	struct miscdevice misc;
	struct page **pages;
	atomic_long_t open_mappings;
	atomic_long_t mmaps;
	atomic_long_t faults;
	atomic_long_t page_mkwrite_calls;
	atomic_long_t pfn_mkwrite_calls;
	atomic64_t insert_ns;		/* the last mmap's prepopulation */
	atomic_long_t inserted;		/* pages it inserted */
};

static struct kh_mx_dev kh_mx_devs[KH_MX_NR_MODES];
static struct dentry *kh_mx_debugfs;

/* The BAR, once the PCI driver has bound to the ivshmem device. */
static unsigned long kh_mx_bar_pfn;
static unsigned long kh_mx_bar_pages;

static struct kh_mx_dev *kh_mx_of(struct vm_area_struct *vma)
{
	return vma->vm_private_data;
}

static void kh_mx_vm_open(struct vm_area_struct *vma)
{
	atomic_long_inc(&kh_mx_of(vma)->open_mappings);
}

static void kh_mx_vm_close(struct vm_area_struct *vma)
{
	atomic_long_dec(&kh_mx_of(vma)->open_mappings);
}

static vm_fault_t kh_mx_fault(struct vm_fault *vmf)
{
	struct kh_mx_dev *dev = kh_mx_of(vmf->vma);
	pgoff_t idx = vmf->pgoff;

	atomic_long_inc(&dev->faults);
	if (idx < nr_pages)
		return kh_vmf_insert_page(vmf, dev->pages[idx]);
	if (idx - nr_pages < kh_mx_bar_pages)
		return kh_vmf_insert_mixed(vmf, kh_mx_bar_pfn + idx - nr_pages);
	return VM_FAULT_SIGBUS;
}

/* Our pages have no page->mapping: lock and say so (see kh_ringbuf). */
static vm_fault_t kh_mx_page_mkwrite(struct vm_fault *vmf)
{
	atomic_long_inc(&kh_mx_of(vmf->vma)->page_mkwrite_calls);
	folio_lock(page_folio(vmf->page));
	return VM_FAULT_LOCKED;
}

static vm_fault_t kh_mx_pfn_mkwrite(struct vm_fault *vmf)
{
	atomic_long_inc(&kh_mx_of(vmf->vma)->pfn_mkwrite_calls);
	return 0;
}

static const struct vm_operations_struct kh_mx_vm_ops = {
	.open = kh_mx_vm_open,
	.close = kh_mx_vm_close,
	.fault = kh_mx_fault,
	.page_mkwrite = kh_mx_page_mkwrite,
	.pfn_mkwrite = kh_mx_pfn_mkwrite,
};

/*
 * Insert the module's pages the VMA covers, in f_op->mmap. vm_page_prot is
 * not final here: the core applies write-notify after ->mmap returns, so on
 * a shared writable mapping these PTEs may come in writable (MX1).
 */
static int kh_mx_prepopulate(struct kh_mx_dev *dev, struct vm_area_struct *vma)
{
	unsigned long first = vma->vm_pgoff, count;
	u64 t0 = ktime_get_ns();
	int err = 0;

	if (first >= nr_pages)
		return 0;
	count = min_t(unsigned long, vma_pages(vma), nr_pages - first);
	if (dev->mode == KH_MX_PREPOP) {
		unsigned long left = count;

		err = vm_insert_pages(vma, vma->vm_start, dev->pages + first, &left);
		count -= left;
	} else {
		unsigned long i;

		for (i = 0; i < count && !err; i++)
			err = vm_insert_page(vma, vma->vm_start + i * PAGE_SIZE, dev->pages[first + i]);
		count = err ? i - 1 : i;
	}
	atomic64_set(&dev->insert_ns, ktime_get_ns() - t0);
	atomic_long_set(&dev->inserted, count);
	return err;
}

static const struct vm_operations_struct kh_mx_pfnmap_vm_ops = {
	.open = kh_mx_vm_open,
	.close = kh_mx_vm_close,
};

/* The BAR alone, file page N being BAR page N, as a PCI driver maps a BAR. */
static int kh_mx_mmap_pfnmap(struct kh_mx_dev *dev, struct vm_area_struct *vma)
{
	unsigned long size = vma->vm_end - vma->vm_start;

	if (vma->vm_pgoff + vma_pages(vma) > kh_mx_bar_pages)
		return -EINVAL;
	if (dev->mode == KH_MX_PFNMAP_HALF)
		size = max(PAGE_SIZE, (vma_pages(vma) / 2) << PAGE_SHIFT);
	vma->vm_ops = &kh_mx_pfnmap_vm_ops;
	return remap_pfn_range(vma, vma->vm_start, kh_mx_bar_pfn + vma->vm_pgoff, size,
			       vma->vm_page_prot);
}

/* The module's pages, then the BAR's on fault. */
static int kh_mx_mmap_mixed(struct kh_mx_dev *dev, struct vm_area_struct *vma)
{
	if (vma->vm_pgoff + vma_pages(vma) > nr_pages + kh_mx_bar_pages)
		return -EINVAL;
	kh_vm_flags_set(vma, VM_MIXEDMAP | VM_DONTEXPAND | VM_DONTDUMP);
	vma->vm_ops = &kh_mx_vm_ops;
	return dev->mode == KH_MX_FAULT ? 0 : kh_mx_prepopulate(dev, vma);
}

static int kh_mx_mmap(struct file *file, struct vm_area_struct *vma)
{
	struct kh_mx_dev *dev = container_of(file->private_data, struct kh_mx_dev, misc);
	int err;

	vma->vm_private_data = dev;
	if (dev->mode == KH_MX_PFNMAP || dev->mode == KH_MX_PFNMAP_HALF)
		err = kh_mx_mmap_pfnmap(dev, vma);
	else
		err = kh_mx_mmap_mixed(dev, vma);
	if (err)
		return err;
	atomic_long_inc(&dev->open_mappings);
	atomic_long_inc(&dev->mmaps);
	return 0;
}

static int kh_mx_open(struct inode *inode, struct file *file)
{
	return 0;	/* misc_open() has set private_data to our miscdevice */
}

/*
 * The module's pages' bytes at the file offset; the BAR's are not read
 * here (nothing past the module's pages, nothing for the BAR-only devices).
 */
static ssize_t kh_mx_read(struct file *file, char __user *ubuf, size_t count, loff_t *ppos)
{
	struct kh_mx_dev *dev = container_of(file->private_data, struct kh_mx_dev, misc);

	if (dev->mode == KH_MX_PFNMAP || dev->mode == KH_MX_PFNMAP_HALF)
		return 0;
	return kh_read_pages(dev->pages, nr_pages, ubuf, count, ppos);
}

static const struct file_operations kh_mx_fops = {
	.owner = THIS_MODULE,
	.open = kh_mx_open,
	.read = kh_mx_read,
	.mmap = kh_mx_mmap,
};

static int kh_mx_stats_show(struct seq_file *m, void *v)
{
	struct kh_mx_dev *dev = m->private;

	seq_printf(m, "mode %s\n", kh_mx_mode_names[dev->mode]);
	seq_printf(m, "nr_pages %u\n", nr_pages);
	seq_printf(m, "bar_pages %lu\n", kh_mx_bar_pages);
	seq_printf(m, "bar_pfn %lu\n", kh_mx_bar_pfn);
	seq_printf(m, "open_mappings %ld\n", atomic_long_read(&dev->open_mappings));
	seq_printf(m, "mmaps %ld\n", atomic_long_read(&dev->mmaps));
	seq_printf(m, "faults %ld\n", atomic_long_read(&dev->faults));
	seq_printf(m, "page_mkwrite_calls %ld\n", atomic_long_read(&dev->page_mkwrite_calls));
	seq_printf(m, "pfn_mkwrite_calls %ld\n", atomic_long_read(&dev->pfn_mkwrite_calls));
	seq_printf(m, "insert_ns %lld\n", atomic64_read(&dev->insert_ns));
	seq_printf(m, "inserted %ld\n", atomic_long_read(&dev->inserted));
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(kh_mx_stats);

static int kh_mx_pages_show(struct seq_file *m, void *v)
{
	struct kh_mx_dev *dev = m->private;
	unsigned int i;

	for (i = 0; i < nr_pages; i++)
		seq_printf(m, "%u %lu %d %d\n", i, page_to_pfn(dev->pages[i]),
			   page_count(dev->pages[i]), kh_page_mapcount(dev->pages[i]));
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(kh_mx_pages);

static int kh_mx_probe(struct pci_dev *pdev, const struct pci_device_id *id)
{
	int err = pci_enable_device_mem(pdev);

	if (err)
		return err;
	err = pci_request_region(pdev, KH_IVSHMEM_BAR, "kh_mixedmap");
	if (err) {
		pci_disable_device(pdev);
		return err;
	}
	kh_mx_bar_pfn = PHYS_PFN(pci_resource_start(pdev, KH_IVSHMEM_BAR));
	kh_mx_bar_pages = pci_resource_len(pdev, KH_IVSHMEM_BAR) >> PAGE_SHIFT;
	dev_info(&pdev->dev, "BAR %d: %lu pages from pfn %#lx\n", KH_IVSHMEM_BAR,
		 kh_mx_bar_pages, kh_mx_bar_pfn);
	return 0;
}

static void kh_mx_remove(struct pci_dev *pdev)
{
	kh_mx_bar_pages = 0;	/* the misc devices went first (kh_mx_exit) */
	pci_release_region(pdev, KH_IVSHMEM_BAR);
	pci_disable_device(pdev);
}

static const struct pci_device_id kh_mx_pci_ids[] = {
	{ PCI_DEVICE(KH_IVSHMEM_VENDOR, KH_IVSHMEM_DEVICE) },
	{ }
};

static struct pci_driver kh_mx_pci_driver = {
	.name = "kh_mixedmap",
	.id_table = kh_mx_pci_ids,
	.probe = kh_mx_probe,
	.remove = kh_mx_remove,
};

static void kh_mx_free(struct kh_mx_dev *dev)
{
	unsigned int i;

	if (!dev->pages)
		return;
	for (i = 0; i < nr_pages; i++)
		if (dev->pages[i])
			put_page(dev->pages[i]);
	kfree(dev->pages);
	dev->pages = NULL;
}

static void kh_mx_cleanup(int registered)
{
	int i;

	debugfs_remove_recursive(kh_mx_debugfs);
	for (i = 0; i < KH_MX_NR_MODES; i++) {
		if (i < registered)
			misc_deregister(&kh_mx_devs[i].misc);
		kh_mx_free(&kh_mx_devs[i]);
	}
}

static int __init kh_mx_init(void)
{
	unsigned int i, p;
	int err;

	if (!nr_pages || nr_pages > 4096)
		return -EINVAL;
	err = pci_register_driver(&kh_mx_pci_driver);	/* binds now if the BAR is there */
	if (err)
		return err;
	kh_mx_debugfs = debugfs_create_dir("kh_mixedmap", NULL);
	for (i = 0; i < KH_MX_NR_MODES; i++) {
		struct kh_mx_dev *dev = &kh_mx_devs[i];
		struct dentry *dir;

		dev->mode = i;
		dev->pages = kcalloc(nr_pages, sizeof(*dev->pages), GFP_KERNEL);
		err = -ENOMEM;
		if (!dev->pages)
			goto fail;
		for (p = 0; p < nr_pages; p++) {
			dev->pages[p] = alloc_page(GFP_KERNEL);
			if (!dev->pages[p])
				goto fail;
			kh_stamp_page(dev->pages[p], p);
		}
		snprintf(dev->name, sizeof(dev->name), "kh_mixedmap_%s", kh_mx_mode_names[i]);
		dev->misc.minor = MISC_DYNAMIC_MINOR;
		dev->misc.name = dev->name;
		dev->misc.fops = &kh_mx_fops;
		dev->misc.mode = 0666;
		err = misc_register(&dev->misc);
		if (err)
			goto fail;
		dir = debugfs_create_dir(kh_mx_mode_names[i], kh_mx_debugfs);
		debugfs_create_file("stats", 0444, dir, dev, &kh_mx_stats_fops);
		debugfs_create_file("pages", 0444, dir, dev, &kh_mx_pages_fops);
	}
	return 0;
fail:
	kh_mx_cleanup(i);
	pci_unregister_driver(&kh_mx_pci_driver);
	return err;
}

static void __exit kh_mx_exit(void)
{
	kh_mx_cleanup(KH_MX_NR_MODES);
	pci_unregister_driver(&kh_mx_pci_driver);
}

module_init(kh_mx_init);
module_exit(kh_mx_exit);
MODULE_DESCRIPTION("kharness VM_MIXEDMAP driver: struct pages and a pageless PCI BAR");
MODULE_LICENSE("GPL");
