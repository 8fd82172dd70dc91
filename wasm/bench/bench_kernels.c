/* Kernel benchmark: SpMM and dense GEMM on MobileNetV2-224's 1x1 convolution shapes.
 *
 * Single thread. For every repeat, every case runs every system in turn (interleaved), so
 * machine noise spreads evenly; the runner reports medians. A mul/add (or FMA) probe in
 * the same run gives the machine's SIMD128 peak. Writes one JSON object to stdout.
 *
 *   bench_kernels [repeats] [target_ms]
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../src/kernels.h"

#ifdef __EMSCRIPTEN__
#include <emscripten.h>
#define BENCH_TARGET ""
static double now_ms(void) { return emscripten_get_now(); }
#else
/* The same kernels compiled for the host CPU (SIMDe), to tell what the compiler to wasm
 * and V8 cost from what the kernels themselves cost (make -C wasm bench-kernels-native). */
#define BENCH_TARGET "native-"
static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec * 1e-6;
}
#endif

/* Milliseconds this thread has spent runnable but not running (Linux schedstat; in Node
 * through NODERAWFS), or -1 where unknown. */
static double wait_ms(void) {
  FILE* f = fopen("/proc/thread-self/schedstat", "r");
  unsigned long long run = 0, wait = 0;
  const int ok = f != NULL && fscanf(f, "%llu %llu", &run, &wait) == 2;
  if (f != NULL) fclose(f);
  return ok ? wait / 1e6 : -1.0;
}

/* The kernels under test, and optionally a second copy of them (another revision, built
 * with its symbols prefixed base_, see SPNN_BENCH_BASELINE in kernels.mk) timed in the
 * same run, interleaved case by case: on a shared machine only such a comparison is fair. */
typedef struct kernel_set {
  const char* prefix; /* of the system kinds */
  size_t (*spmm_packed_bytes)(uint32_t rows, uint32_t cols, uint32_t block, uint32_t num_columns);
  int (*spmm_pack)(uint32_t rows, uint32_t cols, uint32_t block, const uint32_t* counts,
                   const uint32_t* columns, const float* values, const float* bias,
                   uint32_t pixels, void* buffer, spnn_spmm_weights* out);
  void (*spmm_run)(const spnn_spmm_weights* w, size_t pixel_begin, size_t pixel_end,
                   const float* input, float* output, float out_min, float out_max);
  size_t (*gemm_packed_bytes)(uint32_t rows, uint32_t cols);
  void (*gemm_pack)(uint32_t rows, uint32_t cols, const float* weights, const float* bias,
                    void* buffer);
  void (*gemm_run)(uint32_t rows, uint32_t cols, const void* packed, size_t pixel_begin,
                   size_t pixel_end, const float* input, size_t input_stride, float* output,
                   size_t output_stride, float out_min, float out_max);
} kernel_set;

#ifdef SPNN_BENCH_BASELINE
size_t base_spnn_spmm_packed_bytes(uint32_t, uint32_t, uint32_t, uint32_t);
int base_spnn_spmm_pack(uint32_t, uint32_t, uint32_t, const uint32_t*, const uint32_t*,
                        const float*, const float*, uint32_t, void*, spnn_spmm_weights*);
void base_spnn_spmm_run(const spnn_spmm_weights*, size_t, size_t, const float*, float*,
                        float, float);
size_t base_spnn_gemm_packed_bytes(uint32_t, uint32_t);
void base_spnn_gemm_pack(uint32_t, uint32_t, const float*, const float*, void*);
void base_spnn_gemm_run(uint32_t, uint32_t, const void*, size_t, size_t, const float*, size_t,
                        float*, size_t, float, float);
#endif

static const kernel_set kSets[] = {
    {"", spnn_spmm_packed_bytes, spnn_spmm_pack, spnn_spmm_run, spnn_gemm_packed_bytes,
     spnn_gemm_pack, spnn_gemm_run},
#ifdef SPNN_BENCH_BASELINE
    {"base_", base_spnn_spmm_packed_bytes, base_spnn_spmm_pack, base_spnn_spmm_run,
     base_spnn_gemm_packed_bytes, base_spnn_gemm_pack, base_spnn_gemm_run},
#endif
};
#define NUM_SETS (sizeof(kSets) / sizeof(kSets[0]))

typedef struct layer_shape { int hw, cin, cout; } layer_shape;

static const layer_shape kShapes[] = {
    {112, 32, 16}, {112, 16, 96}, {56, 24, 144}, {56, 144, 24},  {28, 32, 192},
    {28, 192, 32}, {14, 64, 384}, {14, 384, 64}, {14, 96, 576},  {14, 576, 96},
    {7, 160, 960}, {7, 960, 160}, {7, 320, 1280},
};
#define NUM_SHAPES (sizeof(kShapes) / sizeof(kShapes[0]))
static const int kSparsities[] = {0, 50, 70, 80, 90};
#define NUM_SPARSITIES (sizeof(kSparsities) / sizeof(kSparsities[0]))

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint32_t rng(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return (uint32_t)(rng_state >> 16);
}
static float rng_weight(void) { return ((float)(rng() % 2001) - 1000.0f) / 4000.0f + 1e-3f; }

