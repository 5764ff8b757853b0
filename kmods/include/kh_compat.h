/* SPDX-License-Identifier: GPL-2.0 */
/*
 * kh_compat.h - the one place where kernel API differences between the
 * kernels kharness serves (Debian 6.1, 6.12, 7.2, 7.3-rc) are bridged, so
 * the modules themselves carry no version #ifs.
 */
#ifndef KH_COMPAT_H
#define KH_COMPAT_H

#include <linux/version.h>
#include <linux/mm.h>

/* vm_flags became read-only behind accessors in 6.3. */
#if LINUX_VERSION_CODE < KERNEL_VERSION(6, 3, 0)
static inline void kh_vm_flags_set(struct vm_area_struct *vma, unsigned long flags)
{
	vma->vm_flags |= flags;
}
static inline void kh_vm_flags_clear(struct vm_area_struct *vma, unsigned long flags)
{
	vma->vm_flags &= ~flags;
}
#else
#define kh_vm_flags_set(vma, flags)	vm_flags_set(vma, flags)
#define kh_vm_flags_clear(vma, flags)	vm_flags_clear(vma, flags)
#endif

/*
 * folio_mapcount() is an exported function before the 6.8 mapcount rework
 * and inline after; page_mapcount() went away later. Our pages are order 0.
 */
static inline int kh_page_mapcount(struct page *page)
{
#if LINUX_VERSION_CODE < KERNEL_VERSION(6, 8, 0)
	return page_mapcount(page);
#else
	return folio_mapcount(page_folio(page));
#endif
}

/*
 * Insert a page with a reference, from a fault handler. 7.x has
 * vmf_insert_page_mkwrite() (the DAX folio work); before it, vm_insert_page()
 * semantics through vmf_insert_page(). Both take a reference and a mapcount.
 */
static inline vm_fault_t kh_vmf_insert_page(struct vm_fault *vmf, struct page *page)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(7, 0, 0)
	return vmf_insert_page_mkwrite(vmf, page, false);
#else
	return vmf_insert_page(vmf->vma, vmf->address, page);
#endif
}

/* pfn_t went away in 6.17: vmf_insert_mixed() takes a plain PFN since. */
#if LINUX_VERSION_CODE < KERNEL_VERSION(6, 17, 0)
#include <linux/pfn_t.h>
static inline vm_fault_t kh_vmf_insert_mixed(struct vm_fault *vmf, unsigned long pfn)
{
	return vmf_insert_mixed(vmf->vma, vmf->address, pfn_to_pfn_t(pfn));
}
#else
static inline vm_fault_t kh_vmf_insert_mixed(struct vm_fault *vmf, unsigned long pfn)
{
	return vmf_insert_mixed(vmf->vma, vmf->address, pfn);
}
#endif

/*
 * The DAX mkwrite path: make the PTE at vmf->address writable for this
 * PFN, inserting it if the PTE is empty. A PTE that maps another PFN is left
 * alone, with WARN_ON_ONCE() unless it is the zero page (insert_pfn() and
 * insert_page_into_pte_locked() in mm/memory.c): the driver raced with its
 * own block reallocation. 6.1 exports this for PFNs only
 * (vmf_insert_mixed_mkwrite()), 6.15 and later for pages only
 * (vmf_insert_page_mkwrite(), which refuses the mismatch with SIGBUS rather
 * than retrying); 6.12 has neither. Where the kernel has no such call,
 * VM_FAULT_FALLBACK: the driver upgrades in place.
 */
#if LINUX_VERSION_CODE < KERNEL_VERSION(6, 12, 0)
static inline vm_fault_t kh_vmf_insert_mixed_mkwrite(struct vm_fault *vmf, unsigned long pfn)
{
	return vmf_insert_mixed_mkwrite(vmf->vma, vmf->address, pfn_to_pfn_t(pfn));
}
#else	/* still declared, no longer exported: Debian 6.12's and 7.2's Module.symvers */
static inline vm_fault_t kh_vmf_insert_mixed_mkwrite(struct vm_fault *vmf, unsigned long pfn)
{
	return VM_FAULT_FALLBACK;
}
#endif

#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 15, 0)
static inline vm_fault_t kh_vmf_insert_page_mkwrite(struct vm_fault *vmf, struct page *page)
{
	return vmf_insert_page_mkwrite(vmf, page, true);
}
#else
static inline vm_fault_t kh_vmf_insert_page_mkwrite(struct vm_fault *vmf, struct page *page)
{
	return VM_FAULT_FALLBACK;
}
#endif

/*
 * The vm_operations_struct member called before a VMA is split. Its
 * signature has been stable from 5.x on; one macro keeps it that way here.
 */
#define KH_MAY_SPLIT_ARGS	struct vm_area_struct *vma, unsigned long addr

#endif /* KH_COMPAT_H */
