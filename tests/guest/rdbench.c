/* rdbench: read throughput of a file or block device, for tests/guest/bench.sh (run in the guest).
 * Usage: rdbench seq|rand PATH BLOCK_SIZE TOTAL_BYTES direct|buffered [SEED]
 *   seq:  reads TOTAL_BYTES from offset 0 in BLOCK_SIZE reads (wrapping at the end of PATH)
 *   rand: reads TOTAL_BYTES / BLOCK_SIZE blocks at random BLOCK_SIZE-aligned offsets
 * Prints one line: "mode=.. io=.. bs=.. bytes=.. secs=.. mib_s=.. iops=..". Exits non-zero on any short or failed
 * read: a benchmark that hides an error is worse than none. Never writes to PATH (opened O_RDONLY). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <linux/fs.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* xorshift64*: a fixed sequence for a given seed, so ublk and loop read the same offsets. */
static uint64_t rng_state;
static uint64_t rng(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ULL;
}

int main(int argc, char **argv) {
    if (argc < 6) {
        fprintf(stderr, "usage: rdbench seq|rand PATH BLOCK_SIZE TOTAL_BYTES direct|buffered [SEED]\n");
        return 2;
    }
    int rand_mode = strcmp(argv[1], "rand") == 0;
    const char *path = argv[2];
    size_t bs = strtoull(argv[3], NULL, 0);
    uint64_t total = strtoull(argv[4], NULL, 0);
    int direct = strcmp(argv[5], "direct") == 0;
    rng_state = argc > 6 ? strtoull(argv[6], NULL, 0) : 88172645463325252ULL;
    if (bs == 0 || total < bs) {
        fprintf(stderr, "rdbench: bad sizes\n");
        return 2;
    }
    int fd = open(path, O_RDONLY | (direct ? O_DIRECT : 0));
    if (fd < 0) {
        fprintf(stderr, "rdbench: open %s: %s\n", path, strerror(errno));
        return 1;
    }
    uint64_t size = 0;
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISBLK(st.st_mode)) {
        if (ioctl(fd, BLKGETSIZE64, &size) != 0) size = 0;
    } else {
        size = st.st_size;
    }
    if (size < bs) {
        fprintf(stderr, "rdbench: %s is smaller than one block\n", path);
        return 1;
    }
    void *buf;
    if (posix_memalign(&buf, 4096, bs) != 0) return 1;
    uint64_t blocks = size / bs, n = total / bs, done = 0;
    double t0 = now();
    for (uint64_t i = 0; i < n; i++) {
        uint64_t off = rand_mode ? (rng() % blocks) * bs : (i % blocks) * bs;
        ssize_t r = pread(fd, buf, bs, off);
        if (r != (ssize_t)bs) {
            fprintf(stderr, "rdbench: pread %s at %llu: %s\n", path, (unsigned long long)off,
                    r < 0 ? strerror(errno) : "short read");
            return 1;
        }
        done += r;
    }
    double secs = now() - t0;
    printf("mode=%s io=%s bs=%zu bytes=%llu secs=%.3f mib_s=%.1f iops=%.0f\n", rand_mode ? "rand" : "seq",
           direct ? "direct" : "buffered", bs, (unsigned long long)done, secs, done / secs / 1048576.0, n / secs);
    close(fd);
    return 0;
}
