/* Fixed thread pool (see threadpool.h).
 *
 * A job is cut into a fixed grid of chunks (boundaries multiples of `align`, a few per
 * thread); the caller and the workers claim chunks one at a time, so when a worker is
 * slow to wake (another process has its core) the caller simply does more of them. The
 * grid, not who runs a chunk, fixes each element's arithmetic. A claim is a compare-and-
 * swap on one 64-bit word holding the job number and the next chunk, so a worker that
 * wakes late can never claim a chunk of a later job with the earlier job's arguments.
 * Between the jobs of one run workers spin; at the end of a run they sleep on a
 * condition variable. */
#include "threadpool.h"

#include <stdlib.h>

#ifndef SPNN_THREADS

struct spnn_threadpool {
  int size;
};

spnn_threadpool* spnn_threadpool_create(int size) {
  (void)size;
  return NULL; /* single-thread build: no pool, callers run inline */
}
void spnn_threadpool_destroy(spnn_threadpool* pool) { (void)pool; }
void spnn_threadpool_rest(spnn_threadpool* pool) { (void)pool; }
void spnn_threadpool_run(spnn_threadpool* pool, int threads, size_t n, size_t align,
                         spnn_task_fn fn, void* ctx) {
  (void)pool;
  (void)threads;
  (void)align;
  fn(ctx, 0, n);
}

#else

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>

#if defined(__x86_64__) || defined(__i386__)
#define CPU_RELAX() __builtin_ia32_pause()
#else
#define CPU_RELAX() ((void)0)
#endif

/* Spins before an idle worker sleeps while the pool is hot (a millisecond or more). */
#define SPIN_LIMIT (1 << 18)
/* Chunks per thread: enough to rebalance when a thread is late, few enough to be cheap. */
#define CHUNKS_PER_THREAD 4

/* Chunk t of `chunks` over [0, n), boundaries multiples of align. */
static void chunk(size_t n, size_t align, size_t chunks, size_t t, size_t* begin, size_t* end) {
  size_t units = (n + align - 1) / align;
  size_t b = units * t / chunks * align;
  size_t e = units * (t + 1) / chunks * align;
  *begin = b < n ? b : n;
  *end = e < n ? e : n;
}

struct spnn_threadpool {
  int size;
  pthread_t* threads;
  pthread_mutex_t mutex;
  pthread_cond_t wake;
  atomic_uint generation;   /* bumped per job; workers wake on a change */
  atomic_uint_fast64_t next;/* job << 32 | chunks << 16 | next unclaimed chunk */
  atomic_size_t done;       /* chunks of the current job finished */
  atomic_int stop;
  atomic_int hot;
  atomic_int started;       /* workers running (a browser starts them asynchronously) */
  atomic_int active;        /* threads the current job may use; workers at or above sit out */
  /* the current job; written before `next` and `generation` publish it */
  spnn_task_fn fn;
  void* ctx;
  size_t n, align;
};

typedef struct worker_arg {
  spnn_threadpool* pool;
  int index; /* 1 .. size-1; the caller is 0 */
} worker_arg;

/* Claims and runs chunks of job `job` until none is left; returns how many it ran. */
static size_t work_on(spnn_threadpool* pool, uint32_t job) {
  size_t ran = 0;
  for (;;) {
    uint64_t v = atomic_load_explicit(&pool->next, memory_order_acquire);
    size_t chunks = (size_t)(v >> 16 & 0xFFFF), c = (size_t)(v & 0xFFFF);
    if ((uint32_t)(v >> 32) != job || c >= chunks) return ran;
    if (!atomic_compare_exchange_weak_explicit(&pool->next, &v, v + 1, memory_order_acq_rel,
                                               memory_order_acquire))
      continue;
    size_t b, e;
    chunk(pool->n, pool->align, chunks, c, &b, &e); /* the claim makes these fields this job's */
    if (b < e) pool->fn(pool->ctx, b, e);
    atomic_fetch_add_explicit(&pool->done, 1, memory_order_acq_rel);
    ran++;
  }
}