static void* xalloc(size_t bytes) {
  void* p = aligned_alloc(16, (bytes + 15) & ~(size_t)15);
  if (p == NULL) {
    fprintf(stderr, "out of memory\n");
    exit(1);
  }
  return p;
}

/* A sparse weight in the decoded format: `keep` of the (rows/block) x cols block grid
 * are stored, chosen uniformly (exactly that many). */
typedef struct sparse_case {
  spnn_spmm_weights w;
  void* buffer;
  size_t nnz;
} sparse_case;

static void make_sparse(const kernel_set* ks, int rows, int cols, int block, int sparsity,
                        int pixels, const float* bias, sparse_case* out) {
  const int grid_rows = rows / block;
  const size_t cells = (size_t)grid_rows * cols;
  const size_t keep = (size_t)llround((double)cells * (100 - sparsity) / 100.0);
  unsigned char* mask = calloc(cells, 1);
  size_t* order = malloc(cells * sizeof(size_t));
  for (size_t i = 0; i < cells; i++) order[i] = i;
  for (size_t i = 0; i < keep; i++) { /* partial Fisher-Yates */
    const size_t j = i + rng() % (cells - i);
    const size_t t = order[i];
    order[i] = order[j];
    order[j] = t;
    mask[order[i]] = 1;
  }
  uint32_t* counts = calloc(grid_rows, sizeof(uint32_t));
  uint32_t* columns = malloc((keep + 1) * sizeof(uint32_t));
  float* values = malloc((keep * block + 1) * sizeof(float));
  size_t nc = 0, nv = 0;
  for (int g = 0; g < grid_rows; g++) {
    for (int c = 0; c < cols; c++) {
      if (!mask[(size_t)g * cols + c]) continue;
      counts[g]++;
      columns[nc++] = (uint32_t)c;
      for (int r = 0; r < block; r++) values[nv++] = rng_weight();
    }
  }
  out->nnz = nv;
  out->buffer = xalloc(ks->spmm_packed_bytes(rows, cols, block, (uint32_t)nc));
  if (ks->spmm_pack(rows, cols, block, counts, columns, values, bias, pixels, out->buffer,
                     &out->w) != 0) {
    fprintf(stderr, "pack failed\n");
    exit(1);
  }
  free(mask);
  free(order);
  free(counts);
  free(columns);
  free(values);
}

/* One benchmarked system on one layer. */
typedef struct system {
  char kind[24]; /* "dense", "spmm", "spmm_block4", prefixed by the kernel set's */
  const kernel_set* ks;
  int sparsity;
  double flops;  /* effective: 2 x pixels x nonzeros (sparse), 2 x pixels x rows x cols */
  int iters;
  double times_ms[64];
  sparse_case sparse;
  void* dense_packed;
} system_t;

typedef struct layer {
  layer_shape shape;
  int pixels;
  float *input, *output, *bias;
  int num_systems;
  system_t systems[NUM_SETS * (1 + 2 * NUM_SPARSITIES)];
} layer;

static void run_system(const layer* l, const system_t* s) {
  if (s->dense_packed != NULL) {
    s->ks->gemm_run(l->shape.cout, l->shape.cin, s->dense_packed, 0, l->pixels, l->input,
                  l->pixels, l->output, l->pixels, 0.0f, 6.0f);
  } else {
    s->ks->spmm_run(&s->sparse.w, 0, l->pixels, l->input, l->output, 0.0f, 6.0f);
  }
}

static double time_system(const layer* l, const system_t* s, int iters) {
  const double t0 = now_ms();
  for (int i = 0; i < iters; i++) run_system(l, s);
  return (now_ms() - t0) / iters;
}

/* One sample of `iters` runs the scheduler did not interrupt: on a shared machine a
 * sample about as long as a time slice is often preempted by another process, which
 * measures the machine's load, not the kernel. A sample during which this thread waited
 * on the run queue for more than 1% of it is taken again (up to kMaxRetries times; the
 * retries are counted). */
enum { kMaxRetries = 20 };
static int total_retries;
static double time_system_unpreempted(const layer* l, const system_t* s, int iters) {
  /* One untimed run first: the system before this one may have worked on another layer's
   * tensors, and a sample of one or two runs would otherwise time this layer's data coming
   * back into the caches (it did: the first system of every layer measured up to 1.8x
   * slower than an identical copy of it run right after). */
  run_system(l, s);
  double ms = 0.0;
  for (int attempt = 0; attempt <= kMaxRetries; attempt++) {
    const double w0 = wait_ms();
    ms = time_system(l, s, iters);
    const double w1 = wait_ms();
    if (w0 < 0 || w1 - w0 <= 0.01 * ms * iters) break;
    total_retries++;
  }
  return ms;
}

/* Samples of the machine's SIMD128 peak in GFLOP/s (bench/peak_probe.c, built like the
 * kernels). */
