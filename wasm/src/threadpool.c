/* Fixed thread pool (see threadpool.h).
 *
 * A job is cut into a fixed grid of chunks (boundaries multiples of `align`, a few per
 * thread). Thread t owns a contiguous run of the grid, the same part of every job, and
 * runs it front to back; a thread that has finished its own run takes chunks from the back
 * of the others'. Owning the same part of each layer keeps a thread on the pixels (or rows)
 * whose inputs it wrote itself, in its own core's cache, rather than pulling them from the
 * other core's; taking from the back keeps a late thread (another process has its core)
 * from holding up the job. The grid, not who runs a chunk, fixes each element's
 * arithmetic. A claim is a compare-and-swap on one 64-bit word holding the job number and
 * the run's first and end chunk, so a thread that wakes late can never claim a chunk of a
 * later job with the earlier job's arguments. Between the jobs of one run workers spin. After
 * a run a worker spins on for a moment, then (where waking it is slow) naps in short timed
 * waits for a while, looking for work after each, then sleeps until the caller wakes it (see
 * "Sleeping and waking"). */
#if defined(__linux__) && !defined(__EMSCRIPTEN__) && !defined(_GNU_SOURCE)
#define _GNU_SOURCE /* syscall() */
#endif
#include "threadpool.h"

#include <stdlib.h>
#include <string.h>

#ifndef SPNN_THREADS

struct spnn_threadpool {
  int size;
};

spnn_threadpool* spnn_threadpool_create(int size) {
  (void)size;
  return NULL; /* single-thread build: no pool, callers run inline */
}
void spnn_threadpool_destroy(spnn_threadpool* pool) { (void)pool; }
spnn_threadpool* spnn_threadpool_share(int size) {
  (void)size;
  return NULL;
}
void spnn_threadpool_unshare(spnn_threadpool* pool) { (void)pool; }
int spnn_threadpool_claim(spnn_threadpool* pool) {
  (void)pool;
  return 0;
}
void spnn_threadpool_unclaim(spnn_threadpool* pool) { (void)pool; }
void spnn_threadpool_rest(spnn_threadpool* pool) { (void)pool; }
void spnn_threadpool_wake(spnn_threadpool* pool) { (void)pool; }
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
#include <time.h>

#if defined(__x86_64__) || defined(__i386__)
#define CPU_RELAX() __builtin_ia32_pause()
#else
#define CPU_RELAX() ((void)0)
#endif

/* ---- Sleeping and waking: a futex on one word ---------------------------------------------
 * Idle workers wait for the pool's `signal` to change; the caller bumps it when it hands out a
 * job, wakes the pool or stops it. Only workers asleep for good are woken, with a system call,
 * and without a lock. On a virtual machine that wake-up can cost more than a run: the host
 * has descheduled the idle virtual core, the woken worker runs milliseconds later, and the
 * caller's core is held up meanwhile (docs/benchmarks.md, "Two threads after a pause"). The
 * caller times how long a woken worker takes to run again (on its own clock: a browser's
 * workers' clocks are not in step with it), and where that was WAKE_SLOW_US or more, workers
 * nap after their jobs: timed waits of NAP_US, for a while, never woken (they find
 * the next job when a nap ends), so their cores wake on their own timers. Where waking is
 * quick they sleep at once, and a pause between runs costs nothing. */
