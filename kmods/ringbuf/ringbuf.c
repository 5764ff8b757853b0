// SPDX-License-Identifier: GPL-2.0
/*
 * kh_ringbuf - a perf-like ring buffer for kharness.
 *
 * One control page (read/write) followed by 2^data_order data pages
 * (read-only), shared by every mapping of the device, freed at the last
 * close. Three misc devices hand the same kind of buffer to user space in
 * the three ways the perf ring buffer has used or been proposed to use:
 *
 *   /dev/kh_ringbuf_pfnmap        remap_pfn_range() in f_op->mmap (VM_PFNMAP),
 *                                 read-only, pfn_mkwrite lets page 0 be written
 *   /dev/kh_ringbuf_fault         nothing at mmap, vm_ops->fault hands out pages
 *   /dev/kh_ringbuf_insert_pages  vm_insert_pages() in f_op->mmap (VM_MIXEDMAP)
 *
 * In every mode writes to a data page are refused with SIGBUS where the
 * kernel asks (pfn_mkwrite/page_mkwrite); whether it asks is what the tests
 * look at. /sys/kernel/debug/kh_ringbuf/<mode>/{stats,pages} report counters
 * and the refcount/mapcount of each page handed out.
 */
#include <linux/debugfs.h>
#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/pagemap.h>
#include <linux/seq_file.h>
#include <linux/slab.h>

#include "kh_compat.h"
#include "kh_pages.h"

static unsigned int data_order = 3;
module_param(data_order, uint, 0444);
MODULE_PARM_DESC(data_order, "log2 of the number of data pages (default 3)");

enum kh_rb_mode { KH_RB_PFNMAP, KH_RB_FAULT, KH_RB_INSERT_PAGES, KH_RB_NR_MODES };

static const char *const kh_rb_mode_names[KH_RB_NR_MODES] = {
	[KH_RB_PFNMAP] = "pfnmap",
	[KH_RB_FAULT] = "fault",
	[KH_RB_INSERT_PAGES] = "insert_pages",
};

struct kh_rb_buf;

struct kh_rb_dev {
	enum kh_rb_mode mode;
	char name[32];
	struct miscdevice misc;
	struct mutex lock;		/* protects buf and buf->refs */
	struct kh_rb_buf *buf;		/* one buffer, shared by all mappings */
	struct dentry *dir;
	atomic_long_t pages_held;	/* pages we allocated and not yet put */
	atomic_long_t buffers;
	atomic_long_t open_mappings;	/* VMAs that reference the buffer */
	atomic_long_t mmaps;
	atomic_long_t faults;
	atomic_long_t mkwrite_calls;
	atomic_long_t mkwrite_refused;
	atomic_long_t buffers_freed;
};

struct kh_rb_buf {
	struct kh_rb_dev *dev;
	int refs;
	unsigned long nr_pages;
	struct page *pages[];
};

static struct kh_rb_dev kh_rb_devs[KH_RB_NR_MODES];
static struct dentry *kh_rb_debugfs;

static struct kh_rb_buf *kh_rb_alloc(struct kh_rb_dev *dev, unsigned long nr)
{
	struct kh_rb_buf *buf;
	unsigned long i;

	buf = kzalloc(struct_size(buf, pages, nr), GFP_KERNEL);
	if (!buf)
		return NULL;
	buf->dev = dev;
	buf->nr_pages = nr;
	for (i = 0; i < nr; i++) {
		buf->pages[i] = alloc_page(GFP_KERNEL | __GFP_ZERO);
		if (!buf->pages[i])
			goto fail;
		kh_stamp_page(buf->pages[i], i);
		atomic_long_inc(&dev->pages_held);
	}
	atomic_long_inc(&dev->buffers);
	return buf;
fail:
	while (i--) {
		put_page(buf->pages[i]);
		atomic_long_dec(&dev->pages_held);
	}
	kfree(buf);
	return NULL;
}

/* Called with dev->lock held once the last mapping is gone. */
static void kh_rb_free(struct kh_rb_buf *buf)
{
	struct kh_rb_dev *dev = buf->dev;
	unsigned long i;

	for (i = 0; i < buf->nr_pages; i++) {
		/* A GUP pin may still hold the page; put_page leaves it to that. */
		put_page(buf->pages[i]);
		atomic_long_dec(&dev->pages_held);
	}
	dev->buf = NULL;
	atomic_long_dec(&dev->buffers);
	atomic_long_inc(&dev->buffers_freed);
	kfree(buf);
}

static void kh_rb_vm_open(struct vm_area_struct *vma)
{
	struct kh_rb_buf *buf = vma->vm_private_data;
	struct kh_rb_dev *dev = buf->dev;

	mutex_lock(&dev->lock);
	buf->refs++;
	mutex_unlock(&dev->lock);
	atomic_long_inc(&dev->open_mappings);
}

