/* Engine allocations and the per-load memory budget (alloc.h). */
#include "alloc.h"

#include <stdlib.h>
#include <string.h>

#include "engine.h"

/* The budget belongs to the thread that loads: loads on other threads keep their own. */
static _Thread_local int budget_on;
static _Thread_local uint64_t budget_left;

uint64_t spnn_memory_limit(uint64_t file_size) {
  return SPNN_MEMORY_FLOOR + SPNN_MEMORY_PER_BYTE * file_size;
}

void spnn_budget_begin(uint64_t bytes) {
  budget_on = 1;
  budget_left = bytes;
}

void spnn_budget_end(void) { budget_on = 0; }

void* spnn_alloc(size_t bytes) {
  if (bytes > ((size_t)-1) / 2) return NULL;
  size_t total = (bytes + SPNN_SLACK + SPNN_ALIGN - 1) / SPNN_ALIGN * SPNN_ALIGN;
  if (budget_on) {
    if (total > budget_left) return NULL;
    budget_left -= total;
  }
  void* p = NULL;
  if (posix_memalign(&p, SPNN_ALIGN, total) != 0) return NULL;
  /* The slack is zeroed so vector tails that over-read see defined values. */
  memset((uint8_t*)p + bytes, 0, total - bytes);
  return p;
}

void* spnn_calloc(size_t bytes) {
  void* p = spnn_alloc(bytes);
  if (p) memset(p, 0, bytes);
  return p;
}

void spnn_dealloc(void* p) { free(p); }

void spnn_free_sparse(struct spnn_sparse* s) {
  if (!s) return;
  spnn_dealloc(s->counts);
  spnn_dealloc(s->columns);
  spnn_dealloc(s->values);
  free(s);
}
