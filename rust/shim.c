// SPDX-License-Identifier: GPL-2.0
/*
 * Static inlines and macros vmalab's Rust code cannot reach through bindings.
 * One helper per function, no logic: everything else lives in Rust.
 */
#include <linux/mm.h>
#include <linux/pgtable.h>

bool vmalab_pmd_none(const struct vm_fault *vmf);

/* Used by vm_ops.rs: does the faulting address lack a PTE table? */
bool vmalab_pmd_none(const struct vm_fault *vmf)
{
	return pmd_none(pmdp_get_lockless(vmf->pmd));
}
