/* A fixed pool of worker threads, `size - 1` workers plus the caller, made at load and shared
 * by the models of a process (spnn_threadpool_share).
 *
 * Work is split into a fixed grid of contiguous chunks, a few per thread, so which thread
 * computes an element never changes its arithmetic: outputs are bit-identical whatever the
 * thread count a job runs on. Thread t starts on the t-th contiguous part of the grid in every job (the
 * caller is thread 0), so consecutive layers split the same way keep their data in one
 * core's cache. Without SPNN_THREADS (single-thread builds) there are no workers and no
 * pthreads; every job runs on the caller.
 */
#ifndef PYSPARSE_THREADPOOL_H
#define PYSPARSE_THREADPOOL_H

#include <stddef.h>

typedef void (*spnn_task_fn)(void* ctx, size_t begin, size_t end);
typedef struct spnn_threadpool spnn_threadpool;

/* A pool of `size` threads in all (size - 1 workers); NULL if threads cannot be made. */
spnn_threadpool* spnn_threadpool_create(int size);
void spnn_threadpool_destroy(spnn_threadpool* pool);

/* The process's shared pool of at least `size` threads (the largest made so far, or a new one),
 * with a reference for the caller; NULL for size <= 1, in a single-thread build, or if threads
 * cannot be made. */
spnn_threadpool* spnn_threadpool_share(int size);
/* Drops a reference from spnn_threadpool_share; the last one stops the pool's threads. */
void spnn_threadpool_unshare(spnn_threadpool* pool);

/* Takes the pool for one caller's run (run, rest and wake are the claimant's): 1 if taken, 0
 * if another caller has it (run on one thread then). spnn_threadpool_unclaim gives it back. */
int spnn_threadpool_claim(spnn_threadpool* pool);
void spnn_threadpool_unclaim(spnn_threadpool* pool);

/* Runs fn over [0, n) in `threads` chunks (threads <= the pool's size), chunk boundaries
 * multiples of `align`; returns when all chunks are done. */
void spnn_threadpool_run(spnn_threadpool* pool, int threads, size_t n, size_t align,
                         spnn_task_fn fn, void* ctx);

/* Ends a run: idle workers spin on for a moment, then nap (short timed waits) for a while,
 * then sleep until woken. */
void spnn_threadpool_rest(spnn_threadpool* pool);

/* Wakes workers asleep for good so that they spin, ready for the next job, until a rest. */
void spnn_threadpool_wake(spnn_threadpool* pool);

#endif
