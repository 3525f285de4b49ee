/* seed_tiny_model.c - write the tiny valid model (tests/unit/tiny_model.h) to
 * a file: the starting point of the fuzz corpus. */
#include "tiny_model.h"

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: seed_tiny_model OUT\n"); return 2; }
    size_t n;
    uint8_t *buf = tiny_model(&n);
    FILE *f = fopen(argv[1], "wb");
    if (!f || fwrite(buf, 1, n, f) != n || fclose(f)) { perror(argv[1]); return 1; }
    free(buf);
    return 0;
}
