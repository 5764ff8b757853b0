// SPDX-License-Identifier: GPL-2.0
/*
 * kh_splat - make the kernel print each kind of report kharness parses, on
 * demand, so the parser's golden logs and the report-window tests come from
 * real kernels: echo KIND > /sys/kernel/debug/kh_splat/trigger
 *
 *   warn      WARN_ON_ONCE(1)
 *   refcount  refcount_t underflow
 *   badpage   free a page that still has a mapping: "Bad page state"
 *   bug       BUG(): an Oops that kills the writer
 *   null      NULL pointer dereference: an Oops that kills the writer
 *   hang      sleep 6 s uninterruptibly: a hung task report once
 *             /proc/sys/kernel/hung_task_timeout_secs is small
 *   stall     spin 8 s with preemption off: an RCU stall report once
 *             rcupdate's rcu_cpu_stall_timeout is small
 *   atomic    sleep with preemption off: "scheduling while atomic", or with
 *             DEBUG_ATOMIC_SLEEP "sleeping function called from invalid context"
 *   lockorder take two mutexes in both orders: lockdep's "possible circular
 *             locking dependency" (PROVE_LOCKING; harmless without it)
 *   index     read past a global array: UBSAN array-index-out-of-bounds
 *   leak      take a reference on 256 pages (1 MiB on 4 KiB pages) and never
 *             drop it: no report, but state a later test must not inherit;
 *             /sys/kernel/debug/kh_splat/leaked counts the pages held
 *
 * Only on a kernel built with kasan (kconfigs/kasan.config), where KASAN
 * catches them before they do harm (elsewhere they corrupt the slab):
 *   uaf       read a kmalloc'ed object after kfree
 *   oob       write just past a kmalloc'ed object
 *   dfree     kfree an object twice
 */
#include <linux/debugfs.h>
#include <linux/delay.h>
#include <linux/fs.h>
#include <linux/gfp.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/refcount.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/uaccess.h>
#include <linux/workqueue.h>

static struct dentry *kh_splat_dir;
static u64 kh_splat_leaked;
static struct address_space kh_splat_bogus_mapping;

static noinline void kh_splat_warn(void)
{
	WARN_ON_ONCE(1);
}

static noinline void kh_splat_refcount(void)
{
	refcount_t r = REFCOUNT_INIT(0);

	if (refcount_dec_and_test(&r))
		pr_info("kh_splat: refcount hit zero\n");
}

static noinline void kh_splat_badpage(void)
{
	struct page *page = alloc_page(GFP_KERNEL);

	if (!page)
		return;
	page->mapping = &kh_splat_bogus_mapping;
	__free_page(page);	/* free_page_is_bad(): non-NULL mapping */
	barrier();		/* no tail call: keep this frame in the report */
}

static noinline void kh_splat_bug(void)
{
	BUG();
}

static noinline void kh_splat_null(void)
{
	*(volatile int *)NULL = 1;
}

static noinline void kh_splat_hang(void)
{
	schedule_timeout_uninterruptible(6 * HZ);
	barrier();		/* no tail call: keep this frame in the report */
}

/* A grace period must be waited for, or nobody notices the stall. */
static void kh_splat_gp_fn(struct work_struct *work)
{
	synchronize_rcu();
}
static DECLARE_WORK(kh_splat_gp_work, kh_splat_gp_fn);

static noinline void kh_splat_stall(void)
{
	queue_work(system_unbound_wq, &kh_splat_gp_work);
	msleep(200);	/* let the grace period start, even on one CPU */
	preempt_disable();
	mdelay(8000);
	preempt_enable();
	flush_work(&kh_splat_gp_work);
}

static noinline void kh_splat_atomic(void)
{
	preempt_disable();
	msleep(1);
	preempt_enable();
}

static DEFINE_MUTEX(kh_splat_lock_a);
static DEFINE_MUTEX(kh_splat_lock_b);

static noinline void kh_splat_lockorder(void)
{
	mutex_lock(&kh_splat_lock_a);
	mutex_lock(&kh_splat_lock_b);
	mutex_unlock(&kh_splat_lock_b);
	mutex_unlock(&kh_splat_lock_a);
	mutex_lock(&kh_splat_lock_b);
	mutex_lock(&kh_splat_lock_a);	/* the other order: a cycle for lockdep */
	mutex_unlock(&kh_splat_lock_a);
	mutex_unlock(&kh_splat_lock_b);
}

static int kh_splat_array[8];

static noinline void kh_splat_index(void)
{
	volatile int i = ARRAY_SIZE(kh_splat_array);

	pr_info("kh_splat: past the array: %d\n", kh_splat_array[i]);
}

static noinline void kh_splat_uaf(void)
{
	int *p = kmalloc(64, GFP_KERNEL);

	if (!p)
		return;
	kfree(p);
	pr_info("kh_splat: after free: %d\n", READ_ONCE(p[2]));
}

static noinline void kh_splat_oob(void)
{
	char *p = kmalloc(60, GFP_KERNEL);

	if (!p)
		return;
	WRITE_ONCE(p[60], 1);
	kfree(p);
}

static noinline void kh_splat_dfree(void)
{
	void *p = kmalloc(32, GFP_KERNEL);

	kfree(p);
	kfree(p);
	barrier();		/* no tail call: keep this frame in the report */
}

static noinline void kh_splat_leak(void)
{
	int i;

	for (i = 0; i < 256; i++) {
		if (!alloc_page(GFP_KERNEL))
			break;
		kh_splat_leaked++;
	}
}

static const struct {
	const char *name;
	void (*fn)(void);
} kh_splats[] = {
	{ "warn", kh_splat_warn },
	{ "refcount", kh_splat_refcount },
	{ "badpage", kh_splat_badpage },
	{ "bug", kh_splat_bug },
	{ "null", kh_splat_null },
	{ "hang", kh_splat_hang },
	{ "stall", kh_splat_stall },
	{ "atomic", kh_splat_atomic },
	{ "lockorder", kh_splat_lockorder },
	{ "index", kh_splat_index },
	{ "leak", kh_splat_leak },
	{ "uaf", kh_splat_uaf },
	{ "oob", kh_splat_oob },
	{ "dfree", kh_splat_dfree },
};

static ssize_t kh_splat_write(struct file *file, const char __user *ubuf, size_t len,
			      loff_t *ppos)
{
	char buf[16];
	size_t i;

	if (len >= sizeof(buf))
		return -EINVAL;
	if (copy_from_user(buf, ubuf, len))
		return -EFAULT;
	buf[len] = 0;
	strim(buf);
	for (i = 0; i < ARRAY_SIZE(kh_splats); i++) {
		if (!strcmp(buf, kh_splats[i].name)) {
			kh_splats[i].fn();
			return len;
		}
	}
	return -EINVAL;
}

static const struct file_operations kh_splat_fops = {
	.owner = THIS_MODULE,
	.write = kh_splat_write,
};

static int __init kh_splat_init(void)
{
	kh_splat_dir = debugfs_create_dir("kh_splat", NULL);
	debugfs_create_file("trigger", 0200, kh_splat_dir, NULL, &kh_splat_fops);
	debugfs_create_u64("leaked", 0400, kh_splat_dir, &kh_splat_leaked);
	return 0;
}

static void __exit kh_splat_exit(void)
{
	debugfs_remove_recursive(kh_splat_dir);
}

module_init(kh_splat_init);
module_exit(kh_splat_exit);
MODULE_DESCRIPTION("kharness: kernel reports on demand, for the parser's tests");
MODULE_LICENSE("GPL");
