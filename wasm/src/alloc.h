/* The engine's memory: aligned buffers with slack, and the budget a load may spend.
 *
 * Every buffer whose size comes from the file (weights, packed weights, tables, the arena)
 * is taken with spnn_alloc and given back with spnn_dealloc. While a load runs, those
 * allocations are charged to a budget set from the file's length (spnn_memory_limit): a
 * file cannot make the engine take more than a fixed multiple of its own size. */
#ifndef PYSPARSE_ALLOC_H
#define PYSPARSE_ALLOC_H

#include <stddef.h>
#include <stdint.h>

/* Buffers start at this alignment and carry this much slack at the end, so vector tails
 * may over-read by up to one cache line without leaving the buffer. */
#define SPNN_ALIGN 64
#define SPNN_SLACK 64

/* Memory a file may ask for (docs/format.md, "Limits"): its arena plus 4 bytes per element
 * of its constants may not exceed SPNN_MEMORY_FLOOR + SPNN_MEMORY_PER_BYTE * file size. */
#define SPNN_MEMORY_FLOOR ((uint64_t)256 << 20)
#define SPNN_MEMORY_PER_BYTE 64u
uint64_t spnn_memory_limit(uint64_t file_size);

/* Aligned allocation with slack; NULL when out of memory or over the load's budget. */
void* spnn_alloc(size_t bytes);
void* spnn_calloc(size_t bytes);
void spnn_dealloc(void* p);

/* The budget of the load running on this thread: from spnn_budget_begin(bytes) to
 * spnn_budget_end(), spnn_alloc fails once the bytes it handed out reach `bytes`. */
void spnn_budget_begin(uint64_t bytes);
void spnn_budget_end(void);

struct spnn_sparse;
/* Frees a decoded sparse weight and its arrays (NULL is fine). */
void spnn_free_sparse(struct spnn_sparse* s);

#endif