#if defined(__EMSCRIPTEN__)
#include <emscripten/threading.h>
#include <limits.h>
#include <math.h>
/* Waits while *word == value, at most `us` microseconds (0: no limit). */
static void futex_wait(atomic_uint* word, unsigned value, int us) {
  emscripten_futex_wait((volatile void*)word, value, us > 0 ? us * 1e-3 : INFINITY);
}
static void futex_wake_all(atomic_uint* word) {
  emscripten_futex_wake((volatile void*)word, INT_MAX);
}
#elif defined(__linux__)
#include <limits.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
static void futex_wait(atomic_uint* word, unsigned value, int us) {
  const struct timespec limit = {us / 1000000, us % 1000000 * 1000L};
  syscall(SYS_futex, (unsigned*)word, FUTEX_WAIT_PRIVATE, value, us > 0 ? &limit : NULL, NULL, 0);
}
static void futex_wake_all(atomic_uint* word) {
  syscall(SYS_futex, (unsigned*)word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}
#else
/* elsewhere: 50-microsecond sleeps until the word changes */
static void futex_wait(atomic_uint* word, unsigned value, int us) {
  const struct timespec step = {0, 50000};
  for (int n = 0; atomic_load(word) == value && (us <= 0 || n * 50 < us); n++) nanosleep(&step, NULL);
}
static void futex_wake_all(atomic_uint* word) { (void)word; }
#endif

/* Spins before an idle worker naps or sleeps while the pool is hot (a millisecond or more);
 * how long it spins on after a run; its naps where waking is slow (NAPS of NAP_US: 100 ms,
 * beyond a video's frame gap). All can be set at build time (for A/B builds). */
#ifndef SPIN_LIMIT
#define SPIN_LIMIT (1 << 18)
#endif
#ifndef REST_SPIN_US
#define REST_SPIN_US 200
#endif
#ifndef NAP_US
#define NAP_US 500
#endif
#ifndef NAPS
#define NAPS 200
#endif
/* A worker that runs this long or longer after the caller woke it makes the workers nap (the
 * caller sees it arrive when it hands out a job or ends the run: up to a job later). */
#ifndef WAKE_SLOW_US
#define WAKE_SLOW_US 500
#endif
/* Chunks per thread: enough to rebalance when a thread is late, few enough to be cheap. */
#ifndef CHUNKS_PER_THREAD
#define CHUNKS_PER_THREAD 4
#endif

/* One thread's run of chunks, alone on its cache line: job << 32 | first << 16 | end. */
typedef struct owned_run {
  _Alignas(64) atomic_uint_fast64_t word;
} owned_run;

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
  int refs;                 /* models sharing the pool (under share_lock) */
  atomic_int claimed;       /* a caller's run has the pool */
  pthread_t* threads;
  atomic_uint generation;   /* bumped per job; workers wake on a change */
  atomic_uint signal;       /* bumped for each job, wake and stop; sleeping workers wait on it */
  atomic_int sleepers;      /* workers asleep on `signal` for good, or about to be */
  atomic_int napping;       /* whether idle workers nap before they sleep (waking is slow) */
  atomic_int arrived;       /* set by a worker that runs again after the caller woke it */
  int awaiting;             /* the caller's: it woke sleepers and awaits one's return */
  uint64_t woken_at;        /* the caller's: when (microseconds, its clock) */
  atomic_uint_fast64_t cool_at; /* when idle workers stop spinning after a run (microseconds) */
  owned_run* runs;          /* per thread: the unclaimed chunks of the run it owns */
  size_t chunks;            /* of the current job */
  _Alignas(64) atomic_size_t done; /* chunks of the current job finished */
  atomic_int stop;
  atomic_int hot;
  atomic_int started;       /* workers running (a browser starts them asynchronously) */
  atomic_int active;        /* threads the current job may use; workers at or above sit out */
  /* the current job; written before `runs` and `generation` publish it */
  spnn_task_fn fn;
  void* ctx;
  size_t n, align;
};

static uint64_t now_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000u + (uint64_t)t.tv_nsec / 1000u;
}

typedef struct worker_arg {
  spnn_threadpool* pool;
  int index; /* 1 .. size-1; the caller is 0 */
} worker_arg;

/* Claims one chunk of job `job` from thread t's run (the front for its owner, the back for
 * any other thread); returns it, or SIZE_MAX when that run is empty or the job is over. */
static size_t claim(spnn_threadpool* pool, int t, uint32_t job, int own) {
  atomic_uint_fast64_t* word = &pool->runs[t].word;
  uint64_t v = atomic_load_explicit(word, memory_order_acquire);
  for (;;) {
    const size_t first = (size_t)(v >> 16 & 0xFFFF), end = (size_t)(v & 0xFFFF);
    if ((uint32_t)(v >> 32) != job || first >= end) return SIZE_MAX;
    const uint64_t next = own ? v + ((uint64_t)1 << 16) : v - 1;
    if (atomic_compare_exchange_weak_explicit(word, &v, next, memory_order_acq_rel,
                                              memory_order_acquire))
      return own ? first : end - 1;
  }
}

static void run_chunk(spnn_threadpool* pool, size_t c) {
  size_t b, e;
  chunk(pool->n, pool->align, pool->chunks, c, &b, &e); /* the claim makes these this job's */
  if (b < e) pool->fn(pool->ctx, b, e);
  atomic_fetch_add_explicit(&pool->done, 1, memory_order_acq_rel);
}

/* Thread `self` of `threads` runs its own chunks of job `job`, then the others' that are
 * still unclaimed, nearest thread first. */
