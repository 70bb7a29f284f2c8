/*
 * Preloaded into a process (LD_PRELOAD), hides AVX-512, AVX-VNNI and AMX from CPUID, so every
 * library that picks its kernels at run time (wick, ONNX Runtime's MLAS, llama.cpp's ggml)
 * takes its AVX2 + FMA path: an AVX2-only CPU, such as a Zen 3, on a machine that has
 * AVX-512. Used by `scripts/hide-avx512`.
 *
 * How: Linux's CPUID faulting (arch_prctl(ARCH_SET_CPUID, 0), the `cpuid_fault` CPU flag)
 * makes each CPUID instruction raise SIGSEGV; the handler runs the real CPUID with faulting
 * briefly off, clears the feature bits and steps over the instruction. The setting is per
 * thread and inherited by threads created afterwards; the constructor runs before any exist.
 * XGETBV is not intercepted: every detector checks the CPUID bit as well.
 */
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <cpuid.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

static long set_cpuid(unsigned long enabled) {
    return syscall(SYS_arch_prctl, ARCH_SET_CPUID, enabled);
}

/* Leaf 7 sub-leaf 0: EBX AVX512 F/DQ/IFMA/PF/ER/CD/BW/VL; ECX VBMI/VBMI2/VNNI/BITALG/VPOPCNTDQ;
 * EDX 4VNNIW/4FMAPS/VP2INTERSECT/FP16 and AMX BF16/TILE/INT8. */
#define L7_EBX ((1u << 16) | (1u << 17) | (1u << 21) | (1u << 26) | (1u << 27) | (1u << 28) | (1u << 30) | (1u << 31))
#define L7_ECX ((1u << 1) | (1u << 6) | (1u << 11) | (1u << 12) | (1u << 14))
#define L7_EDX ((1u << 2) | (1u << 3) | (1u << 8) | (1u << 23) | (1u << 22) | (1u << 24) | (1u << 25))
/* Leaf 7 sub-leaf 1: EAX AVX-VNNI and AVX512_BF16. */
#define L7S1_EAX ((1u << 4) | (1u << 5))
/* Leaf 0xD sub-leaf 0: EAX the XSAVE state components of AVX-512 (opmask, ZMM) and AMX. */
#define LD_EAX ((1u << 5) | (1u << 6) | (1u << 7) | (1u << 17) | (1u << 18))

static void on_fault(int sig, siginfo_t *info, void *context) {
    (void)info;
    ucontext_t *uc = context;
    greg_t *r = uc->uc_mcontext.gregs;
    const unsigned char *ip = (const unsigned char *)r[REG_RIP];
    if (ip[0] != 0x0F || ip[1] != 0xA2) {
        /* A real fault: let it kill the process as it would have. */
        signal(sig, SIG_DFL);
        return;
    }
    unsigned leaf = (unsigned)r[REG_RAX], sub = (unsigned)r[REG_RCX];
    unsigned a, b, c, d;
    set_cpuid(1);
    __cpuid_count(leaf, sub, a, b, c, d);
    set_cpuid(0);
    if (leaf == 7 && sub == 0) {
        b &= ~L7_EBX;
        c &= ~L7_ECX;
        d &= ~L7_EDX;
    } else if (leaf == 7 && sub == 1) {
        a &= ~L7S1_EAX;
    } else if (leaf == 0xD && sub == 0) {
        a &= ~LD_EAX;
    }
    r[REG_RAX] = a;
    r[REG_RBX] = b;
    r[REG_RCX] = c;
    r[REG_RDX] = d;
    r[REG_RIP] += 2;
}

__attribute__((constructor)) static void hide_avx512(void) {
    struct sigaction action = {0};
    action.sa_sigaction = on_fault;
    action.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&action.sa_mask);
    if (sigaction(SIGSEGV, &action, NULL) != 0 || set_cpuid(0) != 0) {
        fprintf(stderr, "hide-avx512: CPUID faulting is not available here\n");
        exit(97);
    }
}
