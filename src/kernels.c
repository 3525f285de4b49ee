/* kernels.c - which kernel set runs: what this CPU and OS support, chosen
 * once per process (kernels.h). */
#include "kernels.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* SIMD sets, defined in kernels_<isa>.c, built with that ISA's flags when
 * the target has it (CMake defines MOE_HAVE_<ISA>); used only when this CPU
 * and the OS (saved register state) support the instructions. */
const kernel_set *kernels_avx2(void);
const kernel_set *kernels_avx512(void);
const kernel_set *kernels_neon(void);
const kernel_set *kernels_amx(void);

#if defined(MOE_HAVE_AVX2) || defined(MOE_HAVE_AVX512)
#include <cpuid.h>
#if defined(MOE_HAVE_AMX) && defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

typedef struct {
    int avx2, avx512, amx;
} x86_features;

#if defined(MOE_HAVE_AMX)
/* AMX tile data is off for a Linux process until it asks for it (once per
 * process, for all its threads); anywhere else we cannot ask: no AMX. */
static int amx_permitted(void) {
    /* Once asked, the kernel saves tile state in every signal frame of the
     * process, so a caller who named another set in MOE_KERNELS does not ask. */
    const char *want = getenv("MOE_KERNELS");
    if (want && *want && strcmp(want, "amx") != 0) return 0;
#if defined(__linux__) && defined(SYS_arch_prctl)
    enum { ARCH_REQ_XCOMP_PERM = 0x1023, XFEATURE_XTILEDATA = 18 };
    return syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
#else
    return 0;
#endif
}
#endif

static x86_features x86_detect(void) {
    x86_features f = {0, 0, 0};
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
    int fma = (c >> 12) & 1, osxsave = (c >> 27) & 1, f16c = (c >> 29) & 1;
    if (!osxsave) return f;
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    int ymm = (lo & 0x6) == 0x6, zmm = (lo & 0xe6) == 0xe6; /* XMM|YMM, + opmask|ZMM state */
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return f;
    int avx2 = (b >> 5) & 1, avx512f = (b >> 16) & 1, avx512bw = (b >> 30) & 1, avx512vl = (b >> 31) & 1;
    int vnni = (c >> 11) & 1, amx_bf16 = (d >> 22) & 1, amx_tile = (d >> 24) & 1;
    int tiles = (lo & 0x60000) == 0x60000; /* XTILECFG|XTILEDATA state saved by the OS */
    f.avx2 = ymm && avx2 && fma && f16c;
    f.avx512 = f.avx2 && zmm && avx512f && avx512bw && avx512vl && vnni;
#if defined(MOE_HAVE_AMX)
    f.amx = f.avx512 && amx_bf16 && amx_tile && tiles && amx_permitted();
#else
    (void)amx_bf16, (void)amx_tile, (void)tiles;
#endif
    return f;
}
#endif

#if defined(MOE_HAVE_NEON) && defined(__aarch64__)
#if defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1UL << 20) /* arch/arm64 uapi hwcap bit for SDOT/UDOT */
#endif
#endif
/* The NEON set needs the dot-product extension (ARMv8.2 optional, v8.4
 * mandatory): ask the kernel on Linux; every Apple arm64 CPU has it;
 * elsewhere we cannot tell with libc alone, so stay scalar. */
static int arm_has_dotprod(void) {
#if defined(__linux__)
    return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
#elif defined(__APPLE__)
    return 1;
#else
    return 0;
#endif
}
#endif

int kernels_available(const kernel_set **out, int cap) {
    int n = 0;
    if (n < cap) out[n++] = kernels_scalar();
#if defined(MOE_HAVE_AVX2) || defined(MOE_HAVE_AVX512)
    x86_features f = x86_detect();
#endif
#if defined(MOE_HAVE_AVX2)
    if (f.avx2 && n < cap) out[n++] = kernels_avx2();
#endif
#if defined(MOE_HAVE_AVX512)
    if (f.avx512 && n < cap) out[n++] = kernels_avx512();
#endif
#if defined(MOE_HAVE_AMX)
    if (f.amx && n < cap) out[n++] = kernels_amx();
#endif
#if defined(MOE_HAVE_NEON) && defined(__aarch64__)
    if (arm_has_dotprod() && n < cap) out[n++] = kernels_neon();
#endif
    return n;
}

/* The best set, or the one MOE_KERNELS names. */
static const kernel_set *pick_set(void) {
    const kernel_set *sets[8];
    int n = kernels_available(sets, 8);
    const kernel_set *pick = sets[n - 1];
    const char *want = getenv("MOE_KERNELS");
    if (want && *want)
        for (int i = 0; i < n; i++)
            if (!strcmp(sets[i]->name, want)) pick = sets[i];
    return pick;
}

/* Chosen once, race-free without a lock: threads that arrive first together
 * each pick (the same set) and store it; every later call only loads. */
const kernel_set *kernels_get(void) {
    static const kernel_set *_Atomic chosen;
    const kernel_set *ks = atomic_load_explicit(&chosen, memory_order_acquire);
    if (!ks) {
        ks = pick_set();
        atomic_store_explicit(&chosen, ks, memory_order_release);
    }
    return ks;
}

const char *moe_kernel_name(void) { return kernels_get()->name; }
