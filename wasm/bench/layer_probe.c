/* One layer, timed in place: what a kernel's speed depends on beyond its arithmetic.
 *
 *   node layer_probe.js spmm HW CIN COUT [binomial|equal|alternating]
 *       SpMM at 80% on an HW x HW plane: stored columns per row drawn at random (binomial),
 *       all rows the same count, or counts alternating half / one and a half the mean (the
 *       same number of nonzeros), to see what mispredicted loop exits cost; and across HW,
 *       what an input larger than L2 costs.
 *   node layer_probe.js gemv ROWS COLS EVICT_MB
 *       A fully connected layer after EVICT_MB of other memory was written, as a model's
 *       other layers would between two runs: where its weights come from.
 *
 * Prints the median of 41 timings (one kernel call each, or several where one is short).
 * Built by `make -C wasm layer-probe` (../build/kernels/layer_probe.js, and _relaxed.js with
 * relaxed SIMD where clang-16 is present). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../src/kernels.h"

#define SAMPLES 41

static double now_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e6 + t.tv_nsec * 1e-3;
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint32_t rng(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return (uint32_t)rng_state;
}

static int cmp_double(const void* a, const void* b) {
  const double x = *(const double*)a, y = *(const double*)b;
  return x < y ? -1 : x > y;
}

static void* xalloc(size_t bytes) {
  void* p = NULL;
  if (posix_memalign(&p, 64, bytes ? bytes : 64) != 0) {
    fprintf(stderr, "layer_probe: out of memory\n");
    exit(2);
  }
  return p;
}

static int spmm(int hw, int cin, int cout, const char* pattern) {
  const size_t pixels = (size_t)hw * hw;
  float* in = xalloc(4 * pixels * cin);
  float* out = xalloc(4 * pixels * cout);
  float* bias = xalloc(4 * (size_t)cout);
  for (size_t i = 0; i < pixels * cin; i++) in[i] = (float)(rng() % 1000) / 1000.0f;
  for (int r = 0; r < cout; r++) bias[r] = 0.0f;
  uint32_t* counts = xalloc(4 * (size_t)cout);
  uint32_t* columns = xalloc(4 * (size_t)cin * cout);
  float* values = xalloc(4 * (size_t)cin * cout);
  char* used = xalloc((size_t)cin);
  const int mean = (cin + 2) / 5; /* 80% sparse */
  size_t nnz = 0;
  for (int r = 0; r < cout; r++) {
    int n = 0;
    if (strcmp(pattern, "equal") == 0) {
      n = mean;
    } else if (strcmp(pattern, "alternating") == 0) {
      n = r % 2 ? mean * 3 / 2 : mean / 2;
    } else {
      for (int c = 0; c < cin; c++) n += rng() % 5 == 0;
    }
    if (n > cin) n = cin;
    memset(used, 0, (size_t)cin);
    for (int got = 0; got < n;) {
      const int c = (int)(rng() % (uint32_t)cin);
      if (!used[c]) used[c] = 1, got++;
    }
    counts[r] = (uint32_t)n;
    for (int c = 0; c < cin; c++) {
      if (used[c]) {
        columns[nnz] = (uint32_t)c;
        values[nnz++] = (float)(rng() % 100) / 100.0f;
      }
    }
  }
  void* packed = xalloc(spnn_spmm_packed_bytes((uint32_t)cout, (uint32_t)cin, 1, (uint32_t)nnz));
  spnn_spmm_weights w;
  if (spnn_spmm_pack((uint32_t)cout, (uint32_t)cin, 1, counts, columns, values, bias,
                     (uint32_t)pixels, packed, &w) != 0) {
    fprintf(stderr, "layer_probe: packing failed\n");
    return 2;
  }
  const int reps = nnz * pixels < 2000000 ? (int)(2000000 / (nnz * pixels + 1)) + 1 : 1;
  double t[SAMPLES];
  for (int i = 0; i < SAMPLES; i++) {
    const double t0 = now_us();
    for (int q = 0; q < reps; q++) spnn_spmm_run(&w, 0, pixels, in, out, 0.0f, 6.0f);
    t[i] = (now_us() - t0) / reps;
  }
  qsort(t, SAMPLES, sizeof t[0], cmp_double);
  printf("spmm %dx%d %d->%d %s (%s): %zu nonzeros, median %.1f us, %.2f GMAC/s\n", hw, hw, cin,
         cout, pattern, spnn_kernels_variant(), nnz, t[SAMPLES / 2],
         (double)nnz * pixels / t[SAMPLES / 2] / 1e3);
  return 0;
}

static int gemv(int rows, int cols, int evict_mb) {
  float* w = xalloc(4 * (size_t)rows * cols);
  float* x = xalloc(4 * (size_t)cols);
  float* y = xalloc(4 * (size_t)rows);
  float* bias = xalloc(4 * (size_t)rows);
  const size_t other = (size_t)evict_mb * 262144; /* floats */
  float* elsewhere = xalloc(4 * (other ? other : 1));
  for (size_t i = 0; i < (size_t)rows * cols; i++) w[i] = 1e-3f * (float)(i % 7);
  for (int i = 0; i < cols; i++) x[i] = 1.0f;
  for (int i = 0; i < rows; i++) bias[i] = 0.0f;
  for (size_t i = 0; i < other; i++) elsewhere[i] = 0.0f;
  double t[SAMPLES];
  for (int i = 0; i < SAMPLES; i++) {
    for (size_t k = 0; k < other; k += 16) elsewhere[k] += 1.0f; /* one write per cache line */
    const double t0 = now_us();
    spnn_f32_gemv(0, (size_t)rows, (size_t)cols, w, bias, x, y, -1e30f, 1e30f);
    t[i] = now_us() - t0;
  }
  qsort(t, SAMPLES, sizeof t[0], cmp_double);
  printf("gemv %d x %d after %d MB elsewhere (%s): median %.1f us\n", rows, cols, evict_mb,
         spnn_kernels_variant(), t[SAMPLES / 2]);
  return 0;
}

int main(int argc, char** argv) {
  if (argc >= 5 && strcmp(argv[1], "spmm") == 0)
    return spmm(atoi(argv[2]), atoi(argv[3]), atoi(argv[4]), argc > 5 ? argv[5] : "binomial");
  if (argc == 5 && strcmp(argv[1], "gemv") == 0)
    return gemv(atoi(argv[2]), atoi(argv[3]), atoi(argv[4]));
  fprintf(stderr,
          "usage: layer_probe spmm HW CIN COUT [binomial|equal|alternating]\n"
          "       layer_probe gemv ROWS COLS EVICT_MB\n");
  return 2;
}
