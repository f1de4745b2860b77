/* SPDX-License-Identifier: Apache-2.0 */
/* Entry point and register-level helpers of the freestanding restorer. */
    .text
    .globl _start
    .type _start, @function
_start:
    /* The kernel's stack may sit exactly where the image's stack must go: move to our own at once. */
    movq %rsp, %rdi
    leaq restorer_stack_top(%rip), %rsp
    andq $-16, %rsp
    call restorer_main
    hlt
    .size _start, .-_start

/* void restorer_resume(const struct saved_context *ctx) -- noreturn
 * Loads a park point saved by ghost_context_save (ghost-core/agent/context_save.S) and returns 1
 * from it, on the thread's own stack. Uses no stack of its own. */
    .globl restorer_resume
    .type restorer_resume, @function
restorer_resume:
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
    .size restorer_resume, .-restorer_resume

/* long restorer_clone_thread(struct clone_args *args, size_t size, const struct saved_context *ctx)
 * clone3(); the parent gets the kernel's return value, the child runs
 * restorer_thread_entry(ctx) on its new stack, which resumes ctx in the end. */
    .globl restorer_clone_thread
    .type restorer_clone_thread, @function
restorer_clone_thread:
    pushq %r12
    movq %rdx, %r12
    movl $435, %eax
    syscall
    testq %rax, %rax
    jz 1f
    popq %r12
    ret
1:
    movq %r12, %rdi
    call restorer_thread_entry
    hlt
    .size restorer_clone_thread, .-restorer_clone_thread
/* long restorer_spawn(struct clone_args *args, size_t size)
 * clone3(); the child runs restorer_page_worker() on its own stack, then exits (the thread only). */
    .globl restorer_spawn
    .type restorer_spawn, @function
restorer_spawn:
    movl $435, %eax
    syscall
    testq %rax, %rax
    jz 1f
    ret
1:
    call restorer_page_worker
    movl $60, %eax
    xorl %edi, %edi
    syscall
    hlt
    .size restorer_spawn, .-restorer_spawn
    .section .note.GNU-stack,"",@progbits