static void kh_rb_vm_close(struct vm_area_struct *vma)
{
	struct kh_rb_buf *buf = vma->vm_private_data;
	struct kh_rb_dev *dev = buf->dev;

	mutex_lock(&dev->lock);
	if (--buf->refs == 0)
		kh_rb_free(buf);
	mutex_unlock(&dev->lock);
	atomic_long_dec(&dev->open_mappings);
}

/* Like perf: a ring buffer mapping is all or nothing. */
static int kh_rb_may_split(KH_MAY_SPLIT_ARGS)
{
	return -EINVAL;
}

static vm_fault_t kh_rb_fault(struct vm_fault *vmf)
{
	struct kh_rb_buf *buf = vmf->vma->vm_private_data;
	struct page *page;

	atomic_long_inc(&buf->dev->faults);
	if (vmf->pgoff >= buf->nr_pages)
		return VM_FAULT_SIGBUS;
	page = buf->pages[vmf->pgoff];
	get_page(page);
	vmf->page = page;
	return 0;
}

/* Write-notify: only the control page may become writable. */
static bool kh_rb_allow_write(struct vm_fault *vmf)
{
	struct kh_rb_buf *buf = vmf->vma->vm_private_data;

	atomic_long_inc(&buf->dev->mkwrite_calls);
	if (vmf->pgoff == 0)
		return true;
	atomic_long_inc(&buf->dev->mkwrite_refused);
	return false;
}

static vm_fault_t kh_rb_pfn_mkwrite(struct vm_fault *vmf)
{
	return kh_rb_allow_write(vmf) ? 0 : VM_FAULT_SIGBUS;
}

/*
 * Our pages have no page->mapping: returning without VM_FAULT_LOCKED would
 * make do_page_mkwrite() treat the page as truncated and retry forever, so
 * lock it ourselves (the old perf code set page->mapping instead).
 */
static vm_fault_t kh_rb_page_mkwrite(struct vm_fault *vmf)
{
	if (!kh_rb_allow_write(vmf))
		return VM_FAULT_SIGBUS;
	folio_lock(page_folio(vmf->page));
	return VM_FAULT_LOCKED;
}

static const struct vm_operations_struct kh_rb_pfnmap_ops = {
	.open = kh_rb_vm_open,
	.close = kh_rb_vm_close,
	.may_split = kh_rb_may_split,
	.pfn_mkwrite = kh_rb_pfn_mkwrite,
};

static const struct vm_operations_struct kh_rb_page_ops = {
	.open = kh_rb_vm_open,
	.close = kh_rb_vm_close,
	.may_split = kh_rb_may_split,
	.fault = kh_rb_fault,
	.page_mkwrite = kh_rb_page_mkwrite,
};

/* As perf's map_range(): read-only PTEs, so the first write asks pfn_mkwrite. */
static int kh_rb_map_pfns(struct vm_area_struct *vma, struct kh_rb_buf *buf)
{
	pgprot_t prot = vm_get_page_prot(vma->vm_flags & ~VM_SHARED);
	unsigned long i;
	int err;

	for (i = 0; i < buf->nr_pages; i++) {
		err = remap_pfn_range(vma, vma->vm_start + i * PAGE_SIZE,
				      page_to_pfn(buf->pages[i]), PAGE_SIZE, prot);
		if (err)
			return err;
	}
	return 0;
}

static int kh_rb_insert(struct vm_area_struct *vma, struct kh_rb_buf *buf)
{
	unsigned long num = buf->nr_pages;
	int err;

	err = vm_insert_pages(vma, vma->vm_start, buf->pages, &num);
	if (!err && num)
		err = -EFAULT;
	return err;
}

static int kh_rb_mmap(struct file *file, struct vm_area_struct *vma)
{
	struct kh_rb_dev *dev = container_of(file->private_data, struct kh_rb_dev, misc);
	unsigned long nr = 1UL + (1UL << data_order);
	struct kh_rb_buf *buf;
	int err = 0;

	if (vma->vm_pgoff != 0 || vma_pages(vma) != nr)
		return -EINVAL;
	if (!(vma->vm_flags & VM_SHARED))
		return -EINVAL;

	mutex_lock(&dev->lock);
	buf = dev->buf;
	if (!buf) {
		buf = kh_rb_alloc(dev, nr);
		if (!buf) {
			mutex_unlock(&dev->lock);
			return -ENOMEM;
		}
		dev->buf = buf;
	}

	kh_vm_flags_set(vma, VM_DONTEXPAND | VM_DONTDUMP);
	vma->vm_private_data = buf;
	vma->vm_ops = dev->mode == KH_RB_PFNMAP ? &kh_rb_pfnmap_ops : &kh_rb_page_ops;

	if (dev->mode == KH_RB_PFNMAP)
		err = kh_rb_map_pfns(vma, buf);
	else if (dev->mode == KH_RB_INSERT_PAGES)
		err = kh_rb_insert(vma, buf);

	if (err) {
		if (buf->refs == 0)
			kh_rb_free(buf);
		mutex_unlock(&dev->lock);
		return err;
	}
	buf->refs++;
	mutex_unlock(&dev->lock);
	atomic_long_inc(&dev->open_mappings);
	atomic_long_inc(&dev->mmaps);
	return 0;
}

