/* SPDX-License-Identifier: Apache-2.0 */
/* ghost_lower_enter(entry, sp, handoff): saves the upper callee-saved registers and stack pointer in the
 * hand-off block, then jumps to the lower ld.so's entry on the lower stack (as the kernel would: rdx=0).
 * ghost_lower_resume(handoff): called by the lower main with lower FS; restores the upper FS and returns
 * from ghost_lower_enter. Offsets match struct ghost_handoff (checked by static_assert in the loader). */
#define OFF_HAVE_FSGSBASE 12
#define OFF_SAVED_SP 16
#define OFF_UPPER_FS 24

    .text
    .globl ghost_lower_enter
    .hidden ghost_lower_enter
    .type ghost_lower_enter, @function
ghost_lower_enter:
    push %rbp
    push %rbx
    push %r12
    push %r13
    push %r14
    push %r15
    mov %rsp, OFF_SAVED_SP(%rdx)
    mov %rsi, %rsp
    xor %edx, %edx
    xor %ebp, %ebp
    jmp *%rdi
    .size ghost_lower_enter, .-ghost_lower_enter

    .globl ghost_lower_resume
    .hidden ghost_lower_resume
    .type ghost_lower_resume, @function
ghost_lower_resume:
    mov OFF_SAVED_SP(%rdi), %rsp
    mov OFF_UPPER_FS(%rdi), %rsi
    cmpl $0, OFF_HAVE_FSGSBASE(%rdi)
    je 1f
    wrfsbase %rsi
    jmp 2f
1:  mov $158, %eax          /* arch_prctl(ARCH_SET_FS, upper_fs) */
    mov $0x1002, %edi
    syscall
2:  pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %rbx
    pop %rbp
    ret
    .size ghost_lower_resume, .-ghost_lower_resume
    .section .note.GNU-stack,"",@progbits