static void work_on(spnn_threadpool* pool, uint32_t job, int self, int threads) {
  for (size_t c; (c = claim(pool, self, job, 1)) != SIZE_MAX;) run_chunk(pool, c);
  for (int k = 1; k < threads; k++) {
    const int t = (self + k) % threads;
    for (size_t c; (c = claim(pool, t, job, 0)) != SIZE_MAX;) run_chunk(pool, c);
  }
}

static void* worker_main(void* p) {
  worker_arg* arg = (worker_arg*)p;
  spnn_threadpool* pool = arg->pool;
  int index = arg->index;
  free(arg);
  atomic_fetch_add(&pool->started, 1);
  unsigned seen = 0;
  int spins = 0, naps = 0, cooling = 0;
  for (;;) {
    /* read first: a job, wake or stop after this read changes it, and the wait below then
     * returns at once instead of sleeping through it */
    const unsigned signal = atomic_load(&pool->signal);
    unsigned g = atomic_load_explicit(&pool->generation, memory_order_acquire);
    if (atomic_load_explicit(&pool->stop, memory_order_acquire)) break;
    if (g == seen) {
      const int hot = atomic_load(&pool->hot);
      if (!hot && (!cooling || spins % 256 == 0)) /* the clock now and then: a call out of wasm */
        cooling = now_us() < atomic_load_explicit(&pool->cool_at, memory_order_relaxed);
      if (hot ? spins < SPIN_LIMIT : cooling) {
        spins++;
        if (spins % 1024 == 0) sched_yield();
        else CPU_RELAX();
        continue;
      }
      if (naps > 0) {
        naps--;
        futex_wait(&pool->signal, signal, NAP_US);
        continue;
      }
      /* counted before the last look: a caller that bumps `signal` after it either sees the
       * sleeper and wakes it, or bumped before the wait, which then returns at once */
      atomic_fetch_add(&pool->sleepers, 1);
      if (atomic_load(&pool->generation) == seen && !atomic_load(&pool->stop)) {
        futex_wait(&pool->signal, signal, 0);
        atomic_store(&pool->arrived, 1); /* running again: the caller times it */
      }
      atomic_fetch_sub(&pool->sleepers, 1);
      spins = 0;
      continue;
    }
    seen = g;
    spins = 0;
    naps = atomic_load_explicit(&pool->napping, memory_order_relaxed) ? NAPS : 0;
    const int active = atomic_load_explicit(&pool->active, memory_order_relaxed);
    if (index < active) work_on(pool, g, index, active);
  }
  return NULL;
}

spnn_threadpool* spnn_threadpool_create(int size) {
  if (size <= 1) return NULL;
  spnn_threadpool* pool = (spnn_threadpool*)aligned_alloc(_Alignof(spnn_threadpool), sizeof *pool);
  if (!pool) return NULL;
  memset(pool, 0, sizeof *pool);
  pool->threads = (pthread_t*)calloc((size_t)size, sizeof(pthread_t));
  pool->runs = (owned_run*)aligned_alloc(_Alignof(owned_run), (size_t)size * sizeof(owned_run));
  if (!pool->threads || !pool->runs) {
    free(pool->threads);
    free(pool->runs);
    free(pool);
    return NULL;
  }
  for (int t = 0; t < size; t++) atomic_init(&pool->runs[t].word, 0);
  atomic_init(&pool->signal, 0);
  atomic_init(&pool->sleepers, 0);
  atomic_init(&pool->cool_at, 0);
  atomic_init(&pool->napping, 0);
  atomic_init(&pool->arrived, 0);
  atomic_init(&pool->claimed, 0);
  atomic_init(&pool->generation, 0);
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
  atomic_store(&pool->stop, 1);
  atomic_fetch_add(&pool->signal, 1);
  futex_wake_all(&pool->signal);
  for (int i = 1; i < pool->size; i++) pthread_join(pool->threads[i], NULL);
  free(pool->threads);
  free(pool->runs);
  free(pool);
}

/* ---- One pool for the process ------------------------------------------------------------
 * Every model loaded for two or more threads shares the largest pool made so far, so that a
 * page running several models has one set of workers (one napping between runs, not one per
 * model). Runs take turns: a caller claims the pool for a run, and a run that finds it
 * claimed by another thread's run goes on one thread, over the same grid (the same bits). */
static pthread_mutex_t share_lock = PTHREAD_MUTEX_INITIALIZER;
static spnn_threadpool* shared; /* the largest pool with models, or NULL */

