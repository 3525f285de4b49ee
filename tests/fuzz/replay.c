/* replay.c - run a fuzz target's entry point on files, without libFuzzer: how
 * the ordinary (and the ASan + UBSan) build replays the inputs that once broke
 * a target (tests/fuzz/regress/TARGET/). Arguments: files or folders. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int replay_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return -1;
    }
    size_t cap = 1 << 16, n = 0;
    uint8_t *buf = malloc(cap);
    size_t got;
    while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) buf = realloc(buf, cap *= 2);
    }
    fclose(f);
    if (!buf) return -1;
    uint8_t *exact = malloc(n ? n : 1); /* exactly n bytes, so ASan sees a read past the end */
    if (!exact) return -1;
    memcpy(exact, buf, n);
    free(buf);
    LLVMFuzzerTestOneInput(exact, n);
    free(exact);
    printf("replayed %s (%zu bytes)\n", path, n);
    return 0;
}

static int replay(const char *path) {
    struct stat st;
    if (stat(path, &st)) {
        perror(path);
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) return replay_file(path);
    DIR *d = opendir(path);
    if (!d) return -1;
    int rc = 0, n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", path, e->d_name);
        rc |= replay_file(p);
        n++;
    }
    closedir(d);
    return n ? rc : -1; /* an empty folder replays nothing: that is a mistake, not a pass */
}

int main(int argc, char **argv) {
    int rc = argc > 1 ? 0 : 1;
    for (int i = 1; i < argc; i++) rc |= replay(argv[i]) != 0;
    return rc;
}
