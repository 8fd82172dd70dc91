/* The thread pool under load: every element of every job is handled exactly once, whatever
 * the pauses between runs leave the workers doing (spinning, napping or asleep), and the pool
 * stops cleanly from any of those states. Built under ThreadSanitizer with workers that nap
 * after every job and with workers that never nap (make -C wasm threadpool-stress). */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "threadpool.h"

typedef struct job {
  unsigned char* hits;
} job;

static void count_task(void* ctx, size_t begin, size_t end) {
  const job* j = (const job*)ctx;
  for (size_t i = begin; i < end; i++) j->hits[i]++;
}

static void pause_us(long us) {
  const struct timespec t = {0, us * 1000L};
  if (us > 0) nanosleep(&t, NULL);
}

int main(void) {
  /* none, shorter than the spin after a run, within the naps, past them */
  static const long pauses_us[] = {0, 100, 600, 3000};
  unsigned seed = 1;
  for (int size = 2; size <= 4; size++) {
    spnn_threadpool* pool = spnn_threadpool_create(size);
    if (!pool) {
      fprintf(stderr, "could not make a pool of %d threads\n", size);
      return 1;
    }
    const int runs = 120 + size; /* the last pause differs from one pool to the next */
    for (int run = 0; run < runs; run++) {
      if (run % 2) spnn_threadpool_wake(pool);
      for (int k = 0; k < 6; k++) {
        seed = seed * 1103515245u + 12345u;
        const size_t n = 1 + seed % 4000, align = 1 + (seed >> 12) % 16;
        const int threads = 1 + (int)((seed >> 20) % (unsigned)size);
        job j = {calloc(n, 1)};
        if (!j.hits) return 1;
        spnn_threadpool_run(pool, threads, n, align, count_task, &j);
        for (size_t i = 0; i < n; i++) {
          if (j.hits[i] != 1) {
            fprintf(stderr, "pool %d, run %d, job %d (n %zu, align %zu, %d threads): element %zu "
                    "handled %d times\n", size, run, k, n, align, threads, i, j.hits[i]);
            return 1;
          }
        }
        free(j.hits);
      }
      spnn_threadpool_rest(pool);
      pause_us(pauses_us[run % 4]);
    }
    spnn_threadpool_destroy(pool);
  }
  puts("ok");
  return 0;
}