spnn_threadpool* spnn_threadpool_share(int size) {
  if (size <= 1) return NULL;
  pthread_mutex_lock(&share_lock);
  spnn_threadpool* pool = shared;
  if (pool && pool->size >= size) {
    pool->refs++;
  } else if ((pool = spnn_threadpool_create(size))) {
    pool->refs = 1;
    shared = pool; /* a smaller one lives on for the models that hold it */
  }
  pthread_mutex_unlock(&share_lock);
  return pool;
}

void spnn_threadpool_unshare(spnn_threadpool* pool) {
  if (!pool) return;
  pthread_mutex_lock(&share_lock);
  const int last = --pool->refs == 0;
  if (last && shared == pool) shared = NULL;
  pthread_mutex_unlock(&share_lock);
  if (last) spnn_threadpool_destroy(pool);
}

int spnn_threadpool_claim(spnn_threadpool* pool) {
  int free = 0;
  return pool && atomic_compare_exchange_strong(&pool->claimed, &free, 1);
}

void spnn_threadpool_unclaim(spnn_threadpool* pool) {
  if (pool) atomic_store(&pool->claimed, 0);
}

/* Bumps `signal` after what the workers should see has been written; wakes those asleep. */
static void signal_workers(spnn_threadpool* pool) {
  atomic_fetch_add(&pool->signal, 1);
  if (atomic_load(&pool->sleepers) > 0) {
    if (!pool->awaiting) {
      atomic_store(&pool->arrived, 0);
      pool->woken_at = now_us();
      pool->awaiting = 1;
    }
    futex_wake_all(&pool->signal);
  }
}

/* The caller, until a worker it woke runs again (at each job and at the end of the run):
 * whether that took long enough that the workers should nap from now on. */
static void time_the_wake(spnn_threadpool* pool, int run_over) {
  if (!pool->awaiting || (!run_over && !atomic_load(&pool->arrived))) return;
  atomic_store_explicit(&pool->napping, now_us() - pool->woken_at >= WAKE_SLOW_US,
                        memory_order_relaxed);
  pool->awaiting = 0;
}

void spnn_threadpool_rest(spnn_threadpool* pool) {
  if (!pool) return;
  time_the_wake(pool, 1);
  atomic_store_explicit(&pool->cool_at, now_us() + REST_SPIN_US, memory_order_relaxed);
  atomic_store_explicit(&pool->hot, 0, memory_order_relaxed);
}
/* A worker woken from its sleep takes a few tens of microseconds to run (a browser's worker
 * more): woken before the inputs are written, the workers are spinning when the first layer
 * hands out its chunks, instead of leaving most of them to the caller. A napping worker is
 * left to find the first job when its nap ends. */
void spnn_threadpool_wake(spnn_threadpool* pool) {
  if (!pool || atomic_load(&pool->started) < pool->size - 1) return;
  atomic_store_explicit(&pool->hot, 1, memory_order_relaxed);
  signal_workers(pool);
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
  pool->chunks = chunks;
  atomic_store_explicit(&pool->done, 0, memory_order_relaxed);
  atomic_store_explicit(&pool->active, threads, memory_order_relaxed);
  unsigned job = atomic_load_explicit(&pool->generation, memory_order_relaxed) + 1;
  /* Thread t owns chunks [chunks * t / threads, chunks * (t + 1) / threads). */
  for (int t = 0; t < threads; t++) {
    const uint64_t first = chunks * (size_t)t / (size_t)threads;
    const uint64_t end = chunks * (size_t)(t + 1) / (size_t)threads;
    atomic_store_explicit(&pool->runs[t].word, (uint64_t)job << 32 | first << 16 | end,
                          memory_order_release);
  }
  if (all_started) {
    atomic_store_explicit(&pool->hot, 1, memory_order_relaxed);
    atomic_store_explicit(&pool->generation, job, memory_order_release);
    time_the_wake(pool, 0);
    signal_workers(pool);
  } else {
    atomic_store_explicit(&pool->generation, job, memory_order_release);
  }
  work_on(pool, job, 0, threads);
  /* Wait only for chunks other threads claimed and are still running. */
  for (int spins = 0; atomic_load_explicit(&pool->done, memory_order_acquire) < chunks; spins++) {
    if (spins < 2000) CPU_RELAX();
    else sched_yield();
  }
}

#endif /* SPNN_THREADS */