int spnn_bench_peak_samples(double (*now_ms)(void), double (*wait_ms)(void),
                            double target_ms, double* samples, int num_samples);
enum { kPeakSamplesPerRepeat = 8 };

int main(int argc, char** argv) {
  const int repeats = argc > 1 ? atoi(argv[1]) : 7;
  const double target_ms = argc > 2 ? atof(argv[2]) : 4.0;
  if (repeats < 1 || repeats > 64) {
    fprintf(stderr, "repeats must be 1..64\n");
    return 2;
  }
  static layer layers[NUM_SHAPES];
  for (size_t li = 0; li < NUM_SHAPES; li++) {
    layer* l = &layers[li];
    l->shape = kShapes[li];
    l->pixels = l->shape.hw * l->shape.hw;
    const int cin = l->shape.cin, cout = l->shape.cout, p = l->pixels;
    l->input = xalloc(sizeof(float) * cin * p);
    l->output = xalloc(sizeof(float) * cout * p);
    l->bias = xalloc(sizeof(float) * cout);
    for (int i = 0; i < cin * p; i++) l->input[i] = rng_weight();
    for (int i = 0; i < cout; i++) l->bias[i] = rng_weight();

    float* w = xalloc(sizeof(float) * cout * cin);
    for (int i = 0; i < cout * cin; i++) w[i] = rng_weight();
    const uint64_t rng_start = rng_state;
    for (size_t k = 0; k < NUM_SETS; k++) {
      const kernel_set* ks = &kSets[k];
      rng_state = rng_start; /* the same weights for every kernel set */
      system_t* d = &l->systems[l->num_systems++];
      memset(d, 0, sizeof(*d));
      d->ks = ks;
      snprintf(d->kind, sizeof(d->kind), "%sdense", ks->prefix);
      d->dense_packed = xalloc(ks->gemm_packed_bytes(cout, cin));
      ks->gemm_pack(cout, cin, w, l->bias, d->dense_packed);
      d->flops = 2.0 * p * cout * cin;
      for (int block = 1; block <= 4; block += 3) {
        for (size_t si = 0; si < NUM_SPARSITIES; si++) {
          system_t* s = &l->systems[l->num_systems++];
          memset(s, 0, sizeof(*s));
          s->ks = ks;
          snprintf(s->kind, sizeof(s->kind), "%s%s", ks->prefix,
                   block == 1 ? "spmm" : "spmm_block4");
          s->sparsity = kSparsities[si];
          make_sparse(ks, cout, cin, block, s->sparsity, p, l->bias, &s->sparse);
          s->flops = 2.0 * p * (double)s->sparse.nnz;
        }
      }
    }
    free(w);
    /* Calibrate: iterations for about target_ms per measurement. */
    for (int si = 0; si < l->num_systems; si++) {
      system_t* s = &l->systems[si];
      run_system(l, s);
      int iters = 1;
      double ms;
      while ((ms = time_system(l, s, iters) * iters) < target_ms / 4 && iters < (1 << 20)) {
        iters *= 2;
      }
      s->iters = (int)ceil(iters * target_ms / (ms > 1e-3 ? ms : 1e-3));
      if (s->iters < 1) s->iters = 1;
    }
  }

  static double peaks[64 * kPeakSamplesPerRepeat];
  int num_peaks = 0;
  for (int r = 0; r < repeats; r++) {
    num_peaks += spnn_bench_peak_samples(now_ms, wait_ms, target_ms, peaks + num_peaks,
                                         kPeakSamplesPerRepeat);
    for (size_t li = 0; li < NUM_SHAPES; li++) {
      layer* l = &layers[li];
      for (int si = 0; si < l->num_systems; si++) {
        system_t* s = &l->systems[si];
        s->times_ms[r] = time_system_unpreempted(l, s, s->iters);
      }
    }
  }

  printf("{\"variant\": \"%s%s\", \"repeats\": %d, \"preempted_retries\": %d, "
         "\"peak_gflops\": [", BENCH_TARGET, spnn_kernels_variant(), repeats, total_retries);
  for (int r = 0; r < num_peaks; r++) printf("%s%.3f", r ? ", " : "", peaks[r]);
  printf("],\n \"cases\": [\n");
  int first = 1;
  for (size_t li = 0; li < NUM_SHAPES; li++) {
    const layer* l = &layers[li];
    for (int si = 0; si < l->num_systems; si++) {
      const system_t* s = &l->systems[si];
      printf("%s  {\"hw\": %d, \"cin\": %d, \"cout\": %d, \"kind\": \"%s\", \"sparsity\": %d, "
             "\"flops\": %.0f, \"times_ms\": [",
             first ? "" : ",\n", l->shape.hw, l->shape.cin, l->shape.cout, s->kind,
             s->sparsity, s->flops);
      for (int r = 0; r < repeats; r++) printf("%s%.6f", r ? ", " : "", s->times_ms[r]);
      printf("]}");
      first = 0;
    }
  }
  printf("\n]}\n");
  return 0;
}