static void* worker_main(void* p) {
  worker_arg* arg = (worker_arg*)p;
  spnn_threadpool* pool = arg->pool;
  int index = arg->index;
  free(arg);
  atomic_fetch_add(&pool->started, 1);
  unsigned seen = 0;
  int spins = 0;
  for (;;) {
    unsigned g = atomic_load_explicit(&pool->generation, memory_order_acquire);
    if (atomic_load_explicit(&pool->stop, memory_order_acquire)) break;
    if (g == seen) {
      if (atomic_load_explicit(&pool->hot, memory_order_relaxed) && spins < SPIN_LIMIT) {
        spins++;
        if (spins % 1024 == 0) sched_yield();
        else CPU_RELAX();
        continue;
      }
      pthread_mutex_lock(&pool->mutex);
      while (atomic_load(&pool->generation) == seen && !atomic_load(&pool->stop))
        pthread_cond_wait(&pool->wake, &pool->mutex);
      pthread_mutex_unlock(&pool->mutex);
      spins = 0;
      continue;
    }
    seen = g;
    spins = 0;
    if (index < atomic_load_explicit(&pool->active, memory_order_relaxed)) work_on(pool, g);
  }
  return NULL;
}

spnn_threadpool* spnn_threadpool_create(int size) {
  if (size <= 1) return NULL;
  spnn_threadpool* pool = (spnn_threadpool*)calloc(1, sizeof *pool);
  if (!pool) return NULL;
  pool->threads = (pthread_t*)calloc((size_t)size, sizeof(pthread_t));
  if (!pool->threads) {
    free(pool);
    return NULL;
  }
  pthread_mutex_init(&pool->mutex, NULL);
  pthread_cond_init(&pool->wake, NULL);
  atomic_init(&pool->generation, 0);
  atomic_init(&pool->next, 0);
  atomic_init(&pool->done, 0);
  atomic_init(&pool->stop, 0);
  atomic_init(&pool->hot, 0);
  atomic_init(&pool->started, 0);
  atomic_init(&pool->active, 0);
  pool->size = 1;
  for (int i = 1; i < size; i++) {
    worker_arg* arg = (worker_arg*)malloc(sizeof *arg);
    if (!arg) break;
    arg->pool = pool;
    arg->index = i;
    if (pthread_create(&pool->threads[i], NULL, worker_main, arg) != 0) {
      free(arg);
      break;
    }
    pool->size = i + 1;
  }
  if (pool->size < size) {
    spnn_threadpool_destroy(pool);
    return NULL;
  }
  return pool;
}

void spnn_threadpool_destroy(spnn_threadpool* pool) {
  if (!pool) return;
  pthread_mutex_lock(&pool->mutex);
  atomic_store(&pool->stop, 1);
  pthread_cond_broadcast(&pool->wake);
  pthread_mutex_unlock(&pool->mutex);
  for (int i = 1; i < pool->size; i++) pthread_join(pool->threads[i], NULL);
  pthread_cond_destroy(&pool->wake);
  pthread_mutex_destroy(&pool->mutex);
  free(pool->threads);
  free(pool);
}

void spnn_threadpool_rest(spnn_threadpool* pool) {
  if (pool) atomic_store_explicit(&pool->hot, 0, memory_order_relaxed);
}

void spnn_threadpool_run(spnn_threadpool* pool, int threads, size_t n, size_t align,
                         spnn_task_fn fn, void* ctx) {
  if (align == 0) align = 1;
  if (!pool || threads <= 1 || n <= align) {
    fn(ctx, 0, n);
    return;
  }
  if (threads > pool->size) threads = pool->size;
  size_t units = (n + align - 1) / align;
  size_t chunks = (size_t)threads * CHUNKS_PER_THREAD;
  if (chunks > units) chunks = units;
  /* Workers that have not started yet (in a browser, one made after the preloaded pool
   * runs out starts only when the main thread returns to its event loop) cannot take
   * chunks; the caller does them all, over the same grid. */
  int all_started = atomic_load(&pool->started) >= pool->size - 1;
  pool->fn = fn;
  pool->ctx = ctx;
  pool->n = n;
  pool->align = align;
  atomic_store_explicit(&pool->done, 0, memory_order_relaxed);
  atomic_store_explicit(&pool->active, threads, memory_order_relaxed);
  unsigned job = atomic_load_explicit(&pool->generation, memory_order_relaxed) + 1;
  atomic_store_explicit(&pool->next, (uint64_t)job << 32 | (uint64_t)chunks << 16,
                        memory_order_release);
  if (all_started) {
    atomic_store_explicit(&pool->hot, 1, memory_order_relaxed);
    pthread_mutex_lock(&pool->mutex);
    atomic_store_explicit(&pool->generation, job, memory_order_release);
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->mutex);
  } else {
    atomic_store_explicit(&pool->generation, job, memory_order_release);
  }
  work_on(pool, job);
  /* Wait only for chunks other threads claimed and are still running. */
  for (int spins = 0; atomic_load_explicit(&pool->done, memory_order_acquire) < chunks; spins++) {
    if (spins < 2000) CPU_RELAX();
    else sched_yield();
  }
}

#endif /* SPNN_THREADS */
