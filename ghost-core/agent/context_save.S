/* SPDX-License-Identifier: Apache-2.0 */
/* int ghost_context_save(struct saved_context *ctx)
 * Stores the callee-saved registers, the caller's stack pointer and return address, MXCSR and the x87
 * control word, and returns 0. The restorer resumes a thread by loading them back and "returning" 1
 * (see ghost-core/restore/). Layout: ghost-core/agent/agent_state.h, struct saved_context. */
    .text
    .globl ghost_context_save
    .hidden ghost_context_save
    .type ghost_context_save, @function
ghost_context_save:
    movq %rbx, 0(%rdi)
    movq %rbp, 8(%rdi)
    movq %r12, 16(%rdi)
    movq %r13, 24(%rdi)
    movq %r14, 32(%rdi)
    movq %r15, 40(%rdi)
    leaq 8(%rsp), %rax
    movq %rax, 48(%rdi)
    movq (%rsp), %rax
    movq %rax, 56(%rdi)
    stmxcsr 64(%rdi)
    fnstcw 68(%rdi)
    xorl %eax, %eax
    ret
    .size ghost_context_save, .-ghost_context_save
/* void ghost_context_resume(const struct saved_context *ctx) -- noreturn
 * Loads a park point saved by ghost_context_save and returns 1 from it, on the saved stack (as
 * the restorer's restorer_resume does). Uses no stack of its own. */
    .globl ghost_context_resume
    .hidden ghost_context_resume
    .type ghost_context_resume, @function
ghost_context_resume:
    movq 0(%rdi), %rbx
    movq 8(%rdi), %rbp
    movq 16(%rdi), %r12
    movq 24(%rdi), %r13
    movq 32(%rdi), %r14
    movq 40(%rdi), %r15
    ldmxcsr 64(%rdi)
    fldcw 68(%rdi)
    movq 48(%rdi), %rsp
    movl $1, %eax
    jmpq *56(%rdi)
    .size ghost_context_resume, .-ghost_context_resume

/* long ghost_clone_resume(unsigned long flags, void *stack, unsigned long tls,
 *                         const struct saved_context *ctx)
 * clone(flags, stack, NULL, NULL, tls): the caller gets the kernel's return value; the new thread
 * touches no memory before it resumes ctx (ghost_context_resume), so `stack` only needs to be a
 * 16-byte aligned address the thread may own (below ctx's stack pointer). */
    .globl ghost_clone_resume
    .hidden ghost_clone_resume
    .type ghost_clone_resume, @function
ghost_clone_resume:
    movq %rcx, %r9          /* ctx: kept by the kernel in the child's r9 */
    movq %rdx, %r8          /* tls */
    xorl %edx, %edx         /* parent_tid */
    xorl %r10d, %r10d       /* child_tid */
    movl $56, %eax          /* SYS_clone */
    syscall
.Lclone_returned:           /* the caller returns, the new thread resumes ctx (in r9) */
    testq %rax, %rax
    jz 1f
    ret
1:
    movq %r9, %rdi
    jmp ghost_context_resume
    .size ghost_clone_resume, .-ghost_clone_resume
/* long ghost_clone3_resume(struct clone_args *args, size_t size, const struct saved_context *ctx)
 * clone3(args, size) for a thread that resumes ctx, as ghost_clone_resume: clone3 is the call that
 * can ask for a thread id (set_tid, a fast duplicate's copy in its own pid namespace). The child
 * starts on args->stack + args->stack_size and touches no memory before it resumes ctx. */
    .globl ghost_clone3_resume
    .hidden ghost_clone3_resume
    .type ghost_clone3_resume, @function
ghost_clone3_resume:
    movq %rdx, %r9          /* ctx: kept by the kernel in the child's r9 */
    movl $435, %eax         /* SYS_clone3 */
    syscall
    jmp .Lclone_returned
    .size ghost_clone3_resume, .-ghost_clone3_resume
    .section .note.GNU-stack,"",@progbits
