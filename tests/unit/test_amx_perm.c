/* test_amx_perm.c - asking Linux for AMX tile state makes every signal frame
 * of the process larger, so the kernel sets ask only when AMX may be chosen:
 * a process that names another set in MOE_KERNELS never asks (src/kernels.c,
 * amx_permitted). Its own process: any earlier kernel pick would have asked. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "test_util.h"

#if defined(__linux__) && defined(__x86_64__)
#include <sys/syscall.h>
#include <unistd.h>

/* Whether this process may use AMX tile data (XFEATURE_XTILEDATA, bit 18). */
static int tile_data_permitted(void) {
    enum { ARCH_GET_XCOMP_PERM = 0x1022 };
    unsigned long long bits = 0;
    if (syscall(SYS_arch_prctl, ARCH_GET_XCOMP_PERM, &bits) != 0) return -1;
    return (int)((bits >> 18) & 1);
}

static int has_set(const char *name) {
    const kernel_set *sets[8];
    int n = kernels_available(sets, 8);
    for (int i = 0; i < n; i++)
        if (!strcmp(sets[i]->name, name)) return 1;
    return 0;
}

int main(void) {
    if (tile_data_permitted() < 0) {
        printf("test_amx_perm: skipped (this kernel has no ARCH_GET_XCOMP_PERM)\n");
        return 0;
    }
    CHECK(tile_data_permitted() == 0, "a new process has no AMX permission");
    setenv("MOE_KERNELS", "avx512", 1);
    CHECK(!has_set("amx"), "MOE_KERNELS=avx512: the amx set is not offered");
    CHECK(tile_data_permitted() == 0, "MOE_KERNELS=avx512: AMX permission was not asked for");
    unsetenv("MOE_KERNELS");
    if (has_set("amx"))
        CHECK(tile_data_permitted() == 1, "amx offered: the permission it needs was granted");
    else
        printf("test_amx_perm: no amx set on this CPU or build (only the negative half ran)\n");
    return test_summary("test_amx_perm");
}
#else
int main(void) {
    printf("test_amx_perm: skipped (AMX permission is a Linux x86-64 matter)\n");
    return 0;
}
#endif
