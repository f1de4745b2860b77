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
    .section .note.GNU-stack,"",@progbits