static int kh_rb_open(struct inode *inode, struct file *file)
{
	return 0;	/* misc_open() has set private_data to our miscdevice */
}

/* The live buffer's bytes at the file offset; nothing while none is mapped. */
static ssize_t kh_rb_read(struct file *file, char __user *ubuf, size_t count, loff_t *ppos)
{
	struct kh_rb_dev *dev = container_of(file->private_data, struct kh_rb_dev, misc);
	ssize_t ret = 0;

	mutex_lock(&dev->lock);
	if (dev->buf)
		ret = kh_read_pages(dev->buf->pages, dev->buf->nr_pages, ubuf, count, ppos);
	mutex_unlock(&dev->lock);
	return ret;
}

static const struct file_operations kh_rb_fops = {
	.owner = THIS_MODULE,
	.open = kh_rb_open,
	.read = kh_rb_read,
	.mmap = kh_rb_mmap,
};

static int kh_rb_stats_show(struct seq_file *m, void *v)
{
	struct kh_rb_dev *dev = m->private;

	seq_printf(m, "mode %s\n", kh_rb_mode_names[dev->mode]);
	seq_printf(m, "nr_pages %lu\n", 1UL + (1UL << data_order));
	seq_printf(m, "pages_held %ld\n", atomic_long_read(&dev->pages_held));
	seq_printf(m, "buffers %ld\n", atomic_long_read(&dev->buffers));
	seq_printf(m, "buffers_freed %ld\n", atomic_long_read(&dev->buffers_freed));
	seq_printf(m, "open_mappings %ld\n", atomic_long_read(&dev->open_mappings));
	seq_printf(m, "mmaps %ld\n", atomic_long_read(&dev->mmaps));
	seq_printf(m, "faults %ld\n", atomic_long_read(&dev->faults));
	seq_printf(m, "mkwrite_calls %ld\n", atomic_long_read(&dev->mkwrite_calls));
	seq_printf(m, "mkwrite_refused %ld\n", atomic_long_read(&dev->mkwrite_refused));
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(kh_rb_stats);

/* One line a page of the live buffer: index pfn refcount mapcount. */
static int kh_rb_pages_show(struct seq_file *m, void *v)
{
	struct kh_rb_dev *dev = m->private;
	unsigned long i;

	mutex_lock(&dev->lock);
	if (dev->buf) {
		for (i = 0; i < dev->buf->nr_pages; i++) {
			struct page *page = dev->buf->pages[i];

			seq_printf(m, "%lu %lu %d %d\n", i, page_to_pfn(page),
				   page_count(page), kh_page_mapcount(page));
		}
	}
	mutex_unlock(&dev->lock);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(kh_rb_pages);

static void kh_rb_unregister(int nr)
{
	while (nr--)
		misc_deregister(&kh_rb_devs[nr].misc);
}

static int __init kh_rb_init(void)
{
	int i, err;

	if (data_order > 10)
		return -EINVAL;
	kh_rb_debugfs = debugfs_create_dir("kh_ringbuf", NULL);
	for (i = 0; i < KH_RB_NR_MODES; i++) {
		struct kh_rb_dev *dev = &kh_rb_devs[i];

		dev->mode = i;
		mutex_init(&dev->lock);
		snprintf(dev->name, sizeof(dev->name), "kh_ringbuf_%s", kh_rb_mode_names[i]);
		dev->misc.minor = MISC_DYNAMIC_MINOR;
		dev->misc.name = dev->name;
		dev->misc.fops = &kh_rb_fops;
		dev->misc.mode = 0666;
		err = misc_register(&dev->misc);
		if (err) {
			kh_rb_unregister(i);
			debugfs_remove_recursive(kh_rb_debugfs);
			return err;
		}
		dev->dir = debugfs_create_dir(kh_rb_mode_names[i], kh_rb_debugfs);
		debugfs_create_file("stats", 0444, dev->dir, dev, &kh_rb_stats_fops);
		debugfs_create_file("pages", 0444, dev->dir, dev, &kh_rb_pages_fops);
	}
	return 0;
}

static void __exit kh_rb_exit(void)
{
	debugfs_remove_recursive(kh_rb_debugfs);
	kh_rb_unregister(KH_RB_NR_MODES);
}

module_init(kh_rb_init);
module_exit(kh_rb_exit);
MODULE_DESCRIPTION("kharness perf-like ring buffer: pfnmap, fault and insert_pages modes");
MODULE_LICENSE("GPL");
