/* libFuzzer target: any bytes through spnn_load, and spnn_run on whatever loads (when the
 * model's work is small enough to keep each input fast).
 *
 * The engine is built with its real limits. Every heap allocation is watched through the
 * sanitizer's malloc hooks, whoever makes it: a load whose peak heap exceeds three times the
 * memory the format lets a file of that length ask for (spnn_memory_limit: the engine's own
 * budget is twice that, the rest is room for its tables) is a finding.
 *
 * Each input is tried twice: as it is, and with its CRCs made right again, so mutations
 * reach the checks behind the checksums instead of all stopping at them. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sanitizer/allocator_interface.h>
#include <stdio.h>

#include "../src/engine.h"

static size_t heap_now, heap_peak;

static void on_malloc(const volatile void* p, size_t n) {
  (void)p;
  heap_now += n;
  if (heap_now > heap_peak) heap_peak = heap_now;
}

static void on_free(const volatile void* p) {
  if (p) heap_now -= __sanitizer_get_allocated_size((const void*)p);
}

int LLVMFuzzerInitialize(int* argc, char*** argv) {
  (void)argc;
  (void)argv;
  __sanitizer_install_malloc_and_free_hooks(on_malloc, on_free);
  return 0;
}

static void check_peak(size_t base, size_t size) {
  uint64_t used = heap_peak - base, bound = 3 * spnn_memory_limit(size);
  if (used > bound) {
    fprintf(stderr, "peak heap %llu bytes for a %zu-byte input, over the bound of %llu\n",
            (unsigned long long)used, size, (unsigned long long)bound);
    __builtin_trap();
  }
}

static void try_load(const uint8_t* data, size_t size) {
  char err[SPNN_ERROR_MESSAGE_SIZE];
  spnn_model* m = NULL;
  size_t base = heap_now;
  heap_peak = heap_now;
  spnn_status st = spnn_load(data, size, 1, &m, err, sizeof err);
  if (st != SPNN_OK) {
    check_peak(base, size);
    if (m != NULL || strlen(err) == 0) __builtin_trap(); /* every failure says why */
    return;
  }
  if (m->total_macs < 2e7) {
    for (int i = 0; i < spnn_num_inputs(m); i++) {
      int32_t dims[6];
      int nd = spnn_input_shape(m, i, dims);
      size_t n = 1;
      for (int d = 0; d < nd; d++) n *= (size_t)dims[d];
      float* x = spnn_input_data(m, i);
      for (size_t k = 0; k < n; k++) x[k] = (float)((k * 2654435761u) % 1000) / 500.0f - 1.0f;
    }
    spnn_run(m);
  }
  spnn_free(m);
  check_peak(base, size);
}

static void put_u32(uint8_t* p, uint32_t v) { memcpy(p, &v, 4); }
static uint32_t get_u32(const uint8_t* p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return v;
}

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try_load(data, size);
  if (size < 32) return 0;
  uint32_t count = get_u32(data + 16);
  if (count < 1 || count > 64 || 32 + 16 * (size_t)count > size) return 0;
  uint8_t* copy = (uint8_t*)malloc(size);
  if (!copy) return 0;
  memcpy(copy, data, size);
  uint64_t file_size = size;
  memcpy(copy + 24, &file_size, 8);
  for (uint32_t i = 0; i < count; i++) {
    uint8_t* e = copy + 32 + 16 * (size_t)i;
    uint32_t off = get_u32(e + 4), len = get_u32(e + 8);
    if ((uint64_t)off + len <= size) put_u32(e + 12, spnn_crc32(copy + off, len));
  }
  put_u32(copy + 20, spnn_crc32_update(spnn_crc32(copy, 20), copy + 32, 16 * (size_t)count));
  try_load(copy, size);
  free(copy);
  return 0;
}
