/* Fixed thread pool (see threadpool.h). Between jobs of one run the workers spin on a
 * generation counter, so an op hands out work in well under a microsecond; at the end of
 * a run they go back to sleeping on a condition variable. */
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

/* Chunk t of `threads` over [0, n), boundaries multiples of align. */
static void chunk(size_t n, size_t align, int threads, int t, size_t* begin, size_t* end) {
  size_t units = (n + align - 1) / align;
  size_t b = units * (size_t)t / (size_t)threads * align;
  size_t e = units * (size_t)(t + 1) / (size_t)threads * align;
  *begin = b < n ? b : n;
  *end = e < n ? e : n;
}


#if defined(__x86_64__) || defined(__i386__)
#define CPU_RELAX() __builtin_ia32_pause()
#else
#define CPU_RELAX() ((void)0)
#endif

/* Spins before a worker sleeps while the pool is hot (roughly a millisecond or more). */
#define SPIN_LIMIT (1 << 18)

struct spnn_threadpool {
  int size;
  pthread_t* threads;
  pthread_mutex_t mutex;
  pthread_cond_t wake;
  atomic_uint generation;
  atomic_int pending;
  atomic_int stop;
  atomic_int hot;
  atomic_int started; /* workers that are running (a browser starts them asynchronously) */
  /* the current job; written by the caller before it bumps `generation` */
  spnn_task_fn fn;
  void* ctx;
  size_t n, align;
  int threads_used;
};

typedef struct worker_arg {
  spnn_threadpool* pool;
  int index;
} worker_arg;

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
    if (g == seen && !atomic_load_explicit(&pool->stop, memory_order_acquire)) {
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
    if (atomic_load(&pool->stop)) break;
    seen = g;
    spins = 0;
    if (index < pool->threads_used) {
      size_t b, e;
      chunk(pool->n, pool->align, pool->threads_used, index, &b, &e);
      if (b < e) pool->fn(pool->ctx, b, e);
    }
    atomic_fetch_sub_explicit(&pool->pending, 1, memory_order_acq_rel);
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
  atomic_init(&pool->pending, 0);
  atomic_init(&pool->stop, 0);
  atomic_init(&pool->hot, 0);
  atomic_init(&pool->started, 0);
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
  if (atomic_load(&pool->started) < pool->size - 1) {
    /* A worker has not started yet (in a browser, a worker made after the preloaded pool
     * runs out starts only once the main thread returns to its event loop): do every
     * chunk here rather than wait for it. Same chunks, same results. */
    for (int t = 0; t < threads; t++) {
      size_t b, e;
      chunk(n, align, threads, t, &b, &e);
      if (b < e) fn(ctx, b, e);
    }
    return;
  }
  pool->fn = fn;
  pool->ctx = ctx;
  pool->n = n;
  pool->align = align;
  pool->threads_used = threads;
  atomic_store_explicit(&pool->hot, 1, memory_order_relaxed);
  atomic_store_explicit(&pool->pending, pool->size - 1, memory_order_relaxed);
  pthread_mutex_lock(&pool->mutex);
  atomic_fetch_add_explicit(&pool->generation, 1, memory_order_release);
  pthread_cond_broadcast(&pool->wake);
  pthread_mutex_unlock(&pool->mutex);
  size_t b, e;
  chunk(n, align, threads, 0, &b, &e);
  if (b < e) fn(ctx, b, e);
  /* Spin briefly, then yield: on an oversubscribed machine a descheduled worker needs
   * the core the caller would otherwise burn. */
  for (int spins = 0; atomic_load_explicit(&pool->pending, memory_order_acquire) > 0; spins++) {
    if (spins < 2000) CPU_RELAX();
    else sched_yield();
  }
}

#endif /* SPNN_THREADS */
