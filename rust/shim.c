// SPDX-License-Identifier: GPL-2.0
/*
 * Static inlines and macros vmalab's Rust code cannot reach through bindings.
 * Each helper wraps header inlines only; the decisions live in Rust (vm_ops.rs).
 */
#include <linux/mm.h>
#include <linux/pgtable.h>
#include <linux/percpu-rwsem.h>
#include <linux/rtmutex.h>
#include <linux/rcupdate.h>
#include <linux/sched.h>
#include <linux/spinlock.h>

pte_t *vmalab_pte_lock(struct vm_fault *vmf, unsigned long addr, spinlock_t **ptlp);
void vmalab_pte_unlock(pte_t *pte, spinlock_t *ptl);
pte_t *vmalab_pte_at(pte_t *pte, unsigned long addr, unsigned long to);
bool vmalab_pte_set_special(struct vm_fault *vmf, unsigned long addr, pte_t *pte,
			    struct page *page, bool writable);
bool vmalab_pte_mkwrite_same(struct vm_fault *vmf, pte_t *pte);
void vmalab_cond_resched(void);
bool vmalab_percpu_down_read(struct percpu_rw_semaphore *sem);
bool vmalab_percpu_down_read_trylock(struct percpu_rw_semaphore *sem);
void vmalab_percpu_up_read(struct percpu_rw_semaphore *sem);
void vmalab_rt_mutex_lock(struct rt_mutex *lock);

/*
 * pte_offset_map_lock() (mm/pgtable-generic.c), which modules cannot call, minus its
 * retry: locks the PTE table that maps @addr in vmf's PMD without allocating one.
 * NULL when there is no table (never populated, or freed by page-table reclaim after
 * MADV_DONTNEED) or it changed while we locked it. On success the RCU read lock and
 * *ptlp are held until vmalab_pte_unlock(): x86 frees page tables after a grace
 * period (MMU_GATHER_RCU_TABLE_FREE), and pmd_same() under the lock proves the table
 * is still the one installed.
 */
pte_t *vmalab_pte_lock(struct vm_fault *vmf, unsigned long addr, spinlock_t **ptlp)
{
	spinlock_t *ptl;
	pmd_t pmdval;
	pte_t *pte;

	rcu_read_lock();
	pmdval = pmdp_get_lockless(vmf->pmd);
	if (pmd_none(pmdval) || !pmd_present(pmdval) || pmd_trans_huge(pmdval) ||
	    pmd_bad(pmdval))
		goto nomap;
	pte = __pte_map(&pmdval, addr);
	ptl = pte_lockptr(vmf->vma->vm_mm, &pmdval);
	spin_lock(ptl);
	if (pmd_same(pmdval, pmdp_get_lockless(vmf->pmd))) {
		*ptlp = ptl;
		return pte;
	}
	spin_unlock(ptl);
nomap:
	rcu_read_unlock();
	return NULL;
}

/* Releases what vmalab_pte_lock() took. */
void vmalab_pte_unlock(pte_t *pte, spinlock_t *ptl)
{
	pte_unmap_unlock(pte, ptl);
}

/* The entry for address @to in the same PTE table as @pte, the entry for @addr. */
pte_t *vmalab_pte_at(pte_t *pte, unsigned long addr, unsigned long to)
{
	return pte - pte_index(addr) + pte_index(to);
}

/*
 * Under the PTE lock: maps @page at @addr with a special PTE (no rmap, no page
 * reference, refused by GUP) unless the entry is already populated.
 */
bool vmalab_pte_set_special(struct vm_fault *vmf, unsigned long addr, pte_t *pte,
			    struct page *page, bool writable)
{
	/*
	 * vm_page_prot is write-protected (the arena has ->pfn_mkwrite, so it wants
	 * write notification): a writable PTE is made so here, as insert_pfn(mkwrite)
	 * does with maybe_mkwrite(), whose x86 pte_mkwrite() is not exported (it only
	 * differs for shadow-stack VMAs, which an arena never is). Write before dirty,
	 * so that x86 never sees Write=0,Dirty=1 (a shadow-stack PTE).
	 */
	pte_t entry = pte_mkspecial(mk_pte(page, vmf->vma->vm_page_prot));

	if (writable && (vmf->vma->vm_flags & VM_WRITE))
		entry = pte_mkdirty(pte_mkwrite_novma(entry));

	if (!pte_none(ptep_get(pte)))
		return false;
	set_pte_at(vmf->vma->vm_mm, addr, pte, entry);
	update_mmu_cache(vmf->vma, addr, pte);
	return true;
}

/*
 * Under the PTE lock, in ->pfn_mkwrite: what wp_pfn_shared()'s finish_mkwrite_fault()
 * and wp_page_reuse() would do, but decided by vmalab (vm_ops.rs make_writable_if()):
 * make the entry writable, dirty and young if it is still vmf->orig_pte. Write before
 * dirty, as in vmalab_pte_set_special().
 */
bool vmalab_pte_mkwrite_same(struct vm_fault *vmf, pte_t *pte)
{
	unsigned long addr = vmf->address;
	pte_t entry;

	/*
	 * Only a present entry is upgraded: called from anywhere but ->pfn_mkwrite,
	 * vmf->orig_pte may be none, and none must never become a writable entry. A
	 * VMA without VM_WRITE never gets here (the access check refuses the write).
	 */
	if (!pte_present(vmf->orig_pte) || !(vmf->vma->vm_flags & VM_WRITE) ||
	    !pte_same(ptep_get(pte), vmf->orig_pte))
		return false;
	entry = pte_mkdirty(pte_mkwrite_novma(pte_mkyoung(vmf->orig_pte)));
	set_pte_at(vmf->vma->vm_mm, addr, pte, entry);
	update_mmu_cache(vmf->vma, addr, pte);
	return true;
}

void vmalab_cond_resched(void)
{
	cond_resched();
}

/*
 * percpu_rw_semaphore's read side is header inlines (percpu_rwsem.rs). The return
 * value of the first is a hint for vmalab's counters: whether a writer held the
 * semaphore as the reader arrived (it then queues on the shared wait queue).
 */
bool vmalab_percpu_down_read(struct percpu_rw_semaphore *sem)
{
	bool queued = percpu_is_write_locked(sem);

	percpu_down_read(sem);
	return queued;
}

bool vmalab_percpu_down_read_trylock(struct percpu_rw_semaphore *sem)
{
	return percpu_down_read_trylock(sem);
}

void vmalab_percpu_up_read(struct percpu_rw_semaphore *sem)
{
	percpu_up_read(sem);
}

/* rt_mutex_lock() is a macro for rt_mutex_lock_nested() under lockdep (pi_rw.rs). */
void vmalab_rt_mutex_lock(struct rt_mutex *lock)
{
	rt_mutex_lock(lock);
}
