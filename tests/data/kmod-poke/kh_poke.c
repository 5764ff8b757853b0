// SPDX-License-Identifier: GPL-2.0
/*
 * kh_poke - a developer's own test driver, as `kharness repro --kmod` takes
 * it: each write to /sys/kernel/debug/kh_poke WARNs (the signature the test
 * chases). Not WARN_ONCE: on 6.12, clear_warn_once did not re-arm this
 * module's once-flag (1 hit in 498 rounds); it re-arms the kernel's own.
 */
#include <linux/debugfs.h>
#include <linux/fs.h>
#include <linux/module.h>

static struct dentry *kh_poke_file;

static ssize_t kh_poke_write(struct file *f, const char __user *buf, size_t len, loff_t *pos)
{
	WARN(1, "kh_poke: poked\n");
	return len;
}

static const struct file_operations kh_poke_fops = {
	.owner = THIS_MODULE,
	.write = kh_poke_write,
};

static int __init kh_poke_init(void)
{
	kh_poke_file = debugfs_create_file("kh_poke", 0200, NULL, NULL, &kh_poke_fops);
	return 0;
}

static void __exit kh_poke_exit(void)
{
	debugfs_remove(kh_poke_file);
}

module_init(kh_poke_init);
module_exit(kh_poke_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kharness test: a user's out-of-tree module for repro --kmod");
